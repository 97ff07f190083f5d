import torch
from PIL import Image

from kdq import grader
from kdq.train import augment


def test_the_same_parameters_render_the_same_view():
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    p1, p2 = augment.sample(6, g1), augment.sample(6, g2)
    assert torch.equal(p1, p2)
    imgs = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    a, b = augment.render(imgs, p1, 24), augment.render(imgs, p2, 24)
    assert a.shape == (6, 3, 24, 24) and torch.equal(a, b)
    # a view is a property of its image and its parameters alone: replay one row out of the batch
    assert torch.allclose(augment.render(imgs[3:4], p1[3:4], 24), a[3:4], atol=1e-6)
    # another resolution of the same view (what the teacher sees) is the same picture, resized
    ramp = torch.linspace(0, 255, 40)
    smooth = torch.stack(
        [ramp[None, :].expand(40, 40), ramp[:, None].expand(40, 40), 255 - ramp[None, :].expand(40, 40)]
    )
    smooth = smooth.to(torch.uint8)[None]
    small, big = augment.render(smooth, p1[3:4], 24), augment.render(smooth, p1[3:4], 48)
    assert (torch.nn.functional.avg_pool2d(big, 2) - small).abs().mean() < 0.05


def test_views_differ_and_stay_in_the_normalized_range():
    imgs = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    p = augment.sample(4, torch.Generator().manual_seed(0))
    x = augment.render(imgs, p, 32)
    plain = augment.render(imgs, augment.identity(4), 32)
    assert not torch.allclose(x, plain)
    lo = min((0 - m) / s for m, s in zip(grader.MEAN, grader.STD))
    hi = max((1 - m) / s for m, s in zip(grader.MEAN, grader.STD))
    assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5


def test_identity_is_the_graders_preprocessing():
    pic = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    pil = Image.fromarray(pic.permute(1, 2, 0).numpy()).resize((32, 32), Image.BILINEAR)
    ref = torch.from_numpy(__import__("numpy").asarray(pil).copy()).permute(2, 0, 1).float() / 255
    mean = torch.tensor(grader.MEAN).view(3, 1, 1)
    std = torch.tensor(grader.STD).view(3, 1, 1)
    ref = (ref - mean) / std
    got = augment.render(pic[None], augment.identity(1), 32)[0]
    assert (got - ref).abs().mean() < 0.05  # PIL and torch antialiased bilinear differ by rounding
    same = augment.render(pic[None], augment.identity(1), 40)[0]
    assert torch.allclose(same, (pic.float() / 255 - mean) / std, atol=1e-6)


def test_flip_parameter_mirrors_the_picture():
    imgs = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    p = augment.identity(1)
    p[0, 5] = -1.0
    p[0, 0] = 0.999999  # take the affine path
    flipped = augment.render(imgs, p, 16)
    plain = augment.render(imgs, augment.identity(1), 16)
    assert torch.allclose(flipped, torch.flip(plain, dims=[3]), atol=1e-3)


def test_render_never_reads_a_value_back_from_the_device():
    """On the meta device any read-back (``bool(tensor)``, ``.item()``) raises: a training step's
    render must not need one, or every CUDA step waits for the GPU."""
    imgs = torch.empty(4, 3, 40, 40, dtype=torch.uint8, device="meta")
    p = augment.sample(4, torch.Generator().manual_seed(0)).to("meta")
    assert augment.render(imgs, p, 24).shape == (4, 3, 24, 24)
    assert augment.render(imgs, augment.identity(4).to("meta"), 24).shape == (4, 3, 24, 24)


def test_pad_keeps_the_pictures_aspect_and_pads_with_black():
    wide = torch.zeros(1, 3, 32, 64, dtype=torch.uint8) + 200  # a 2:1 picture
    squashed = torch.nn.functional.interpolate(wide.float(), size=(32, 32)).to(torch.uint8)
    x = augment.render(
        squashed, augment.identity(1), 32, mean=(0, 0, 0), std=(1, 1, 1), aspect=torch.tensor([2.0])
    )
    assert x[0, :, :6].abs().max() < 1e-3 and x[0, :, -6:].abs().max() < 1e-3  # black bands top and bottom
    assert torch.allclose(x[0, :, 10:22], torch.tensor(200 / 255), atol=1e-3)  # the picture in the middle
    square = augment.render(
        squashed, augment.identity(1), 32, mean=(0, 0, 0), std=(1, 1, 1), aspect=torch.tensor([1.0])
    )
    assert torch.allclose(square, torch.tensor(200 / 255), atol=1e-3)  # a square picture is not padded


def _affine(p):
    p = p.clone()
    p[:, 0] = 0.999999  # the affine path, the whole picture
    return p


def test_quarter_turns_and_flips_give_the_eight_symmetries_of_the_square():
    """Skin pictures have no canonical orientation: a view may be turned by quarter turns, and a
    horizontal flip with a half turn is the vertical flip."""
    imgs = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    plain = augment.render(imgs, augment.identity(1), 16)
    for k in range(4):
        p = _affine(augment.identity(1))
        p[0, augment.QUARTER] = k
        assert torch.allclose(augment.render(imgs, p, 16), torch.rot90(plain, k, dims=(2, 3)), atol=1e-3)
    p = _affine(augment.identity(1))
    p[0, 5], p[0, augment.QUARTER] = -1.0, 2
    assert torch.allclose(augment.render(imgs, p, 16), torch.flip(plain, dims=[2]), atol=1e-3)
    many = augment.sample(4000, torch.Generator().manual_seed(0))
    assert set(many[:, augment.QUARTER].tolist()) == {0.0, 1.0, 2.0, 3.0}
    assert many[:, 0].min() < 0.27 and (many[:, augment.PARTNER] == -1).all()
    still = augment.sample(100, torch.Generator().manual_seed(0), quarters=False)
    assert (still[:, augment.QUARTER] == 0).all()


def test_mixed_views_blend_the_partner_as_their_parameters_say():
    import numpy as np

    a = torch.zeros(2, 3, 20, 20, dtype=torch.uint8)
    b = torch.full((2, 3, 20, 20), 200, dtype=torch.uint8)
    rng = np.random.default_rng(0)
    p = augment.mix(_affine(augment.identity(2)), torch.tensor([5, 5]), rng, 1.0, cutmix=0.0)
    plain = dict(mean=(0, 0, 0), std=(1, 1, 1))
    x = augment.render(a, p, 20, partners=b, **plain)
    lam = p[:, augment.LAM]
    assert torch.allclose(x.mean((1, 2, 3)), (1 - lam) * 200 / 255, atol=2e-3)  # mixup: a uniform blend
    p = augment.mix(_affine(augment.identity(2)), torch.tensor([5, 5]), rng, 1.0, cutmix=1.0)
    x = augment.render(a, p, 20, partners=b, **plain)
    x0, y0, x1, y1 = (p[0, augment.BOX] * 20).tolist()
    inside = x[0, 0, int(y0) + 1 : int(y1) - 1, int(x0) + 1 : int(x1) - 1]
    assert inside.numel() == 0 or torch.allclose(inside, torch.tensor(200 / 255), atol=1e-3)
    share = (x[:, 0] > 0.5).float().mean((1, 2))  # the partner's share of the pixels
    assert torch.allclose(1 - share, augment.own_share(p), atol=0.12)
    # rows without a partner are untouched by the partner pictures
    same = augment.render(a, _affine(augment.identity(2)), 20, partners=b, **plain)
    assert torch.equal(same, augment.render(a, _affine(augment.identity(2)), 20, **plain))


def test_a_mixed_views_label_is_the_label_of_the_picture_that_fills_more_of_it():
    import numpy as np

    all_labels = torch.tensor([0, 1, 2, 3])
    p = augment.identity(3)
    p = torch.cat([p[:1], augment.mix(p[1:], torch.tensor([3, 3]), np.random.default_rng(0), 1.0, 0.0)])
    p[1, augment.LAM], p[2, augment.LAM] = 0.7, 0.2  # own picture: 70%, then 20%
    assert augment.labels(all_labels, torch.tensor([0, 1, 2]), p).tolist() == [0, 1, 3]
    meta = augment.labels(all_labels.to("meta"), torch.tensor([0, 1, 2], device="meta"), p.to("meta"))
    assert meta.shape == (3,)  # no read-back from the device
