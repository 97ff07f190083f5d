"""The holdout's score and its interval: what every ``if_better`` submission is decided on."""

import pytest
import torch

from kdq.train.evaluate import bootstrap_ci, holdout_scores
from kdq.train.losses import macro_f1


def test_bootstrap_ci_is_the_hand_computed_percentile_interval():
    """20 pictures of class 0, 10 predicted right. A resample with m right has macro-F1 m / (m + 20)
    (class 0: 2m / (m + 20); class 1, never true: 0), m ~ Binomial(20, 1/2). P(m <= 5) = 0.021 and
    P(m <= 6) = 0.058, so the 5th percentile is m = 6; by symmetry the 95th is m = 14. The 90% interval
    is [6/26, 14/34]: not the point estimate 10/30, nor the replicates' extremes."""
    y = torch.zeros(20, dtype=torch.long)
    pred = torch.cat([torch.zeros(10), torch.ones(10)]).long()
    for seed in range(3):
        lo, hi = bootstrap_ci(pred, y, 2, reps=10_000, seed=seed)
        assert lo == pytest.approx(6 / 26, abs=1e-6) and hi == pytest.approx(14 / 34, abs=1e-6)


def test_bootstrap_replicates_score_as_macro_f1_does():
    gen = torch.Generator().manual_seed(1)
    y, pred = torch.randint(4, (30,), generator=gen), torch.randint(4, (30,), generator=gen)
    idx = torch.randint(30, (200, 30), generator=torch.Generator().manual_seed(0))  # bootstrap_ci's draws
    scores = torch.tensor([macro_f1(pred[i], y[i], 4)[0] for i in idx])
    tail = torch.tensor([0.05, 0.95])
    want = scores.quantile(tail).tolist()
    assert bootstrap_ci(pred, y, 4, reps=200, seed=0) == pytest.approx(want, abs=1e-6)


def test_holdout_scores_add_the_bias_the_exported_model_carries():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.zeros(6, 3)
    logits[:, 0] = 1.0  # alone, every picture is class 0: macro-F1 (0.5 + 0 + 0) / 3
    logits[2:4, 1] = logits[4:, 2] = 0.9
    bias = torch.tensor([-0.5, 0.0, 0.0])  # with it, every picture is right
    assert holdout_scores(logits, None, y, 3)["holdout_f1"] == pytest.approx(1 / 6)
    scored = holdout_scores(logits, bias, y, 3)
    assert scored["holdout_f1"] == 1.0 and scored["holdout_f1_ci"][1] == 1.0 and scored["n_holdout"] == 6


def test_no_holdout_scores_none():
    empty = holdout_scores(torch.zeros(0, 3), None, torch.zeros(0, dtype=torch.long), 3)
    assert empty == {"holdout_f1": None, "holdout_f1_ci": None, "n_holdout": 0}


def test_the_holdout_interval_is_the_bootstrap_of_the_biased_predictions():
    """The hand-computed case above, reached only through the bias: without it every picture is class 1."""
    logits = torch.zeros(20, 2)
    logits[:10, 1], logits[10:, 1] = 1.0, 3.0
    scored = holdout_scores(logits, torch.tensor([0.0, -2.0]), torch.zeros(20, dtype=torch.long), 2)
    assert scored["holdout_f1"] == pytest.approx(10 / 30)
    assert scored["holdout_f1_ci"] == pytest.approx([6 / 26, 14 / 34], abs=1e-6)
