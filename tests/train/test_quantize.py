"""int8 weights in the graph: BatchNorm folded exactly, weights within half a step, attributes kept,
the file about 4x smaller, float32 in and out."""

import pytest
import torch
from torch import nn

from kdq import grader
from kdq.spec import StudentSpec
from kdq.train import export, quantize, students


def calibrated(library: str, name: str) -> nn.Module:
    """A student with BatchNorm statistics that are not the identity (as after training)."""
    torch.manual_seed(0)
    model = students.build(StudentSpec(library=library, name=name, pretrained=False), 10).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, 64, 64) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("library, name", [("kdq", "tiny_cnn"), ("timm", "efficientnet_b0")])
def test_batchnorm_folds_into_the_convolution_before_it_exactly(library, name):
    model = calibrated(library, name)
    x = torch.randn(4, 3, 64, 64)
    folded = quantize.fold_bn(model, x)
    with torch.no_grad():
        want, got = model(x), folded(x)
    assert torch.allclose(want, got, atol=1e-4, rtol=1e-4), (want - got).abs().max()
    assert not any(type(m) is nn.BatchNorm2d for m in folded.modules())
    if library == "timm":  # BatchNormAct2d keeps its activation, its normalisation is now x * 1 + 0
        bn = folded.bn1
        assert bn.running_mean.abs().max() == 0 and torch.allclose(bn.running_var + bn.eps, torch.ones(1))


def test_an_int8_layer_keeps_what_timm_reads_and_rounds_each_weight_by_at_most_half_a_step():
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=2)
    q = quantize.QConv2d(conv)
    for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
        assert getattr(q, name) == getattr(conv, name)
    assert q.qweight.dtype == torch.int8 and q.scale.dtype == torch.float32 and q.scale.shape == (32, 1, 1, 1)
    err = (q.qweight.float() * q.scale - conv.weight).abs()
    assert (err <= q.scale / 2 + 1e-7).all()
    x = torch.randn(2, 16, 20, 20)
    with torch.no_grad():
        assert q(x).dtype == torch.float32 and q(x).shape == conv(x).shape


def test_tiny_layers_stay_float32():
    model = quantize.to_int8(calibrated("kdq", "tiny_cnn"))
    first = model.features[0][0]  # 3 x 16 x 3 x 3 = 432 weights
    assert type(first) is nn.Conv2d and type(model.fc) is nn.Linear  # 640 weights
    assert type(model.features[1][0]) is quantize.QConv2d


def test_int8_file_is_under_035x_the_fp32_one_takes_and_gives_float32_and_agrees(tmp_path):
    model = calibrated("torchvision", "mobilenet_v3_small")
    x = torch.randn(16, 3, grader.INPUT_SIZE, grader.INPUT_SIZE)
    fp32 = export.export(model, tmp_path / "fp32.pt", weights="fp32", example=x)
    int8 = export.export(model, tmp_path / "int8.pt", weights="int8", example=x)
    assert int8["model_mb"] <= 0.35 * fp32["model_mb"], (int8["model_mb"], fp32["model_mb"])
    assert fp32["agreement"] == 1.0 and fp32["max_logit_error"] < 1e-4
    loaded = torch.jit.load(str(tmp_path / "int8.pt"))
    with torch.no_grad():
        y, scale = loaded(x), float(torch.jit.load(str(tmp_path / "fp32.pt"))(x).abs().max())
    assert int8["agreement"] >= 0.9 and int8["max_logit_error"] < 0.1 * scale
    assert y.dtype == torch.float32 and {p.dtype for p in loaded.parameters()} == {torch.float32}
    estimate = quantize.file_mib(model, "int8")
    assert estimate <= int8["model_mb"] <= estimate + 0.5  # the estimate is the weights; the file adds code
