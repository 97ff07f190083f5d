import math

import torch
from sklearn.metrics import f1_score

from kdq.train import losses


def softmax(v, T=1.0):
    e = [math.exp(x / T) for x in v]
    return [x / sum(e) for x in e]


def test_hinton_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.2, 3.0, -1.0]])
    y = torch.tensor([1])
    T, alpha = 2.0, 0.3
    ce = -math.log(softmax([1.0, 2.0, 0.5])[1])
    ps, pt = softmax([1.0, 2.0, 0.5], T), softmax([0.2, 3.0, -1.0], T)
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))
    want = alpha * ce + (1 - alpha) * T * T * kl
    got = losses.hinton(s, t, y, T, alpha)
    assert math.isclose(float(got["loss"]), want, rel_tol=1e-5)
    assert math.isclose(float(got["ce"]), ce, rel_tol=1e-5)
    assert math.isclose(float(got["kd"]), T * T * kl, rel_tol=1e-5)


def test_kl_is_a_mean_over_the_batch():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    one = sum(float(losses.kl_soft(s[i : i + 1], t[i : i + 1], 3.0)) for i in range(4)) / 4
    assert math.isclose(float(losses.kl_soft(s, t, 3.0)), one, rel_tol=1e-5)


def test_weighted_label_smoothed_ce_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.5, 1.5, -1.0]])
    y = torch.tensor([0, 2])
    w = torch.tensor([1.0, 2.0, 3.0])
    eps = 0.1
    num = den = 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        logp = [math.log(p) for p in softmax(row)]
        nll = -logp[label]
        smooth = -sum(w[k] * logp[k] for k in range(3)) / 3  # torch: smoothing term weighted per class
        num += w[label] * (1 - eps) * nll + eps * float(smooth)
        den += float(w[label])
    got = losses.ce(logits, y, w, eps)
    assert math.isclose(float(got), num / den, rel_tol=1e-5)


def test_dkd_matches_hand_computation():
    s, t, y, T = [1.0, 2.0, 0.5], [0.2, 3.0, -1.0], 1, 2.0
    ps, pt = softmax(s, T), softmax(t, T)
    bs, bt = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
    tckd = sum(q * math.log(q / p) for p, q in zip(bs, bt)) * T * T
    ns = softmax([v for k, v in enumerate(s) if k != y], T)
    nt = softmax([v for k, v in enumerate(t) if k != y], T)
    nckd = sum(q * math.log(q / p) for p, q in zip(ns, nt)) * T * T
    ce = -math.log(softmax(s)[y])
    got = losses.dkd(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), T, alpha=1.0, beta=8.0)
    assert math.isclose(float(got["tckd"]), tckd, rel_tol=1e-4)
    assert math.isclose(float(got["nckd"]), nckd, rel_tol=1e-4)
    assert math.isclose(float(got["loss"]), ce + tckd + 8.0 * nckd, rel_tol=1e-4)


def test_embed_losses():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    cos = ((1 - 1 / math.sqrt(2)) + (1 - (-1))) / 2
    assert math.isclose(float(losses.embed(a, b, "cosine")), cos, rel_tol=1e-6)
    assert math.isclose(float(losses.embed(a, b, "mse")), (0 + 1 + 0 + 9) / 4, rel_tol=1e-6)


def test_macro_f1_agrees_with_sklearn():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (50,), generator=g)
    p = torch.where(torch.rand(50, generator=g) < 0.6, y, torch.randint(0, 4, (50,), generator=g))
    f1, per_class, conf = losses.macro_f1(p, y, 4)
    assert math.isclose(f1, f1_score(y, p, average="macro"), rel_tol=1e-6)
    assert sum(map(sum, conf)) == 50 and conf[1][1] == int(((y == 1) & (p == 1)).sum())


def test_bias_tuning_recovers_a_shifted_class_and_crossfit_is_honest():
    from kdq.train.bias import crossfit_f1, tune_bias

    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    logits = torch.nn.functional.one_hot(y, 4).float() * 2 + torch.randn(200, 4, generator=g)
    logits[:, 3] -= 3.0  # class 3 is under-predicted by a constant
    bias, before, after = tune_bias(logits, y)
    assert after > before + 0.1 and bias[3] > 1.0
    honest = crossfit_f1(logits, y)
    assert before < honest <= after + 1e-9
    noise = torch.randn(200, 4, generator=g)  # nothing to learn: in-sample tuning still "gains"
    _, b0, b1 = tune_bias(noise, y)
    assert crossfit_f1(noise, y) < b1


def pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def test_dist_matches_hand_computation():
    """DIST (Huang et al. 2022): 1 - Pearson correlation of the softmax outputs, per picture across classes
    (inter-class) and per class across the batch (intra-class), each times T^2."""
    s = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]]
    t = [[0.2, 3.0, -1.0], [1.0, 0.0, 1.5]]
    y, T, beta, gamma = [1, 2], 2.0, 1.0, 2.0
    ps, pt = [softmax(r, T) for r in s], [softmax(r, T) for r in t]
    inter = (1 - (pearson(ps[0], pt[0]) + pearson(ps[1], pt[1])) / 2) * T * T
    cols = lambda m, c: [m[0][c], m[1][c]]  # noqa: E731
    intra = (1 - sum(pearson(cols(ps, c), cols(pt, c)) for c in range(3)) / 3) * T * T
    ce = (-math.log(softmax(s[0])[1]) - math.log(softmax(s[1])[2])) / 2
    got = losses.dist(torch.tensor(s), torch.tensor(t), torch.tensor(y), T, beta, gamma)
    assert math.isclose(float(got["inter"]), inter, rel_tol=1e-4)
    assert math.isclose(float(got["intra"]), intra, rel_tol=1e-4)
    assert math.isclose(float(got["kd"]), beta * inter + gamma * intra, rel_tol=1e-4)
    assert math.isclose(float(got["loss"]), ce + beta * inter + gamma * intra, rel_tol=1e-4)
    same = losses.dist(torch.tensor(t), torch.tensor(t), torch.tensor(y), T, beta, gamma)
    assert abs(float(same["kd"])) < 1e-5  # a student that matches its teacher pays nothing


def test_dkd_imagenet_defaults_match_hand_computation():
    """The spec's DKD defaults are DKD's ImageNet setting: alpha 0.5, beta 0.5, T = 1."""
    from kdq.spec import DistillSpec

    d = DistillSpec(loss="dkd")
    assert (d.dkd_alpha, d.dkd_beta, d.temperature, d.kd_warmup_epochs) == (0.5, 0.5, 1.0, 1.0)
    s, t, y = [1.0, 2.0, 0.5, -0.5], [0.2, 3.0, -1.0, 0.0], 1
    ps, pt = softmax(s), softmax(t)
    tckd = pt[y] * math.log(pt[y] / ps[y]) + (1 - pt[y]) * math.log((1 - pt[y]) / (1 - ps[y]))
    ns = softmax([v for k, v in enumerate(s) if k != y])
    nt = softmax([v for k, v in enumerate(t) if k != y])
    nckd = sum(q * math.log(q / p) for p, q in zip(ns, nt))
    ce = -math.log(ps[y])
    parts = losses.spec_loss(d, torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), None, kd_scale=1.0)
    assert math.isclose(float(parts["loss"]), ce + 0.5 * tckd + 0.5 * nckd, rel_tol=1e-4)


def test_each_loss_has_its_own_default_temperature():
    from kdq.spec import DistillSpec

    assert [DistillSpec(loss=k).temperature for k in ("hinton", "dkd", "dist")] == [4.0, 1.0, 1.0]
    assert DistillSpec(loss="dkd", temperature=3.0).temperature == 3.0


def test_the_kd_warm_up_scales_only_the_distillation_term():
    from kdq.spec import DistillSpec

    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.arange(6) % 5
    for loss in ("hinton", "dkd", "dist"):
        d = DistillSpec(loss=loss, class_weighted=False)
        full = losses.spec_loss(d, s, t, y, None, kd_scale=1.0)
        half = losses.spec_loss(d, s, t, y, None, kd_scale=0.5)
        kd_share = full["loss"] - half["loss"]  # half the distillation term
        assert torch.isclose(full["kd"], half["kd"]) and float(kd_share) > 0, loss
        assert torch.isclose(
            losses.spec_loss(d, s, t, y, None, kd_scale=0.0)["loss"], full["loss"] - 2 * kd_share
        )


def test_the_warm_up_ramps_over_its_epochs():
    assert [losses.kd_ramp(s, 10) for s in (0, 4, 9, 10, 500)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    assert losses.kd_ramp(0, 0) == 1.0
