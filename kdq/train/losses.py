"""Distillation losses. Pure functions of tensors; each returns its parts so they can be logged.

    hinton:  alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))   (the course's KD)
    dkd:     CE(s, y) + a * TCKD + b * NCKD    (Decoupled KD, Zhao et al. 2022)
    dist:    CE(s, y) + b * inter + g * intra   (DIST, Huang et al. 2022: 1 - Pearson correlation of the
             softmax outputs, per picture across classes and per class across the batch, times T^2)
    embed:   1 - cos(proj(f_s), e_t)  or  MSE(proj(f_s), e_t)   (the projection is dropped at export)

KL uses ``reduction="batchmean"``, the mathematically correct KL per sample (PyTorch's advice). No loss
reads a value back or indexes with a boolean mask (which waits for the device to count the mask): they
run on PyTorch's meta device (tests/train/test_step.py).
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
    kd_scale: float = 1.0,
) -> dict[str, Tensor]:
    c = ce(student, y, weight, label_smoothing)
    kd = kl_soft(student, teacher, T)
    return {"loss": alpha * c + kd_scale * (1 - alpha) * kd, "ce": c, "kd": kd}


def dkd_parts(student: Tensor, teacher: Tensor, y: Tensor, T: float) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD): KL of the binary target/other split, and KL among the non-target classes."""
    gt = torch.zeros_like(student, dtype=torch.bool).scatter_(1, y.unsqueeze(1), True)
    ps, pt = F.softmax(student / T, 1), F.softmax(teacher / T, 1)
    col = y.unsqueeze(1)
    bs = torch.cat([ps.gather(1, col), ps.masked_fill(gt, 0).sum(1, keepdim=True)], 1)
    bt = torch.cat([pt.gather(1, col), pt.masked_fill(gt, 0).sum(1, keepdim=True)], 1)
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
    kd_scale: float = 1.0,
) -> dict[str, Tensor]:
    c = ce(student, y, weight, label_smoothing)
    tckd, nckd = dkd_parts(student, teacher, y, T)
    kd = alpha * tckd + beta * nckd
    return {"loss": c + kd_scale * kd, "ce": c, "kd": kd, "tckd": tckd, "nckd": nckd}


def pearson_loss(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - `` the Pearson correlation of each row of ``a`` with the same row of ``b``, mean over rows."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return 1 - ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)).mean()


def dist(
    student: Tensor,
    teacher: Tensor,
    y: Tensor,
    T: float,
    beta: float,
    gamma: float,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    kd_scale: float = 1.0,
) -> dict[str, Tensor]:
    """DIST: the student matches the teacher's relations, not its exact probabilities (a stronger
    teacher's are hard to match): inter-class per picture, intra-class per class over the batch."""
    c = ce(student, y, weight, label_smoothing)
    ps, pt = F.softmax(student / T, 1), F.softmax(teacher / T, 1)
    inter, intra = pearson_loss(ps, pt) * T * T, pearson_loss(ps.T, pt.T) * T * T
    kd = beta * inter + gamma * intra
    return {"loss": c + kd_scale * kd, "ce": c, "kd": kd, "inter": inter, "intra": intra}


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


def kd_ramp(step: int, warmup_steps: int) -> float:
    """The distillation term's weight at optimizer step ``step`` (from 0): a linear ramp to 1 over the
    warm-up (DKD's), a Python number so the step waits for nothing."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def spec_loss(
    dist_spec,
    logits: Tensor,
    t_logits: Tensor | None,
    y: Tensor,
    weight: Tensor | None,
    kd_scale: float = 1.0,
) -> dict[str, Tensor]:
    """The spec's logit loss and its parts (``loss`` is what is minimised; ``kd_scale`` weighs its
    distillation term, the KD warm-up)."""
    d, T, smooth = dist_spec, dist_spec.temperature, dist_spec.label_smoothing
    if d.loss == "hinton":
        return hinton(logits, t_logits, y, T, d.alpha, weight, smooth, kd_scale)
    if d.loss == "dkd":
        return dkd(logits, t_logits, y, T, d.dkd_alpha, d.dkd_beta, weight, smooth, kd_scale)
    if d.loss == "dist":
        return dist(logits, t_logits, y, T, d.dist_beta, d.dist_gamma, weight, smooth, kd_scale)
    c = ce(logits, y, weight, smooth)
    return {"loss": c, "ce": c}


def batch_loss(
    dist_spec, logits: Tensor, t_logits: Tensor | None, y: Tensor, k: int, weight, kd_scale: float = 1.0
) -> dict[str, Tensor]:
    """The loss of one batch whose first ``k`` pictures are teacher views (the spec's logit loss) and the
    rest fresh crops (cross-entropy on the label alone), each part weighted by its share of the batch."""
    n, smooth = len(y), dist_spec.label_smoothing
    if k == 0:
        c = ce(logits, y, weight, smooth)
        return {"loss": c, "ce": c}
    parts = spec_loss(dist_spec, logits[:k], t_logits, y[:k], weight, kd_scale)
    if k < n:
        fresh = ce(logits[k:], y[k:], weight, smooth)
        parts = {key: val * (k / n) for key, val in parts.items()}
        parts["loss"] = parts["loss"] + fresh * ((n - k) / n)
        parts["ce"] = parts.get("ce", 0) + fresh * ((n - k) / n)
    return parts
