import numpy as np
import pytest
import torch

from kdq.synth import CLASS_NAMES
from kdq.train import data


def test_discover_nested_layout_and_grader_class_order(dataset, tmp_path):
    folder, man = dataset
    ds = data.discover(folder)
    assert ds.root == folder / "train_dataset" / "train_dataset"
    assert ds.classes == sorted(CLASS_NAMES)
    assert (
        ds.classes[0] == "1. Eczema"
        and ds.classes[1].startswith("10. Warts")
        and ds.classes[2] == "2. Melanoma"
    )
    names = {str(f) for f in ds.files}
    assert not any("__MACOSX" in n or "/." in n or n.startswith(".") for n in names)
    assert len(ds.files) == len(man.images) + sum(
        map(len, (man.exact_duplicates, man.near_duplicates, man.cross_class, man.corrupt))
    )


def test_discover_ignores_other_files_and_rejects_empty_folders(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("hi")
    (tmp_path / "b" / "y.JPG").write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    ds = data.discover(tmp_path)
    assert ds.classes == ["a", "b"] and [str(f) for f in ds.files] == ["a/x.png", "b/y.JPG"]
    (tmp_path / "c").mkdir()
    with pytest.raises(data.DataError, match="c: class folder has no images"):
        data.discover(tmp_path)
    with pytest.raises(data.DataError, match="kdq data synth"):
        data.discover(tmp_path / "missing")


def test_load_skips_corrupt_files_and_reuses_the_cache(dataset, tmp_path, monkeypatch):
    folder, man = dataset
    with pytest.warns(UserWarning, match="cannot decode"):
        d = data.load(folder, tmp_path, decode_size=32)
    assert d.images.dtype == torch.uint8 and d.images.shape[1:] == (3, 32, 32)
    assert sorted(f for f, _ in d.skipped) == sorted(
        c.split("train_dataset/train_dataset/")[1] for c in man.corrupt
    )
    assert len(d.labels) == len(d.images) == len(d.files)

    def boom(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "decode_one", boom)
    again = data.load(folder, tmp_path, decode_size=32)
    assert torch.equal(again.images, d.images) and again.fingerprint == d.fingerprint


def _rel(p):
    return p.split("train_dataset/train_dataset/")[1]


def test_groups_find_every_planted_duplicate_and_nothing_else(dataset, tmp_path):
    folder, man = dataset
    with pytest.warns(UserWarning):
        d = data.load(folder, None, decode_size=64)
    gid = data.groups(d.digests, d.hashes, d.thumbs)
    where = {f: g for f, g in zip(d.files, gid)}
    pairs = man.exact_duplicates + man.near_duplicates + man.cross_class
    for a, b in pairs:
        assert where[_rel(a)] == where[_rel(b)], (a, b)
    # every other image is alone in its group
    assert len(set(gid)) == len(gid) - len(pairs)


def test_split_is_stratified_deterministic_and_keeps_groups_together():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), [40, 10, 20, 30, 50])
    gid = np.arange(len(labels))
    gid[1:6] = 0  # a group of six images of class 0
    gid[45:47] = gid[44]  # a group across classes 1 (index 44..46)
    tr, va = data.split(labels, gid, 0.2, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    for c, n in enumerate([40, 10, 20, 30, 50]):
        got = (labels[va] == c).sum()
        assert abs(got - 0.2 * n) <= 5, (c, got)
    for g in (0, gid[44]):
        members = np.flatnonzero(gid == g)
        assert set(members) <= set(tr) or set(members) <= set(va)
    tr2, va2 = data.split(labels, gid, 0.2, seed=3)
    assert np.array_equal(va, va2)
    _, va3 = data.split(labels, gid, 0.2, seed=4)
    assert not np.array_equal(va, va3)
    del rng


def test_class_weights_are_inverse_frequency():
    w = data.class_weights(torch.tensor([0, 0, 0, 1]), 3)
    assert w[2] == 0 and torch.isclose(w[1] / w[0], torch.tensor(3.0))
    assert torch.isclose(w.sum(), torch.tensor(3.0))
