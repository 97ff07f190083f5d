"""On-device augmentation with replayable parameters, and the grader's normalization.

    p = sample(n, generator)                # float [n, 9]: one row of view parameters per image
    x = render(images_uint8, p, out_size)   # float [n,3,out,out], ImageNet-normalized

A row of parameters fully describes a view (crop, flip, rotation, colour), so the same view can
be rendered again later, at another resolution (the teacher's) or on another device, and the
student sees exactly the crop the teacher saw. ``identity(n)`` is the plain, whole picture: with it
``render`` is the grader's "resize to 224 and normalize".
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from kdq import grader

FIELDS = ("scale", "log_ratio", "cx", "cy", "angle", "flip", "brightness", "contrast", "saturation")


def identity(n: int) -> torch.Tensor:
    p = torch.zeros(n, len(FIELDS))
    p[:, 0] = 1.0  # whole picture
    p[:, 5] = 1.0  # no flip (+1)
    p[:, 6:9] = 1.0  # colours unchanged
    return p


def sample(
    n: int,
    generator: torch.Generator | None = None,
    *,
    scale=(0.35, 1.0),
    ratio=(3 / 4, 4 / 3),
    degrees: float = 15.0,
    jitter: float = 0.2,
    flip: bool = True,
) -> torch.Tensor:
    """Random view parameters (CPU, float32) from ``generator``: resized crop, flip, rotation, jitter."""
    u = torch.rand(n, len(FIELDS), generator=generator)
    p = torch.empty_like(u)
    p[:, 0] = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    p[:, 1] = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    p[:, 2:4] = u[:, 2:4] * 2 - 1  # crop centre, as a fraction of the room left to move in
    p[:, 4] = (u[:, 4] * 2 - 1) * math.radians(degrees)
    p[:, 5] = torch.where(u[:, 5] < 0.5, -1.0, 1.0) if flip else 1.0
    p[:, 6:9] = 1 + (u[:, 6:9] * 2 - 1) * jitter
    return p


def _theta(p: torch.Tensor) -> torch.Tensor:
    """The 2x3 affine map from output to input coordinates ([-1, 1] both) of each view."""
    ratio = p[:, 1].exp()
    w = (p[:, 0] * ratio).sqrt().clamp(max=1)  # crop width and height, fractions of the picture
    h = (p[:, 0] / ratio).sqrt().clamp(max=1)
    cx, cy = p[:, 2] * (1 - w), p[:, 3] * (1 - h)
    cos, sin, f = p[:, 4].cos(), p[:, 4].sin(), p[:, 5]
    row0 = torch.stack([w * cos * f, -h * sin, cx], 1)
    row1 = torch.stack([w * sin * f, h * cos, cy], 1)
    return torch.stack([row0, row1], 1)


@functools.lru_cache(maxsize=16)
def _norm(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as [1,3,1,1] tensors on ``device``, uploaded once."""
    as_t = lambda v: torch.tensor(v, device=device).view(1, 3, 1, 1)  # noqa: E731 — two uses, one line
    return as_t(mean), as_t(std)


def letterbox(theta: torch.Tensor, p: torch.Tensor, aspect: torch.Tensor) -> torch.Tensor:
    """``theta`` changed so each view keeps the aspect its region has in the original picture
    (``aspect`` = width / height, per image), centred on a square and padded: "pad to a square, then
    resize", applied to a view of a picture that was decoded squashed."""
    ratio = p[:, 1].exp()
    w, h = (p[:, 0] * ratio).sqrt().clamp(max=1), (p[:, 0] / ratio).sqrt().clamp(max=1)
    a = w / h * aspect.to(theta.device, torch.float32)  # the view's own width / height
    sx, sy = (1 / a).clamp(min=1), a.clamp(min=1)  # >1 along the axis that gets the padding
    return torch.cat(
        [theta[:, :, 0:1] * sx.view(-1, 1, 1), theta[:, :, 1:2] * sy.view(-1, 1, 1), theta[:, :, 2:]], 2
    )


def render(
    images: torch.Tensor,
    params: torch.Tensor | None,
    size: int,
    mean=grader.MEAN,
    std=grader.STD,
    dtype: torch.dtype = torch.float32,
    aspect: torch.Tensor | None = None,
) -> torch.Tensor:
    """Views of uint8 ``images`` [B,3,H,W] as normalized float [B,3,size,size] on the images' device.

    ``params`` None (or identity rows on the CPU) is the plain picture, resized like the grader's input.
    Nothing here reads a value back from the device, so a training step never waits on it. With
    ``aspect`` (width / height of each original picture) every view is padded to a square instead of
    squashed (``teacher.resize = "pad"``); the padding is black.
    """
    x = images.to(dtype=torch.float32) / 255
    plain = aspect is None and (
        params is None or (params.device.type == "cpu" and bool((params == identity(1)).all()))
    )
    if plain:
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    else:
        params = identity(len(x)) if params is None else params
        params = params.to(x.device, torch.float32, non_blocking=True)
        theta = _theta(params) if aspect is None else letterbox(_theta(params), params, aspect)
        grid = F.affine_grid(theta, [x.shape[0], 3, size, size], align_corners=False)
        pad = "reflection" if aspect is None else "zeros"
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode=pad, align_corners=False)
        b, c, s = (params[:, i].view(-1, 1, 1, 1) for i in (6, 7, 8))
        x = x * b
        grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - grey.mean((2, 3), keepdim=True)) * c + grey.mean((2, 3), keepdim=True)
        grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = grey + (x - grey) * s
        x = x.clamp(0, 1)
    m, sd = _norm(tuple(mean), tuple(std), x.device)
    return ((x - m) / sd).to(dtype)
