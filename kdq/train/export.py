"""Export the student as the grader loads it: TorchScript, CPU, float32 in and out, ``[B,3,224,224]->[B,10]``.

    info = export(model, path, bias=b, tta="hflip", train_size=192, weights="int8")   # the file + facts
    mib = save(model, path, **kw)                                                      # the same, its size

An optional per-class logit bias (tuned on validation) and test-time views (``tta``: the flips and
rotations of the picture, averaged) are baked into the exported module, so the file alone reproduces
the validated predictions. A student trained at another ``train.image_size`` gets the grader's 224
input resized to that size inside the module (bilinear, antialiased, as training renders its pictures).
``weights = "int8"`` stores the weights as int8 with float32 scales (kdq.train.quantize): ~4x smaller.

A TorchScript file holds the source of every function its forward reaches, and the grader's (older)
torch compiles it again: the resize calls the one aten op it needs, never ``F.interpolate``, whose
scripted body carries every mode of the writing torch (``aten::_upsample_lanczos2d_aa`` since 2.12,
which no 2025 torch has). ``kdq.grader_ops`` checks every file written here against that torch's list.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from kdq import grader, grader_ops, runfolder
from kdq.train import quantize
from kdq.train.students import reparameterize

TTA_VIEWS = {"none": 1, "hflip": 2, "dihedral4": 4, "dihedral8": 8}


class Views(nn.Module):
    """The mean of the model's logits over ``n`` views: 1 the picture; 2 and its mirror (left-right);
    4 also upside down and both (the flips); 8 also transposed (all 8 symmetries of a square)."""

    def __init__(self, model: nn.Module, n: int = 1):
        super().__init__()
        self.model, self.n = model, n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.n
        y = self.model(x)
        if n >= 2:
            y = y + self.model(torch.flip(x, [3]))
        if n >= 4:
            y = y + self.model(torch.flip(x, [2])) + self.model(torch.flip(x, [2, 3]))
        if n >= 8:
            t = x.transpose(2, 3)
            y = y + self.model(t) + self.model(torch.flip(t, [3]))
            y = y + self.model(torch.flip(t, [2])) + self.model(torch.flip(t, [2, 3]))
        return y / n if n > 1 else y


class Exported(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        bias: torch.Tensor | None = None,
        tta: str = "none",
        train_size: int = grader.INPUT_SIZE,
    ):
        super().__init__()
        self.model = Views(model, TTA_VIEWS[tta])
        self.train_size = train_size
        self.register_buffer("bias", bias.float().clone() if bias is not None else torch.zeros(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.train_size or x.shape[-2] != self.train_size:
            # F.interpolate(x, size, mode="bilinear", antialias=True, align_corners=False), as its one op
            x = torch._C._nn._upsample_bilinear2d_aa(x, [self.train_size, self.train_size], False, None)
        y = self.model(x)
        if self.bias.numel() > 0:
            y = y + self.bias
        return y


def drop_loose_tensors(model: nn.Module) -> list[str]:
    """Delete tensors kept as plain attributes (neither parameter nor buffer), e.g. the ``id_tensor``
    that RepVGG/MobileOne reparameterization caches: TorchScript would save them into the file."""
    dropped = []
    for name, mod in model.named_modules():
        for attr, value in list(vars(mod).items()):
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                delattr(mod, attr)
                dropped.append(f"{name}.{attr}")
    return dropped


def prepare(model: nn.Module, weights: str, example: torch.Tensor) -> nn.Module:
    """The model as it goes into the file: a float32 CPU eval copy, reparameterized, its own storage, no
    hooks; for int8, BatchNorm folded into the convolutions and the weights quantized."""
    model = reparameterize(
        copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format).eval()
    )
    for t in list(model.parameters()) + list(model.buffers()):
        t.data = t.data.clone()  # own storage: a view would save its whole (larger) base storage
    drop_loose_tensors(model)
    for m in model.modules():  # training-time hooks (feature capture) are not part of the model
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    if weights == "int8":
        model = quantize.to_int8(quantize.fold_bn(model, example))
    return model


def script(wrapped: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Script the module (trace when scripting fails) and check it gives the eager module's logits."""
    try:
        scripted = torch.jit.script(wrapped)
    except Exception as exc:  # noqa: BLE001 — some architectures only trace
        warnings.warn(
            f"torch.jit.script failed ({type(exc).__name__}: {str(exc).strip()[:200]}); tracing instead",
            stacklevel=2,
        )
        with torch.no_grad():
            scripted = torch.jit.trace(wrapped, example)
    with torch.no_grad():
        want, got = wrapped(example), scripted(example)
    if not torch.allclose(want, got, rtol=1e-3, atol=1e-4):
        raise RuntimeError(
            f"TorchScript output differs from the eager model by {(want - got).abs().max():.3g}"
        )
    return scripted


def to_torchscript(
    model: nn.Module,
    bias: torch.Tensor | None = None,
    tta: str = "none",
    image_size: int = grader.INPUT_SIZE,
    train_size: int | None = None,
    weights: str = "fp32",
    example: torch.Tensor | None = None,
) -> tuple[torch.jit.ScriptModule, dict]:
    """The scripted module and how far its logits are from the float32 model's on ``example`` (grader-
    rendered pictures; random ones when not given): ``agreement`` (share of equal top-1) and
    ``max_logit_error``."""
    if example is None:
        example = torch.randn(2, 3, image_size, image_size)
    example = example.float().cpu()
    size = train_size or image_size
    wrapped = Exported(prepare(model, weights, example), bias, tta, size).eval()
    scripted = script(wrapped, example)
    if weights != "fp32":
        wrapped = Exported(prepare(model, "fp32", example), bias, tta, size).eval()
    with torch.no_grad():
        want, got = wrapped(example), scripted(example)
    return scripted, {
        "weights": weights,
        "tta": tta,
        "agreement": round(float((want.argmax(1) == got.argmax(1)).float().mean()), 6),
        "max_logit_error": float((want - got).abs().max()),
    }


class ExportError(RuntimeError):
    pass


def export(model: nn.Module, path: Path, **kw) -> dict:
    """Write the TorchScript file atomically, after checking that the grader's torch can compile its code.
    Returns ``to_torchscript``'s facts with ``model_mb`` and the torch whose operator list it passed."""
    path = Path(path)
    scripted, info = to_torchscript(model, **kw)
    with runfolder.atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp))
        unknown = grader_ops.unknown_calls(tmp)
        if unknown:
            raise ExportError(
                f"{path}: the file calls what torch {grader_ops.shipped()['torch']} (the grader's oldest) "
                f"lacks: {'; '.join(unknown[:3])}; it would not load there"
            )
    return {**info, "model_mb": round(grader.size_mib(path), 4), "ops_torch": grader_ops.shipped()["torch"]}


def save(model: nn.Module, path: Path, **kw) -> float:
    """``export``, returning the file's size in MiB."""
    return export(model, path, **kw)["model_mb"]
