"""The teacher's linear probe on image embeddings: fitted by L-BFGS, out-of-fold for training images.

Pure tensor maths. ``oof_logits`` keeps every view of an image, and every image of a duplicate group,
in one fold: otherwise a near-copy in the fitting folds makes its twin's "out-of-fold" logit in-sample.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def features(e: torch.Tensor) -> torch.Tensor:
    """Probe input: L2-normalized embeddings scaled to unit variance per dimension on average."""
    return F.normalize(e.float(), dim=-1) * e.shape[-1] ** 0.5


def fit_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float = 1e-3,
    weight: torch.Tensor | None = None,
    iters: int = 100,
) -> torch.nn.Linear:
    """Multinomial logistic regression (full-batch L-BFGS, L2 on the weights): the linear probe."""
    x, y = x.float(), y.long().to(x.device)
    weight = weight.to(x.device) if weight is not None else None
    lin = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y, weight=weight) + l2 * lin.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin.requires_grad_(False)


def oof_logits(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    folds: int = 5,
    seed: int = 0,
    weight: torch.Tensor | None = None,
    groups=None,
) -> torch.Tensor:
    """Out-of-fold probe logits for ``x`` [n,V,D]: [n,V,C]. All V views of an image, and all images of
    a duplicate group (``groups``, one id per image), fall in the same fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    n, v, d = x.shape
    y = y.cpu()
    counts = np.bincount(y.numpy())
    k = int(min(folds, counts.min()))
    if k < 2:
        raise ValueError(
            f"class {int(counts.argmin())} has {int(counts.min())} training image(s); out-of-fold "
            "teacher logits need 2 or more per class: add images, lower data.val_fraction or "
            "data.holdout_fraction, or use teacher.head = 'zeroshot'"
        )
    groups = np.arange(n) if groups is None else np.asarray(groups)
    out = torch.zeros(n, v, num_classes)
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    for fit_idx, held in splitter.split(np.zeros(n), y.numpy(), groups):
        probe = fit_probe(
            x[fit_idx].reshape(-1, d), y[fit_idx].repeat_interleave(v), num_classes, weight=weight
        )
        out[held] = probe(x[held].reshape(-1, d)).view(len(held), v, -1).cpu()
    return out
