import numpy as np
import pytest
import torch

from kdq.spec import TeacherSpec
from kdq.train import augment, data, teacher


@pytest.fixture(scope="module")
def tiny():
    return teacher.load("tiny", torch.device("cpu"), text=True)


def test_embedding_cache_is_computed_once_and_reused(tiny, tmp_path, monkeypatch):
    imgs = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    first = teacher.embeddings(tiny, imgs, "abcdef0123456789", views=3, cache_dir=tmp_path)
    assert (
        first["views"].shape == (5, 3, 32)
        and first["plain"].shape == (5, 32)
        and first["params"].shape == (5, 3, len(augment.FIELDS))
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
            TeacherSpec(model="tiny", l2=[1e-3], views=2, mix_views=0, head=head),
            d,
            tr,
            va,
            tmp_path,
            torch.device("cpu"),
        )
        # view 0 is the plain picture, then the two cached views
        assert t.logits.shape == (len(d.files), 3, 10) and t.embeddings.shape == (len(d.files), 3, 32)
        assert 0 <= t.val_f1 <= 1 and t.logits[tr].abs().sum() > 0


def test_prepare_does_not_load_the_teacher_when_its_cache_exists(clean_dataset, tmp_path, monkeypatch):
    d = data.load(clean_dataset, tmp_path, decode_size=32)
    tr, va = data.split(d.labels, data.groups(d.digests, d.hashes, d.thumbs), 0.2, 0)
    spec = TeacherSpec(model="tiny", l2=[1e-3], views=2)
    first = teacher.prepare(spec, d, tr, va, tmp_path, torch.device("cpu"))
    refuse = lambda *a, **k: (_ for _ in ()).throw(AssertionError("teacher loaded"))  # noqa: E731
    monkeypatch.setattr(teacher, "load", refuse)
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
    emb = t.embed(imgs, teacher.augment.identity(2))
    assert emb.shape == (2, 32)
    # only the vision tower was loaded, and it embeds as the whole model does
    assert t.model is None and not any("text" in k for k in t.vision.state_dict())
    whole = teacher.load(str(tmp_path), torch.device("cpu"), text=True)
    assert torch.allclose(whole.embed(imgs, teacher.augment.identity(2)), emb, atol=1e-5)
    with pytest.raises(RuntimeError, match="could not be loaded.*hf auth login.*'tiny'"):
        teacher.load(str(tmp_path / "missing"), torch.device("cpu"))


def test_a_larger_teacher_sees_pictures_decoded_at_its_own_size(clean_dataset, tmp_path, monkeypatch):
    small = data.load(clean_dataset, None, decode_size=16)  # below the tiny teacher's 32 px
    tr, va = data.split(small.labels, data.groups(small.digests, small.hashes, small.thumbs), 0.2, 0)
    asked = []

    def decode(size, index):
        asked.append(size)
        return data.stream(small.root, [small.files[i] for i in index], size, chunk=5)

    seen = []
    real = teacher.Teacher.embed
    monkeypatch.setattr(
        teacher.Teacher, "embed", lambda self, imgs, *a: seen.append(imgs.shape[-1]) or real(self, imgs, *a)
    )
    t = teacher.prepare(
        TeacherSpec(model="tiny", l2=[1e-3], views=1, mix_views=1),
        small,
        tr,
        va,
        tmp_path,
        torch.device("cpu"),
        decode=decode,
    )
    assert asked == [32, 32] and set(seen) == {32}  # the plain and augmented views, then the mixed ones
    assert t.params.shape[1] == 3 and t.mixed
    assert len(teacher.view_params(len(small.files), 1, small.fingerprint)) == len(small.files)


def test_the_student_gets_the_plain_picture_among_the_teachers_views(clean_dataset, tmp_path, tiny):
    d = data.load(clean_dataset, None, decode_size=32)
    tr, va = data.split(d.labels, data.groups(d.digests, d.hashes, d.thumbs), 0.2, 0)
    t = teacher.prepare(
        TeacherSpec(model="tiny", l2=[1e-3], views=2, mix_views=0, resize="squash"),
        d,
        tr,
        va,
        None,
        torch.device("cpu"),
    )
    assert t.views == 3 and torch.equal(t.params[:, 0], augment.identity(len(d.files)))
    plain = tiny.embed(d.images[:4], None)
    assert torch.allclose(t.embeddings[:4, 0].float(), plain, atol=1e-2)
    assert not torch.allclose(t.embeddings[:4, 1].float(), plain, atol=1e-2)


def test_pad_shows_the_teacher_each_picture_with_its_own_aspect(clean_dataset, tmp_path, monkeypatch):
    d = data.load(clean_dataset, None, decode_size=32)
    tr, va = data.split(d.labels, data.groups(d.digests, d.hashes, d.thumbs), 0.2, 0)
    got = []
    real = teacher.Teacher.embed
    monkeypatch.setattr(
        teacher.Teacher,
        "embed",
        lambda self, imgs, p, aspect=None: got.append(aspect) or real(self, imgs, p, aspect),
    )
    pad = teacher.prepare(
        TeacherSpec(model="tiny", l2=[1e-3], views=1, mix_views=0), d, tr, va, tmp_path, torch.device("cpu")
    )
    aspects = torch.cat(got)
    want = (d.sizes[:, 0] / d.sizes[:, 1]).repeat_interleave(2)  # plain + one view of each picture
    assert torch.allclose(aspects, want) and not torch.allclose(aspects, torch.ones_like(aspects))
    got.clear()
    squash = teacher.prepare(
        TeacherSpec(model="tiny", l2=[1e-3], views=1, mix_views=0, resize="squash"),
        d,
        tr,
        va,
        tmp_path,
        torch.device("cpu"),
    )
    assert all(a is None for a in got) and not torch.allclose(
        pad.embeddings.float(), squash.embeddings.float()
    )
    assert len(list((tmp_path / "teacher").iterdir())) == 2  # one cache entry each


def test_zero_shot_loads_a_sentencepiece_tokenizer_and_pads_prompts_to_64_tokens(tmp_path):
    """A Hugging Face SigLIP checkpoint with its own (tiny, trained here) sentencepiece tokenizer whose
    config sets no usable length limit: prompts are padded to the 64 tokens SigLIP was trained with."""
    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    words = "a dermatology photo of eczema melanoma warts nevi psoriasis tinea keratosis carcinoma".split()
    sentences = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(tmp_path / "spiece"),
        vocab_size=32,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    ckpt = tmp_path / "ckpt"
    SiglipTokenizer(str(tmp_path / "spiece.model"), model_max_length=10**30).save_pretrained(ckpt)
    vision, text = teacher.RANDOM["tiny"]
    cfg = SiglipConfig(
        vision_config=vision, text_config={**text, "vocab_size": 32, "max_position_embeddings": 64}
    )
    SiglipModel(cfg).save_pretrained(ckpt)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(ckpt)
    t = teacher.load(str(ckpt), torch.device("cpu"), text=True)
    seen = []
    real = t.model.get_text_features
    t.model.get_text_features = lambda input_ids: seen.append(input_ids.shape) or real(input_ids=input_ids)
    logits = teacher.zero_shot_logits(t, ["1. Eczema", "2. Melanoma", "10. Warts"], torch.randn(5, 32))
    assert seen == [(3, 64)] and logits.shape == (5, 3) and torch.isfinite(logits).all()


def test_a_teacher_that_cannot_be_loaded_says_what_to_do_in_one_whole_line():
    """Hugging Face's long first line once cut the message mid-word: the advice comes first, the hub's
    words after it, whole."""
    said = (
        "Cannot access gated repo for url https://huggingface.co/google/medsiglip-448/resolve/main/"
        "config.json. Access to model google/medsiglip-448 is restricted. You must have access to it and be "
        "authenticated to access it. Please log in.\n401 Client Error."
    )
    message = str(teacher._unavailable("google/medsiglip-448", OSError(said)))
    first = message.splitlines()[0]
    assert first.startswith("teacher.model = 'google/medsiglip-448' could not be loaded: accept its terms")
    assert "https://huggingface.co/google/medsiglip-448" in first and "hf auth login" in first
    assert first.endswith(said.splitlines()[0])  # the hub's own first line, whole


def test_prepare_records_the_heads_choice_and_its_per_class_f1(clean_dataset, tmp_path):
    d = data.load(clean_dataset, None, decode_size=32)
    tr, va = data.split(d.labels, data.groups(d.digests, d.hashes, d.thumbs), 0.25, 0)
    spec = TeacherSpec(model="tiny", views=1, l2=[1e-3, 1e-1], resize="squash")
    t = teacher.prepare(spec, d, tr, va, None, torch.device("cpu"))
    assert t.probe["head"] == "probe" and t.probe["l2"] in (1e-3, 1e-1) and t.probe["temperature"] > 0
    assert 0 <= t.probe["cv_f1"] <= 1 and len(t.per_class_f1) == 10
    assert abs(sum(t.per_class_f1) / 10 - t.val_f1) < 1e-5


def test_pooled_and_patch_features_have_their_own_cache_and_keep_the_pooled_embedding(
    clean_dataset, tmp_path, tiny
):
    d = data.load(clean_dataset, None, decode_size=32)
    tr, va = data.split(d.labels, data.groups(d.digests, d.hashes, d.thumbs), 0.25, 0)
    spec = TeacherSpec(model="tiny", views=1, l2=[1e-3], resize="squash")
    pooled = teacher.prepare(spec, d, tr, va, tmp_path, torch.device("cpu"))
    both = teacher.prepare(
        spec.model_copy(update={"features": "pooled+patch"}), d, tr, va, tmp_path, torch.device("cpu")
    )
    caches = list((tmp_path / "teacher").iterdir())
    assert len(caches) == 2
    loaded = [torch.load(c, weights_only=True) for c in caches]
    wide = next(c for c in loaded if c["plain"].shape[-1] != 32)
    out = tiny.vision(pixel_values=teacher.augment.render(d.images[:3], None, 32, (0.5,) * 3, (0.5,) * 3))
    patch = out.last_hidden_state.mean(1)
    assert wide["plain"].shape == (len(d.files), 64)
    assert torch.allclose(wide["plain"][:3, 32:].float(), patch, atol=1e-2)
    # embedding distillation fits the pooled embedding either way; the head sees the patch mean too
    assert both.embeddings.shape == pooled.embeddings.shape and torch.equal(
        both.embeddings, pooled.embeddings
    )
    assert not torch.allclose(both.logits, pooled.logits)


def test_mixed_views_replay_identically_for_teacher_and_student(clean_dataset, tmp_path, monkeypatch):
    """The teacher embeds each mixed picture once; the student's replay of that view (its parameters,
    partner included) renders the very same pixels. Partners share the picture's fold, and a training
    picture is never mixed with a validation picture."""
    d = data.load(clean_dataset, None, decode_size=32)  # the tiny teacher's own size: pixels comparable
    gid = data.groups(d.digests, d.hashes, d.thumbs)
    tr, va = data.split(d.labels, gid, 0.25, 0)
    seen = {}
    real = augment.render

    def render(images, params, size, mean=None, std=None, *a, **k):
        x = real(images, params, size, mean, std, *a, **k)
        if len(a) > 2 and a[2] is not None:  # the teacher's mixed views (partners given)
            m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
            seen.update({tuple(r.tolist()): px for r, px in zip(params, x * s + m)})
        return x

    monkeypatch.setattr(augment, "render", render)
    spec = TeacherSpec(model="tiny", views=1, mix_views=3, l2=[1e-3], resize="squash")
    t = teacher.prepare(spec, d, tr, va, tmp_path, torch.device("cpu"), groups=gid)
    monkeypatch.setattr(augment, "render", real)
    assert t.mixed and t.params.shape[1] == 2 + 3 and len(seen) == len(d.files) * 3
    fold = teacher.probe.assign_folds(d.labels, gid, teacher.FOLDS, seed=0)
    train = torch.as_tensor(tr)
    mix = t.params[train, 2:]
    partner = mix[..., augment.PARTNER].long()
    is_mix = partner >= 0  # replaced slots (partner outside training) are augmented views again
    assert is_mix.any() and set(partner[is_mix].tolist()) <= set(tr.tolist())
    own = train[:, None].expand_as(partner)
    assert (torch.as_tensor(fold)[partner[is_mix]] == torch.as_tensor(fold)[own[is_mix]]).all()
    assert (partner[is_mix] != own[is_mix]).any()
    rows, idx = mix[is_mix], own[is_mix]
    student = augment.replay(d.images, idx, rows, 32, mixed=True)
    from kdq import grader

    m, s = torch.tensor(grader.MEAN).view(1, 3, 1, 1), torch.tensor(grader.STD).view(1, 3, 1, 1)
    teacher_px = torch.stack([seen[tuple(r.tolist())] for r in rows])
    assert torch.allclose(student * s + m, teacher_px, atol=1e-5)  # the same pixels
    assert not torch.allclose(teacher_px, augment.replay(d.images, idx, rows, 32) * s + m, atol=1e-2)


def test_the_cache_key_follows_the_mixed_views_and_the_view_ranges(clean_dataset, tmp_path):
    d = data.load(clean_dataset, None, decode_size=32)
    tr, va = data.split(d.labels, data.groups(d.digests, d.hashes, d.thumbs), 0.25, 0)
    base = TeacherSpec(model="tiny", views=1, l2=[1e-3], resize="squash")
    for change in (
        {},
        {"mix_views": 1},
        {"mix_views": 1, "mix_alpha": 0.4},
        {"crop_min": 0.5},
        {"l2": [0.1]},
    ):
        teacher.prepare(base.model_copy(update=change), d, tr, va, tmp_path, torch.device("cpu"))
    assert len(list((tmp_path / "teacher").iterdir())) == 4  # the head's L2 is not part of the embeddings
    assert np.unique(teacher.probe.assign_folds(d.labels, None, 5, 0)).size == 5
