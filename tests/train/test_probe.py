import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdq.train import probe
from kdq.train import probe as teacher  # the probe's maths, once part of kdq.train.teacher


def test_out_of_fold_logits_do_not_memorise():
    """Random labels on random features: a probe fitted on them memorises (in-sample accuracy ~1),
    but out-of-fold logits for the same images are at chance."""
    g = torch.Generator().manual_seed(0)
    n, v, d, c = 120, 2, 64, 4
    x = torch.randn(n, 1, d, generator=g).repeat(1, v, 1)  # both views identical
    y = torch.arange(n) % c
    probe = teacher.fit_probe(x.reshape(-1, d), y.repeat_interleave(v), c, l2=1e-6)
    assert (probe(x[:, 0]).argmax(1) == y).float().mean() > 0.95
    oof = teacher.oof_logits(x, y, c, folds=5, seed=0)
    assert oof.shape == (n, v, c)
    assert (oof[:, 0].argmax(1) == y).float().mean() < 0.45
    assert torch.allclose(oof[:, 0], oof[:, 1])  # views of one image share a fold


def test_probe_learns_separable_embeddings():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(3, 16, generator=g) * 3
    y = torch.arange(90) % 3
    x = (centres[y] + torch.randn(90, 16, generator=g)).unsqueeze(1)
    oof = teacher.oof_logits(x, y, 3)
    assert (oof[:, 0].argmax(1) == y).float().mean() > 0.9


def test_out_of_fold_logits_keep_duplicate_groups_in_one_fold():
    """Random labels, every picture twice (a near-copy): without the groups a twin in the fitting folds
    makes the other's "out-of-fold" logit in-sample (accuracy far above chance)."""
    g = torch.Generator().manual_seed(2)
    n, d, c = 80, 64, 4
    base = torch.randn(n, d, generator=g)
    x = torch.cat([base, base + 0.01 * torch.randn(n, d, generator=g)]).unsqueeze(1)
    y = (torch.arange(n) % c).repeat(2)
    groups = torch.arange(n).repeat(2).numpy()
    leaky = teacher.oof_logits(x, y, c, folds=5, seed=0)
    honest = teacher.oof_logits(x, y, c, folds=5, seed=0, groups=groups)
    assert (leaky[:, 0].argmax(1) == y).float().mean() > 0.6  # what plain StratifiedKFold gives
    assert (honest[:, 0].argmax(1) == y).float().mean() < 0.45  # chance is 0.25


def _blobs(n=160, d=32, c=4, noise=2.5, seed=3):
    """Overlapping Gaussian classes: the best L2 is neither the smallest nor the largest."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g)
    y = torch.arange(n) % c
    return (centres[y] + noise * torch.randn(n, d, generator=g)).unsqueeze(1), y


def _objective_grad(lin, x, y, l2):
    lin = lin.requires_grad_(True)
    loss = F.cross_entropy(lin(x), y) + l2 * lin.weight.square().sum()
    return torch.autograd.grad(loss, [lin.weight, lin.bias])


def test_the_probe_is_fitted_to_convergence():
    """At a small L2 on overlapping classes 100 L-BFGS iterations stop far from the optimum: the
    objective's gradient must be ~0 at the returned weights."""
    x, y = _blobs(n=400, d=128, noise=1.0)
    lin = teacher.fit_probe(x[:, 0], y, 4, l2=1e-5)
    grads = _objective_grad(lin, x[:, 0], y, 1e-5)
    assert max(float(g.abs().max()) for g in grads) < 1e-4


def test_cross_validation_picks_an_l2_from_its_grid_and_records_it():
    x, y = _blobs()
    fold = probe.assign_folds(y, None, 5, seed=0)
    grid = (1e-6, 1e-3, 1e-1, 10.0)
    l2, scores = probe.choose_l2("probe", x, y, 4, fold, grid)
    assert l2 in grid and set(scores) == set(grid) and all(0 <= s <= 1 for s in scores.values())
    assert scores[l2] == max(scores.values())
    fitted = probe.fit_head("probe", x, y, 4, fold, grid)
    assert fitted.info["head"] == "probe" and fitted.info["l2"] in grid
    assert 0 <= fitted.info["cv_f1"] <= 1 and fitted.info["temperature"] > 0
    assert fitted.oof.shape == (len(y), 1, 4)
    with pytest.raises(ValueError, match="teacher.l2"):
        probe.choose_l2("probe", x, y, 4, fold, ())


def test_calibration_changes_the_logit_scale_and_lowers_the_out_of_fold_nll():
    """A barely regularised probe on overlapping classes is over-confident out of fold: the NLL-fitted
    temperature is above 1 and dividing by it lowers the out-of-fold NLL."""
    x, y = _blobs(n=200, d=64, noise=3.0)
    fold = probe.assign_folds(y, None, 5, seed=0)
    raw = probe.oof(lambda xf, yf: probe.fit_probe(xf.flatten(0, 1), yf, 4, l2=1e-6), x, y, fold)
    t = probe.calibrate(raw[:, 0], y)
    assert t > 1.5
    before = F.cross_entropy(raw[:, 0], y).item()
    after = F.cross_entropy(raw[:, 0] / t, y).item()
    assert after < before - 0.1
    fitted = probe.fit_head("probe", x, y, 4, fold, (1e-6,))
    assert math.isclose(fitted.info["temperature"], t, rel_tol=1e-3)
    assert torch.allclose(fitted.oof, raw / t, atol=1e-4)


@pytest.mark.parametrize("head", ["mlp", "ensemble"])
def test_mlp_and_ensemble_heads_are_out_of_fold_and_calibrated(head, monkeypatch):
    monkeypatch.setattr(probe, "HIDDEN", 16)  # a narrow MLP: fast on a CPU
    x, y = _blobs(n=120, d=16, noise=1.0)
    x = x.repeat(1, 2, 1)  # two views per image
    fold = probe.assign_folds(y, None, 4, seed=0)
    fitted = probe.fit_head(head, x, y, 4, fold, (1e-4, 1e-2), members=3)
    assert fitted.oof.shape == (120, 2, 4) and torch.allclose(fitted.oof[:, 0], fitted.oof[:, 1])
    assert fitted.info["cv_f1"] > 0.6 and fitted.info["head"] == head
    if head == "ensemble":
        assert set(fitted.info["l2"]) == {"probe", "mlp"}
        assert len(fitted.module.members) == 3
    logits = fitted.predict(x[:5, 0])
    assert logits.shape == (5, 4) and torch.isfinite(logits).all()


def test_folds_keep_groups_together_and_say_what_to_do_when_a_class_is_too_small():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    fold = probe.assign_folds(y, groups, 5, seed=0)
    assert all(fold[i] == fold[i + 1] for i in range(0, 8, 2))
    with pytest.raises(ValueError, match="2 or more per class"):
        probe.assign_folds(torch.tensor([0, 0, 1]), None, 5, seed=0)


def test_extra_views_are_predicted_out_of_fold_and_never_fitted_on():
    """Mixed views ride along: each is predicted by the module of its picture's held-out fold, and the
    modules are the same with or without them (they are not fitted on)."""
    x, y = _blobs(n=80, d=16, noise=1.0)
    fold = probe.assign_folds(y, None, 4, seed=0)
    plain = probe.fit_head("probe", x, y, 4, fold, (1e-3,))
    noise = torch.randn(80, 2, 16, generator=torch.Generator().manual_seed(5)) * 50  # would move any fit
    both = probe.fit_head("probe", x, y, 4, fold, (1e-3,), extra=torch.cat([x, noise], 1))
    assert both.oof.shape == (80, 4, 4) and torch.allclose(both.oof[:, :1], plain.oof, atol=1e-5)
    assert torch.allclose(both.oof[:, 1], plain.oof[:, 0], atol=1e-5)  # a copy of x: its oof logits
    assert both.info == plain.info
