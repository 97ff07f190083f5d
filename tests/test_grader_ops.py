"""The static check of a TorchScript file against the operators of the grader's (older) torch."""

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdq import grader_ops


class Resizes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 48:
            x = F.interpolate(x, size=[48, 48], mode="bilinear", antialias=True, align_corners=False)
        return x.mean((2, 3))


class ResizesWithTheOp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 48:
            x = torch._C._nn._upsample_bilinear2d_aa(x, [48, 48], False, None)
        return x.mean((2, 3))


def test_the_shipped_list_is_an_old_torchs(tmp_path):
    listing = grader_ops.shipped()
    assert listing["torch"] == "2.4.1" and "aten::conv2d" in listing["ops"]
    assert "aten::_upsample_lanczos2d_aa" not in listing["ops"]  # new in torch 2.12


def test_a_scripted_interpolate_drags_in_every_mode_and_is_caught(tmp_path):
    if "lanczos" not in inspect.getsource(F.interpolate):
        pytest.skip(f"torch {torch.__version__}'s F.interpolate has no lanczos mode (new in 2.12)")
    torch.jit.save(torch.jit.script(Resizes()), str(tmp_path / "m.pt"))
    unknown = grader_ops.unknown_calls(tmp_path / "m.pt")
    assert any(u.startswith("aten::_upsample_lanczos2d_aa (no such operator) at ") for u in unknown)


def test_the_aten_op_itself_passes(tmp_path):
    torch.jit.save(torch.jit.script(ResizesWithTheOp()), str(tmp_path / "m.pt"))
    assert grader_ops.unknown_calls(tmp_path / "m.pt") == []


def test_an_unknown_name_or_a_call_that_fits_no_signature_is_named(tmp_path):
    ops = {
        "torch": "0",
        "ops": {
            "aten::conv2d": ["input weight bias= stride= padding= dilation= groups="],
            "aten::format": ["self ..."],
        },
    }
    torch.jit.save(torch.jit.script(ResizesWithTheOp()), str(tmp_path / "m.pt"))
    unknown = grader_ops.unknown_calls(tmp_path / "m.pt", ops)
    assert any(u.startswith("aten::_upsample_bilinear2d_aa (no such operator) at ") for u in unknown)
    assert grader_ops._fits("input weight bias= stride=", 2, set())
    assert not grader_ops._fits("input weight bias= stride=", 5, set())
    assert not grader_ops._fits("input weight bias=", 1, {"nope"})
    assert not grader_ops._fits("input weight *alpha", 2, set())  # a required keyword left out
    assert grader_ops._fits("self ...", 4, set())
