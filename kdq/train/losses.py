"""Distillation losses. Pure functions of tensors; each returns its parts so they can be logged.

    hinton:  alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))   (the course's KD)
    dkd:     CE(s, y) + a * TCKD + b * NCKD    (Decoupled KD, Zhao et al. 2022)
    embed:   1 - cos(proj(f_s), e_t)  or  MSE(proj(f_s), e_t)   (the projection is dropped at export)

KL uses ``reduction="batchmean"``, the mathematically correct KL per sample (PyTorch's advice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ce(logits: Tensor, y: Tensor, weight: Tensor | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy, optionally class-weighted and label-smoothed (weighted mean over the batch)."""
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=label_smoothing)


def kl_soft(student: Tensor, teacher: Tensor, T: float) -> Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over the batch."""
    return (
        F.kl_div(
            F.log_softmax(student / T, 1),
            F.log_softmax(teacher / T, 1),
            reduction="batchmean",
            log_target=True,
        )
        * T
        * T
    )


def hinton(
    student: Tensor,
    teacher: Tensor,
    y: Tensor,
    T: float,
    alpha: float,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    c = ce(student, y, weight, label_smoothing)
    kd = kl_soft(student, teacher, T)
    return {"loss": alpha * c + (1 - alpha) * kd, "ce": c, "kd": kd}


def dkd_parts(student: Tensor, teacher: Tensor, y: Tensor, T: float) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD): KL of the binary target/other split, and KL among the non-target classes."""
    gt = F.one_hot(y, student.shape[1]).bool()
    ps, pt = F.softmax(student / T, 1), F.softmax(teacher / T, 1)
    bs = torch.stack([ps[gt], ps.masked_fill(gt, 0).sum(1)], 1)
    bt = torch.stack([pt[gt], pt.masked_fill(gt, 0).sum(1)], 1)
    tckd = F.kl_div(bs.clamp_min(1e-12).log(), bt, reduction="batchmean") * T * T
    big = 1000.0
    nckd = (
        F.kl_div(
            F.log_softmax(student / T - big * gt, 1),
            F.softmax(teacher / T - big * gt, 1),
            reduction="batchmean",
        )
        * T
        * T
    )
    return tckd, nckd


def dkd(
    student: Tensor,
    teacher: Tensor,
    y: Tensor,
    T: float,
    alpha: float,
    beta: float,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    c = ce(student, y, weight, label_smoothing)
    tckd, nckd = dkd_parts(student, teacher, y, T)
    kd = alpha * tckd + beta * nckd
    return {"loss": c + kd, "ce": c, "kd": kd, "tckd": tckd, "nckd": nckd}


def embed(pred: Tensor, target: Tensor, kind: str = "cosine") -> Tensor:
    if kind == "cosine":
        return (1 - F.cosine_similarity(pred, target, dim=1)).mean()
    if kind == "mse":
        return F.mse_loss(pred, target)
    raise ValueError(f"embed loss {kind!r}: choose 'cosine' or 'mse'")


def macro_f1(pred: Tensor, y: Tensor, num_classes: int) -> tuple[float, list[float], list[list[int]]]:
    """(macro-F1, per-class F1, confusion matrix [true][pred]); a class absent from both counts as F1 0."""
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    conf.index_put_(
        (y.long().cpu(), pred.long().cpu()), torch.ones_like(y, dtype=torch.long).cpu(), accumulate=True
    )
    tp = conf.diag().float()
    prec_den, rec_den = conf.sum(0).float(), conf.sum(1).float()
    f1 = torch.where(prec_den + rec_den > 0, 2 * tp / (prec_den + rec_den).clamp(min=1), torch.zeros_like(tp))
    return float(f1.mean()), [round(float(v), 6) for v in f1], conf.tolist()


# ---------------------------------------------------------------- what the spec asks for


def spec_loss(
    dist, logits: torch.Tensor, t_logits: torch.Tensor | None, y: torch.Tensor, weight: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The spec's logit loss and its parts (``loss`` is what is minimised)."""
    if dist.loss == "hinton":
        return hinton(logits, t_logits, y, dist.temperature, dist.alpha, weight, dist.label_smoothing)
    if dist.loss == "dkd":
        return dkd(
            logits, t_logits, y, dist.temperature, dist.dkd_alpha, dist.dkd_beta, weight, dist.label_smoothing
        )
    c = ce(logits, y, weight, dist.label_smoothing)
    return {"loss": c, "ce": c}


def batch_loss(
    dist, logits: torch.Tensor, t_logits: torch.Tensor | None, y: torch.Tensor, k: int, weight
) -> dict[str, torch.Tensor]:
    """The loss of one batch whose first ``k`` pictures are teacher views (the spec's logit loss) and the
    rest fresh crops (cross-entropy on the label alone), each part weighted by its share of the batch."""
    n = len(y)
    if k == 0:
        c = ce(logits, y, weight, dist.label_smoothing)
        return {"loss": c, "ce": c}
    parts = spec_loss(dist, logits[:k], t_logits, y[:k], weight)
    if k < n:
        fresh = ce(logits[k:], y[k:], weight, dist.label_smoothing)
        parts = {key: val * (k / n) for key, val in parts.items()}
        parts["loss"] = parts["loss"] + fresh * ((n - k) / n)
        parts["ce"] = parts.get("ce", 0) + fresh * ((n - k) / n)
    return parts
