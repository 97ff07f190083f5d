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

FIELDS = (
    *("scale", "log_ratio", "cx", "cy", "angle", "flip", "brightness", "contrast", "saturation"),
    *("quarter", "partner", "lam", "bx0", "by0", "bx1", "by1"),
)
QUARTER, PARTNER, LAM, BOX = 9, 10, 11, slice(12, 16)  # the columns of the dihedral turn and the mix


def identity(n: int) -> torch.Tensor:
    p = torch.zeros(n, len(FIELDS))
    p[:, 0] = 1.0  # whole picture
    p[:, 5] = 1.0  # no flip (+1)
    p[:, 6:9] = 1.0  # colours unchanged
    p[:, PARTNER] = -1.0  # no partner picture
    p[:, LAM] = 1.0  # all of the own picture
    return p


def sample(
    n: int,
    generator: torch.Generator | None = None,
    *,
    scale=(0.25, 1.0),
    ratio=(3 / 4, 4 / 3),
    degrees: float = 15.0,
    jitter: float = 0.25,
    flip: bool = True,
    quarters: bool = True,
) -> torch.Tensor:
    """Random view parameters (CPU, float32) from ``generator``: resized crop, flip, small rotation,
    quarter turns (with the flip, all 8 symmetries of the square: a vertical flip is a horizontal flip
    and a half turn), brightness / contrast / saturation jitter; no partner picture."""
    u = torch.rand(n, len(FIELDS), generator=generator)
    p = identity(n)
    p[:, 0] = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    p[:, 1] = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    p[:, 2:4] = u[:, 2:4] * 2 - 1  # crop centre, as a fraction of the room left to move in
    p[:, 4] = (u[:, 4] * 2 - 1) * math.radians(degrees)
    p[:, 5] = torch.where(u[:, 5] < 0.5, -1.0, 1.0) if flip else 1.0
    p[:, 6:9] = 1 + (u[:, 6:9] * 2 - 1) * jitter
    p[:, QUARTER] = (u[:, QUARTER] * 4).floor().clamp(max=3) if quarters else 0.0
    return p


def options(spec) -> dict:
    """``sample``'s keyword arguments from a TeacherSpec: the teacher's cached views and the student's
    fresh crops come from one distribution."""
    return {"scale": (spec.crop_min, 1.0), "jitter": spec.jitter, "quarters": spec.dihedral}


def mix(p: torch.Tensor, partner: torch.Tensor, rng, alpha: float, cutmix: float) -> torch.Tensor:
    """``p`` with a partner picture per row (global indices): mixup (own share lam ~ Beta(alpha, alpha))
    or, with probability ``cutmix``, a cutmix box (area 1 - lam, a square clipped to the view, in
    fractions of the output) filled with the partner. ``rng`` is a numpy Generator."""
    n = len(p)
    p = p.clone()
    lam = torch.from_numpy(rng.beta(alpha, alpha, n)).float()
    cut = torch.from_numpy(rng.random(n) < cutmix)
    centre = torch.from_numpy(rng.random((n, 2))).float()
    side = (1 - lam).sqrt()
    lo, hi = (centre - side[:, None] / 2).clamp(0, 1), (centre + side[:, None] / 2).clamp(0, 1)
    p[:, PARTNER] = partner.float()
    p[:, LAM] = torch.where(cut, 1 - (hi - lo).prod(1), lam)  # the own picture's share of the pixels
    p[:, BOX] = torch.where(cut[:, None], torch.cat([lo, hi], 1), torch.zeros(n, 4))
    return p


def own_share(p: torch.Tensor) -> torch.Tensor:
    """The share [B] of each view that is its own picture (1 without a partner): a mixed label's weight."""
    return p[:, LAM]


def labels(all_labels: torch.Tensor, idx: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The hard label [B] of views ``p`` of pictures ``idx``: a mixed view's is the label of the picture
    that fills more of it (its own at a tie), what cross-entropy and DKD's target class then use; the
    teacher's logits carry the mix itself. Nothing is read back from the device."""
    partner = all_labels[p[:, PARTNER].long().clamp(min=0)]
    return torch.where(own_share(p) >= 0.5, all_labels[idx], partner)


def _theta(p: torch.Tensor) -> torch.Tensor:
    """The 2x3 affine map from output to input coordinates ([-1, 1] both) of each view: the crop with
    its flip and rotation, turned by ``quarter`` quarter turns of the output."""
    ratio = p[:, 1].exp()
    w = (p[:, 0] * ratio).sqrt().clamp(max=1)  # crop width and height, fractions of the picture
    h = (p[:, 0] / ratio).sqrt().clamp(max=1)
    cx, cy = p[:, 2] * (1 - w), p[:, 3] * (1 - h)
    cos, sin, f = p[:, 4].cos(), p[:, 4].sin(), p[:, 5]
    a00, a01, a10, a11 = w * cos * f, -h * sin, w * sin * f, h * cos
    turn = p[:, QUARTER] * (math.pi / 2)
    c, s = turn.cos().round(), turn.sin().round()  # exact quarter turns
    row0 = torch.stack([a00 * c + a01 * s, a01 * c - a00 * s, cx], 1)
    row1 = torch.stack([a10 * c + a11 * s, a11 * c - a10 * s, cy], 1)
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
    a = torch.where(p[:, QUARTER].remainder(2) == 1, 1 / a, a)  # a quarter turn swaps them
    sx, sy = (1 / a).clamp(min=1), a.clamp(min=1)  # >1 along the axis that gets the padding
    return torch.cat(
        [theta[:, :, 0:1] * sx.view(-1, 1, 1), theta[:, :, 1:2] * sy.view(-1, 1, 1), theta[:, :, 2:]], 2
    )


def _view(x: torch.Tensor, params: torch.Tensor, size: int, aspect: torch.Tensor | None) -> torch.Tensor:
    """The geometric and colour view (float in [0, 1]) of pictures ``x`` (float in [0, 1])."""
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
    return x.clamp(0, 1)


def _blend(x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Own views ``x`` mixed with partner views ``y`` [B,3,S,S]: inside a row's cutmix box the partner's
    pixels; without a box ``lam * x + (1 - lam) * y`` (lam = 1: no partner)."""
    size = x.shape[-1]
    centre = (torch.arange(size, device=x.device, dtype=torch.float32) + 0.5) / size  # pixel centres
    box = params[:, BOX]
    inside_x = (centre >= box[:, 0:1]) & (centre < box[:, 2:3])  # [B,S] along the width
    inside_y = (centre >= box[:, 1:2]) & (centre < box[:, 3:4])  # [B,S] along the height
    inside = (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1)  # [B,1,S,S]
    cut = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]) > 0).view(-1, 1, 1, 1)
    w = torch.where(cut, (~inside).float(), params[:, LAM].view(-1, 1, 1, 1))
    return w * x + (1 - w) * y


def render(
    images: torch.Tensor,
    params: torch.Tensor | None,
    size: int,
    mean=grader.MEAN,
    std=grader.STD,
    dtype: torch.dtype = torch.float32,
    aspect: torch.Tensor | None = None,
    partners: torch.Tensor | None = None,
    partner_aspect: torch.Tensor | None = None,
) -> torch.Tensor:
    """Views of uint8 ``images`` [B,3,H,W] as normalized float [B,3,size,size] on the images' device.

    ``params`` None (or identity rows on the CPU) is the plain picture, resized like the grader's input.
    Nothing here reads a value back from the device, so a training step never waits on it. With
    ``aspect`` (width / height of each original picture) every view is padded to a square instead of
    squashed (``teacher.resize = "pad"``); the padding is black. ``partners`` (uint8, one per row) are
    rendered with the same parameters and mixed in as the rows' mix fields say (``mix``).
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
        x = _view(x, params, size, aspect)
        if partners is not None:
            y = _view(partners.to(x.device, torch.float32) / 255, params, size, partner_aspect)
            x = _blend(x, y, params)
    m, sd = _norm(tuple(mean), tuple(std), x.device)
    return ((x - m) / sd).to(dtype)


def replay(
    images: torch.Tensor, idx: torch.Tensor, params: torch.Tensor, size: int, mixed: bool = False
) -> torch.Tensor:
    """The student's render of views ``params`` of pictures ``images[idx]``: with ``mixed`` (the
    targets hold mix views), each row's partner picture is mixed in exactly as the teacher saw it."""
    if not mixed:
        return render(images[idx], params, size)
    partner = params[:, PARTNER].long().clamp(min=0)  # -1 (none) reads picture 0, weighted 0
    return render(images[idx], params, size, partners=images[partner])
