"""The exported file takes the grader's 224 input and resizes it to the training size inside."""

import json
import os
import subprocess
import warnings

import pytest
import torch
import torch.nn.functional as F

from kdq import grader_ops
from kdq.spec import StudentSpec
from kdq.train import augment, export, students


def test_a_student_trained_at_48_sees_48_inside_the_file(tmp_path):
    torch.manual_seed(0)
    model = students.build(StudentSpec(library="kdq", name="tiny_cnn"), 10).eval()
    export.save(model, tmp_path / "m.pt", train_size=48)
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    pictures = torch.randint(0, 256, (3, 3, 300, 260), dtype=torch.uint8)
    grader_input = augment.render(pictures, None, 224)  # what the grader feeds: 224, normalized
    training_input = augment.render(pictures, None, 48)  # what training fed the student
    with torch.no_grad():
        got, want = loaded(grader_input), model(training_input)
        unresized = model(grader_input)
    inside = F.interpolate(grader_input, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(got, model(inside), atol=1e-5)  # the file resizes with the same filter
    assert (got - want).abs().max() < (unresized - want).abs().max()  # closer to training than without it
    assert loaded(torch.randn(1, 3, 224, 224)).shape == (1, 10) and loaded.train_size == 48


def test_a_student_trained_at_224_is_exported_as_it_is(tmp_path):
    model = students.build(StudentSpec(library="kdq", name="tiny_cnn"), 10).eval()
    export.save(model, tmp_path / "m.pt")
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5) and loaded.train_size == 224


# Every student family the project names (configs, docs), with every export option the file can carry.
# The fast suite scripts the smallest of each library; the slow suite (CI) the others (10-40 s each here).
slow = pytest.mark.slow
FAMILIES = [
    ("kdq", "tiny_cnn"),
    pytest.param("torchvision", "shufflenet_v2_x1_0", marks=slow),
    ("torchvision", "mobilenet_v3_small"),
    pytest.param("timm", "mobilenetv3_large_100", marks=slow),
    pytest.param("timm", "efficientnet_b0", marks=slow),
    pytest.param("timm", "mobilenetv4_conv_small", marks=slow),
    ("timm", "convnext_atto"),
]
EVERY_OPTION = dict(bias=torch.linspace(-1, 1, 10), tta="dihedral8", train_size=160, weights="int8")


@pytest.mark.parametrize("options", [{}, EVERY_OPTION], ids=["plain", "resize+tta+bias+int8"])
@pytest.mark.parametrize("library, name", FAMILIES)
def test_every_family_and_option_calls_only_what_the_graders_old_torch_has(tmp_path, library, name, options):
    torch.manual_seed(0)
    model = students.build(StudentSpec(library=library, name=name, pretrained=False), 10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # scripted, not traced: the code is all there
        info = export.export(model, tmp_path / "m.pt", **options)
    assert grader_ops.unknown_calls(tmp_path / "m.pt") == [] and info["ops_torch"] == "2.4.1"
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    assert loaded(torch.randn(2, 3, 224, 224)).dtype == torch.float32


@pytest.mark.parametrize("tta", ["none", "hflip", "dihedral4", "dihedral8"])
def test_each_tta_is_the_mean_over_its_views(tmp_path, tta):
    model = students.build(StudentSpec(library="kdq", name="tiny_cnn"), 10).eval()
    export.save(model, tmp_path / "m.pt", tta=tta)
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(2, 3, 224, 224)
    t = x.transpose(2, 3)
    pictures = [x, x.flip(3), x.flip(2), x.flip(2).flip(3), t, t.flip(3), t.flip(2), t.flip(2).flip(3)]
    with torch.no_grad():
        want = torch.stack([model(p) for p in pictures[: export.TTA_VIEWS[tta]]]).mean(0)
        assert torch.allclose(loaded(x), want, atol=1e-5)


OLD_TORCH = os.environ.get("GRADER_TORCH_PYTHON")  # a Python with the grader's old torch (torch==2.4.1)
LOAD_IN_OLD_TORCH = """
import sys, torch
model = torch.jit.load(sys.argv[1], map_location="cpu")
x = torch.frombuffer(bytearray(open(sys.argv[2], "rb").read()), dtype=torch.float32).view(-1, 3, 224, 224)
with torch.no_grad():
    y = model(x)
print(torch.__version__, y.dtype, " ".join(repr(v) for v in y.flatten().tolist()))
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not OLD_TORCH,
    reason="SKIPPED, NOT RUN: set GRADER_TORCH_PYTHON to a Python with torch==2.4.1 to load for real",
)
@pytest.mark.parametrize("library, name", [("kdq", "tiny_cnn"), ("timm", "convnext_atto")])
def test_a_file_written_here_loads_and_agrees_in_the_old_torch(tmp_path, library, name):
    torch.manual_seed(0)
    model = students.build(StudentSpec(library=library, name=name, pretrained=False), 10).eval()
    export.export(model, tmp_path / "m.pt", **EVERY_OPTION)
    x = torch.randn(4, 3, 224, 224)
    (tmp_path / "x.bin").write_bytes(x.numpy().tobytes())
    out = subprocess.run(
        [OLD_TORCH, "-c", LOAD_IN_OLD_TORCH, str(tmp_path / "m.pt"), str(tmp_path / "x.bin")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    version, dtype, *values = out.stdout.split()
    assert version.split("+")[0] == grader_ops.shipped()["torch"] != torch.__version__.split("+")[0]
    with torch.no_grad():
        want = torch.jit.load(str(tmp_path / "m.pt"))(x)
    got = torch.tensor([float(v) for v in values]).view_as(want)
    assert dtype == "torch.float32" and torch.allclose(got, want, atol=1e-4)
    assert torch.equal(got.argmax(1), want.argmax(1))


@pytest.mark.slow
def test_one_student_trained_on_generated_pictures_exported_fp32_and_int8(clean_dataset, tmp_path):
    """int8: at most 0.35x the fp32 file, float32 in and out, and the file scored by the grader's rules
    in a fresh process (in the run) matches the holdout F1 computed on the exported file."""
    from kdq.spec import ExperimentSpec
    from kdq.train import loop
    from kdq.verify import f1_tolerance

    metrics = {}
    for weights in ("fp32", "int8"):
        raw = {
            "name": weights,
            "student": {"library": "torchvision", "name": "mobilenet_v3_small", "pretrained": False},
            "teacher": {"kind": "none"},
            "distill": {"loss": "ce"},
            "train": {"epochs": 2, "batch_size": 32, "image_size": 48, "device": "cpu"},
            "data": {"decode_size": 64, "holdout_fraction": 0.2},
            "export": {"weights": weights, "tta": "hflip"},
        }
        run_dir = tmp_path / weights
        loop.run(ExperimentSpec.model_validate(raw), run_dir, clean_dataset, tmp_path / "cache")
        m = metrics[weights] = json.loads((run_dir / "metrics.json").read_text())
        assert m["grader_scored"] == "in the run" and "grader_error" not in m
        assert abs(m["grader_f1"] - m["holdout_f1"]) <= f1_tolerance(m["n_holdout"])
        loaded = torch.jit.load(str(run_dir / "model.pt"))
        assert loaded(torch.rand(2, 3, 224, 224)).dtype == torch.float32
    assert metrics["int8"]["model_mb"] <= 0.35 * metrics["fp32"]["model_mb"]
    assert metrics["int8"]["export"]["weights"] == "int8" and 0 <= metrics["int8"]["export"]["agreement"] <= 1
