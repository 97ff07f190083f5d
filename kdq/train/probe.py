"""The teacher's head on frozen image embeddings: a linear probe, a small MLP or a bagged ensemble of
both, out-of-fold for training images, its L2 chosen by grouped cross-validation, its logits
temperature-calibrated.

    fold = assign_folds(y, groups, 5, seed)             # one fold per image; a duplicate group in one
    fitted = fit_head("probe", x, y, nc, fold, GRID)    # x [n,V,D] -> fitted.oof [n,V,C], calibrated
    fitted.predict(x_val)                               # the head fitted on every training image
    fitted.info                                         # {head, l2, cv_f1, temperature}

Pure tensor maths. Every fit is full-batch L-BFGS (``torch.optim.LBFGS``, strong Wolfe line search) run
to convergence, as scikit-learn fits its logistic regression and small MLPs; folds are scikit-learn's
``StratifiedGroupKFold``; the temperature is ``scipy.optimize.minimize_scalar`` of the out-of-fold NLL.
Every view of an image, and every image of a duplicate group, falls in one fold: otherwise a near-copy
in the fitting folds makes its twin's "out-of-fold" logit in-sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdq.spec import L2_GRID
from kdq.train.losses import macro_f1

GRID = L2_GRID  # L2 candidates, half-decades 1e-5 .. 1e-1
HIDDEN = 512  # the MLP head's hidden width
CV_VIEWS = 4  # views per image (the plain picture first) the L2 search fits on: the choice is cheap
MAX_ITER = 1000  # L-BFGS iterations at most; a fit stops earlier once the gradient or the loss settles
TOL = 1e-4  # converged: no gradient entry above this (scikit-learn's default tolerance for L-BFGS)


def features(e: torch.Tensor, parts: int = 1) -> torch.Tensor:
    """Head input: each of the ``parts`` equal slices of the embedding (pooled; pooled + patch mean)
    L2-normalized and scaled to unit variance per dimension on average."""
    chunks = e.float().chunk(parts, dim=-1)
    return torch.cat([F.normalize(c, dim=-1) * c.shape[-1] ** 0.5 for c in chunks], -1)


class Mean(nn.Module):
    """The members' mean logits: a bagged ensemble."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def _module(d: int, num_classes: int, hidden: int, seed: int) -> nn.Module:
    if not hidden:  # the linear probe starts at zero: the optimum is unique, the start irrelevant
        lin = nn.Linear(d, num_classes)
        nn.init.zeros_(lin.weight), nn.init.zeros_(lin.bias)
        return lin
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, num_classes))


def fit_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float = 1e-3,
    weight: torch.Tensor | None = None,
    iters: int = MAX_ITER,
    hidden: int = 0,
    seed: int = 0,
    init: nn.Module | None = None,
) -> nn.Module:
    """Class-weighted cross-entropy plus ``l2`` x the squared weights (biases free), minimised by
    full-batch L-BFGS on ``x`` [m,D]: multinomial logistic regression, or with ``hidden`` units a
    one-hidden-layer MLP; from ``init``'s weights when given (a warm start). Returns the module, frozen,
    on ``x``'s device."""
    x, y = x.float(), y.long().to(x.device)
    weight = weight.to(x.device) if weight is not None else None
    net = _module(x.shape[1], num_classes, hidden, seed).to(x.device)
    if init is not None:
        net.load_state_dict(init.state_dict())
    mats = [p for p in net.parameters() if p.ndim > 1]
    opt = torch.optim.LBFGS(
        net.parameters(), max_iter=iters, tolerance_grad=TOL, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y, weight=weight) + l2 * sum(m.square().sum() for m in mats)
        loss.backward()
        return loss

    opt.step(closure)
    return net.requires_grad_(False).eval()


def assign_folds(y: torch.Tensor, groups, k: int, seed: int) -> np.ndarray:
    """A fold id per image: stratified by class, every duplicate group in one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(torch.as_tensor(y).cpu())
    k = min(k, check_counts(y))
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    fold = np.zeros(len(y), dtype=np.int64)
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    for f, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        fold[held] = f
    return fold


def check_counts(y) -> int:
    """The fewest pictures of a class in ``y``: 2 or more, or a ``ValueError`` that says what to do."""
    counts = np.bincount(np.asarray(torch.as_tensor(y).cpu()))
    fewest = int(counts[counts > 0].min())
    if fewest < 2:
        raise ValueError(
            f"a class has {fewest} training image(s); out-of-fold teacher logits need 2 or more per "
            "class: add images, lower data.val_fraction or data.holdout_fraction, or use "
            "teacher.head = 'zeroshot'"
        )
    return fewest


def oof(fit, x: torch.Tensor, y: torch.Tensor, fold: np.ndarray, extra: torch.Tensor | None = None):
    """Out-of-fold logits [n,V,C] (CPU) of ``x`` [n,V,D]: each fold's from ``fit(x_rest, y_rest)``, a
    module fitted on the other folds (``y_rest`` has one label per row of ``x_rest.flatten(0, 1)``).
    ``extra`` [n,M,D]: more views, predicted by the same modules but never fitted on (the mixed views,
    whose label is no one picture's): then [n,V+M,C]."""
    n, v, _ = x.shape
    y, out = y.cpu(), None
    both = x if extra is None else torch.cat([x, extra], 1)
    for f in np.unique(fold):
        held, rest = (torch.as_tensor(np.flatnonzero(s)) for s in (fold == f, fold != f))
        net = fit(x[rest.to(x.device)], y[rest].repeat_interleave(v))
        logits = net(both[held.to(x.device)].flatten(0, 1)).view(len(held), both.shape[1], -1).cpu()
        out = torch.zeros(n, both.shape[1], logits.shape[-1]) if out is None else out
        out[held] = logits
    return out


def _fitter(kind: str, nc: int, l2, weight, seed: int, members: int):
    """``fit(x [m,V,D], y [m*V]) -> module`` of one head kind at its L2 (a dict per kind: ensemble)."""
    if kind in ("probe", "mlp"):
        hidden = HIDDEN if kind == "mlp" else 0
        return lambda x, y: fit_probe(x.flatten(0, 1), y, nc, l2, weight, hidden=hidden, seed=seed)

    def bagged(x, y):  # members alternate probe, MLP; each on a bootstrap sample of the images
        gen, m, v = torch.Generator().manual_seed(seed), x.shape[0], x.shape[1]
        nets = []
        for i in range(members):
            kind_i = ("probe", "mlp")[i % 2]
            pick = torch.randint(m, (m,), generator=gen)
            rows = (pick[:, None] * v + torch.arange(v)).flatten()
            fit = _fitter(kind_i, nc, l2[kind_i], weight, seed + i, members)
            nets.append(fit(x[pick.to(x.device)], y[rows.to(y.device)]))
        return Mean(nets)

    return bagged


def _f1(logits: torch.Tensor, y: torch.Tensor, nc: int) -> float:
    return macro_f1(logits.argmax(1), y.cpu(), nc)[0]


def choose_l2(kind, x, y, nc, fold, grid, weight=None, seed: int = 0) -> tuple[float, dict]:
    """The L2 of ``grid`` whose out-of-fold macro-F1 (plain pictures) is highest, ties to the larger;
    fitted on the first ``CV_VIEWS`` views of each image, along the path from the largest L2 down, each
    fit starting from the last (as scikit-learn's LogisticRegressionCV does). Returns
    ``(l2, {l2: cv_f1})``; a grid of one value is that value, unscored."""
    if not grid:
        raise ValueError("teacher.l2 is empty: give one or more L2 values to choose from, e.g. [1e-3]")
    if len(grid) == 1:
        return grid[0], {}
    path = sorted(set(grid), reverse=True)
    sub, hidden = x[:, :CV_VIEWS], HIDDEN if kind == "mlp" else 0
    logits = {l2: torch.zeros(len(y), nc) for l2 in path}
    for f in np.unique(fold):
        held, rest = (torch.as_tensor(np.flatnonzero(s)).to(x.device) for s in (fold == f, fold != f))
        xf, yf, net = sub[rest].flatten(0, 1), y.to(x.device)[rest].repeat_interleave(sub.shape[1]), None
        for l2 in path:
            net = fit_probe(xf, yf, nc, l2, weight, hidden=hidden, seed=seed, init=net)
            logits[l2][held.cpu()] = net(sub[held, 0]).cpu()
    scores = {l2: _f1(logits[l2], y, nc) for l2 in path}
    best = max(scores.values())
    return max(l2 for l2, s in scores.items() if s == best), scores


def calibrate(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> float:
    """The temperature T minimising the (class-weighted) NLL of ``logits / T`` [m,C]."""
    from scipy.optimize import minimize_scalar

    logits, y = logits.float().cpu(), y.long().cpu()
    weight = None if weight is None else weight.float().cpu()
    nll = lambda t: F.cross_entropy(logits / math.exp(t), y, weight=weight).item()  # noqa: E731
    return math.exp(minimize_scalar(nll, bounds=(math.log(0.02), math.log(50)), method="bounded").x)


@dataclass
class Fitted:
    module: nn.Module  # fitted on every training image
    oof: torch.Tensor  # [n,V,C] calibrated out-of-fold logits of the training images
    info: dict = field(default_factory=dict)  # head, l2, cv_f1, temperature

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated logits [m,C] (CPU) of head inputs ``x`` [m,D]."""
        return (self.module(x.float()) / self.info["temperature"]).cpu()


def fit_head(
    head, x, y, nc, fold, grid=GRID, weight=None, seed: int = 0, members: int = 5, extra=None
) -> Fitted:
    """The teacher head ``head`` on training images ``x`` [n,V,D]: L2 chosen per kind by ``choose_l2``;
    out-of-fold logits of every view (and of the ``extra`` views, never fitted on); the temperature
    fitted on those of ``x``; the head refitted on all images."""
    kinds = ("probe", "mlp") if head == "ensemble" else (head,)
    l2 = {k: choose_l2(k, x, y, nc, fold, grid, weight, seed)[0] for k in kinds}
    fit = _fitter(head, nc, l2 if head == "ensemble" else l2[head], weight, seed, members)
    raw = oof(fit, x, y, fold, extra)
    t = calibrate(raw[:, : x.shape[1]].flatten(0, 1), y.cpu().repeat_interleave(x.shape[1]), weight)
    info = {
        "head": head,
        "l2": l2 if head == "ensemble" else l2[head],
        "cv_f1": _f1(raw[:, 0], y, nc),
        "temperature": t,
    }
    module = fit(x, y.to(x.device).repeat_interleave(x.shape[1]))
    return Fitted(module, raw / t, info)


def oof_logits(x, y, num_classes, folds=5, seed=0, weight=None, groups=None, l2=1e-3) -> torch.Tensor:
    """Uncalibrated out-of-fold probe logits [n,V,C] at a fixed ``l2`` (``fit_head`` is the teacher's)."""
    fold = assign_folds(y, groups, folds, seed)
    return oof(_fitter("probe", num_classes, l2, weight, seed, 1), x, y, fold)
