"""On-device augmentation with replayable parameters, and the grader's normalization.

    p = sample(n, generator)                # float [n, 9]: one row of view parameters per image
    x = render(images_uint8, p, out_size)   # float [n,3,out,out], ImageNet-normalized

A row of parameters fully describes a view (crop, flip, rotation, colour), so the same view can
be rendered again later, at another resolution (the teacher's) or on another device, and the
student sees exactly the crop the teacher saw. ``identity(n)`` is the plain, whole picture: with it
``render`` is the grader's "resize to 224 and normalize".
"""

from __future__ import annotations

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
    """Random view parameters (CPU, float32) from ``generator``: a random resized crop, flip, rotation, jitter."""
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


def render(
    images: torch.Tensor,
    params: torch.Tensor,
    size: int,
    mean=grader.MEAN,
    std=grader.STD,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Views of uint8 ``images`` [B,3,H,W] as normalized float [B,3,size,size] on the images' device."""
    x = images.to(dtype=torch.float32) / 255
    params = params.to(x.device, torch.float32)
    plain = bool((params == identity(1).to(x.device)).all())
    if plain:
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    else:
        grid = F.affine_grid(_theta(params), [x.shape[0], 3, size, size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        b, c, s = (params[:, i].view(-1, 1, 1, 1) for i in (6, 7, 8))
        x = x * b
        grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - grey.mean((2, 3), keepdim=True)) * c + grey.mean((2, 3), keepdim=True)
        grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = grey + (x - grey) * s
        x = x.clamp(0, 1)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    sd = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / sd).to(dtype)
