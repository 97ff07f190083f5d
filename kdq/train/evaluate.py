"""What a trained student scores: predictions on whole pictures, macro-F1 with a bootstrap interval.

    logits = predict(model, images, 224, device, views)         # rendered exactly like the grader's input
    lo, hi = bootstrap_ci(pred, y, num_classes)                  # 90% interval of macro-F1 (percentiles)

The holdout split is scored only here, once, after the model is chosen: nothing that trains, stops,
picks an epoch or tunes a bias ever sees it, so its macro-F1 is an honest estimate of the grader's.
"""

from __future__ import annotations

import torch
from torch import nn

from kdq.train import augment
from kdq.train.losses import macro_f1


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, size: int, device: torch.device, views: int = 1, batch: int = 256
) -> torch.Tensor:
    """Logits (CPU float) for whole uint8 pictures, rendered exactly like the grader's input; ``views``:
    averaged over that many flips and rotations, as the exported file does (kdq.train.export.Views)."""
    from kdq.train.export import Views

    model = Views(model, views).eval()
    out = []
    for i in range(0, len(images), batch):
        x = augment.render(images[i : i + batch].to(device), None, size)
        x = x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            y = model(x).float()
        out.append(y.cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def bootstrap_ci(
    pred: torch.Tensor, y: torch.Tensor, num_classes: int, level: float = 0.9, reps: int = 1000, seed: int = 0
) -> list[float]:
    """``[lo, hi]``: the percentile bootstrap interval of macro-F1 (pictures resampled with replacement).
    Every replicate's confusion matrix is counted at once; each scores as ``macro_f1`` does."""
    pred, y, c = pred.cpu().long(), y.cpu().long(), num_classes
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(y), (reps, len(y)), generator=gen)
    cell = torch.arange(reps).unsqueeze(1) * c * c + y[idx] * c + pred[idx]
    conf = torch.bincount(cell.flatten(), minlength=reps * c * c).view(reps, c, c)  # [rep][true][pred]
    tp, den = conf.diagonal(dim1=1, dim2=2).float(), (conf.sum(1) + conf.sum(2)).float()
    scores = torch.where(den > 0, 2 * tp / den.clamp(min=1), torch.zeros_like(tp)).mean(1)
    tail = (1 - level) / 2
    return [float(scores.quantile(tail)), float(scores.quantile(1 - tail))]


def holdout_scores(
    logits: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor, num_classes: int, seed: int = 0
) -> dict:
    """``holdout_f1`` and ``holdout_f1_ci`` of the exported model's logits (its bias added), or None each
    when there is no holdout."""
    if len(y) == 0:
        return {"holdout_f1": None, "holdout_f1_ci": None, "n_holdout": 0}
    pred = (logits + (bias if bias is not None else 0)).argmax(1)
    return {
        "holdout_f1": macro_f1(pred, y, num_classes)[0],
        "holdout_f1_ci": bootstrap_ci(pred, y, num_classes, seed=seed),
        "n_holdout": len(y),
    }
