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
