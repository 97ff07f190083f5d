import torch

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
