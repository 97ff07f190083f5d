import pytest
import torch

from kdq.spec import TeacherSpec
from kdq.train import data, teacher


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


@pytest.fixture(scope="module")
def tiny():
    return teacher.load("tiny", torch.device("cpu"))


def test_embedding_cache_is_computed_once_and_reused(tiny, tmp_path, monkeypatch):
    imgs = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    first = teacher.embeddings(tiny, imgs, "abcdef0123456789", views=3, cache_dir=tmp_path)
    assert (
        first["views"].shape == (5, 3, 32)
        and first["plain"].shape == (5, 32)
        and first["params"].shape == (5, 3, 9)
    )
    # the cached view embedding is the embedding of that view rendered again
    again = tiny.embed(imgs[2:3], first["params"][2, 1:2])
    assert torch.allclose(again[0].half().float(), first["views"][2, 1].float(), atol=1e-2)
    monkeypatch.setattr(
        teacher.Teacher, "embed", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed"))
    )
    second = teacher.embeddings(tiny, imgs, "abcdef0123456789", views=3, cache_dir=tmp_path)
    assert torch.equal(second["views"], first["views"])
    assert len(list((tmp_path / "teacher").iterdir())) == 1


def test_zero_shot_logits_have_one_column_per_class(tiny):
    emb = torch.randn(4, 32)
    logits = teacher.zero_shot_logits(tiny, ["1. Eczema", "2. Melanoma", "10. Warts"], emb)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()


def test_prepare_gives_targets_for_every_image(clean_dataset, tmp_path):
    d = data.load(clean_dataset, tmp_path, decode_size=32)
    tr, va = data.split(d.labels, data.groups(d.digests, d.hashes, d.thumbs), 0.2, 0)
    for head in ("probe", "zeroshot"):
        t = teacher.prepare(
            TeacherSpec(model="tiny", views=2, head=head), d, tr, va, tmp_path, torch.device("cpu")
        )
        assert t.logits.shape == (len(d.files), 2, 10) and t.embeddings.shape == (len(d.files), 2, 32)
        assert 0 <= t.val_f1 <= 1 and t.logits[tr].abs().sum() > 0


def test_prepare_does_not_load_the_teacher_when_its_cache_exists(clean_dataset, tmp_path, monkeypatch):
    d = data.load(clean_dataset, tmp_path, decode_size=32)
    tr, va = data.split(d.labels, data.groups(d.digests, d.hashes, d.thumbs), 0.2, 0)
    spec = TeacherSpec(model="tiny", views=2)
    first = teacher.prepare(spec, d, tr, va, tmp_path, torch.device("cpu"))
    monkeypatch.setattr(teacher, "load", lambda *a: (_ for _ in ()).throw(AssertionError("teacher loaded")))
    second = teacher.prepare(spec, d, tr, va, tmp_path, torch.device("cpu"))
    assert torch.equal(first.embeddings, second.embeddings) and torch.allclose(first.logits, second.logits)


def test_unknown_stand_in_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown stand-in.*tiny"):
        teacher.load("random-huge", torch.device("cpu"))


def test_a_hugging_face_checkpoint_loads_with_its_own_preprocessing(tmp_path):
    """The real loading path (AutoModel + the checkpoint's image processor), from a local folder."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    vision, text = teacher.RANDOM["tiny"]
    SiglipModel(SiglipConfig(vision_config={**vision, "image_size": 48}, text_config=text)).save_pretrained(
        tmp_path
    )
    SiglipImageProcessor(
        size={"height": 48, "width": 48}, image_mean=[0.4] * 3, image_std=[0.3] * 3
    ).save_pretrained(tmp_path)
    t = teacher.load(str(tmp_path), torch.device("cpu"))
    assert (t.image_size, t.mean, t.std) == (48, (0.4,) * 3, (0.3,) * 3)
    imgs = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    assert t.embed(imgs, torch.zeros(2, 9) + teacher.augment.identity(2)).shape == (2, 32)
    with pytest.raises(RuntimeError, match="could not be loaded.*hf auth login.*'tiny'"):
        teacher.load(str(tmp_path / "missing"), torch.device("cpu"))


def test_a_larger_teacher_sees_pictures_decoded_at_its_own_size(clean_dataset, tmp_path, monkeypatch):
    small = data.load(clean_dataset, None, decode_size=16)  # below the tiny teacher's 32 px
    tr, va = data.split(small.labels, data.groups(small.digests, small.hashes, small.thumbs), 0.2, 0)
    asked = []

    def decode(size):
        asked.append(size)
        return data.load(clean_dataset, None, size)

    seen = []
    real = teacher.Teacher.embed
    monkeypatch.setattr(
        teacher.Teacher, "embed", lambda self, imgs, p: seen.append(imgs.shape[-1]) or real(self, imgs, p)
    )
    teacher.prepare(
        TeacherSpec(model="tiny", views=1), small, tr, va, tmp_path, torch.device("cpu"), decode=decode
    )
    assert asked == [32] and set(seen) == {32}
