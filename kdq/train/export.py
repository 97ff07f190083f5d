"""Export the student as the grader loads it: TorchScript, fp32, CPU, ``[B,3,224,224] -> [B,10]``.

An optional per-class logit bias (tuned on validation) and horizontal-flip averaging are baked into
the exported module, so the file alone reproduces the validated predictions. A student trained at
another ``train.image_size`` gets the grader's 224 input resized to that size inside the module
(bilinear, antialiased, as training renders its pictures), so the file sees what training saw.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdq import grader, runfolder
from kdq.train.students import reparameterize


class Exported(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        bias: torch.Tensor | None = None,
        tta_flip: bool = False,
        train_size: int = grader.INPUT_SIZE,
    ):
        super().__init__()
        self.model = model
        self.tta_flip = tta_flip
        self.train_size = train_size
        self.register_buffer("bias", bias.float().clone() if bias is not None else torch.zeros(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.train_size or x.shape[-2] != self.train_size:
            size = [self.train_size, self.train_size]
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        y = self.model(x)
        if self.tta_flip:
            y = 0.5 * (y + self.model(torch.flip(x, dims=[3])))
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


def to_torchscript(
    model: nn.Module,
    bias: torch.Tensor | None = None,
    tta_flip: bool = False,
    image_size: int = grader.INPUT_SIZE,
    train_size: int | None = None,
) -> torch.jit.ScriptModule:
    """Script the model (trace when scripting fails) and check it against the eager model."""
    model = reparameterize(
        copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format).eval()
    )
    for t in list(model.parameters()) + list(model.buffers()):
        t.data = t.data.clone()  # own storage: a view would save its whole (larger) base storage
    drop_loose_tensors(model)
    for m in model.modules():  # training-time hooks (feature capture) are not part of the model
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    wrapped = Exported(model, bias, tta_flip, train_size or image_size).eval()
    example = torch.randn(2, 3, image_size, image_size)
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


def save(model: nn.Module, path: Path, **kw) -> float:
    """Write the TorchScript file atomically; returns its size in MiB."""
    path = Path(path)
    scripted = to_torchscript(model, **kw)
    with runfolder.atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp))
    return path.stat().st_size / 2**20
