import numpy as np
import pytest
import torch

from kdq.train import data


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


MEMORY_PROBE = """
import resource, sys
from pathlib import Path
import torch
from kdq.train import data

torch.set_num_threads(1)
limit = int(sys.argv[3]) or None
d = data.load(Path(sys.argv[1]), None, int(sys.argv[2]), limit_per_class=limit, workers=2)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, d.images.nbytes)
"""


def test_decoding_peaks_near_the_size_of_its_uint8_tensor(tmp_path):
    """Peak memory of a cold decode grows with the dataset like its uint8 tensor does: ~1x (was ~7x: a
    list of pictures, np.stack, and float32 copies of the whole dataset for the duplicate hashes).
    Two sizes, so that what does not grow with the dataset (torch, threads, allocator) cancels."""
    import subprocess
    import sys

    from kdq.synth import synth

    synth(tmp_path / "d", per_class=40, seed=3, size_range=(40, 64), macosx=False)

    def peak_and_bytes(limit: int) -> tuple[int, int]:
        args = [sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "d"), "448", str(limit)]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
        return int(out[-2]), int(out[-1])

    (small_peak, small), (big_peak, big) = peak_and_bytes(20), peak_and_bytes(0)
    assert big > 1.8 * small
    ratio = (big_peak - small_peak) / (big - small)
    assert ratio < 2.5, f"peak RSS of the decode grows {ratio:.2f}x as fast as its uint8 tensor"


def _save(path, array, **kw):
    from PIL import Image

    Image.fromarray(array).save(path, **kw)


def test_sixteen_bit_and_float_pictures_are_scaled_not_clipped(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    _save(tmp_path / "a" / "grey16.png", (ramp * 65535).astype(np.uint16))
    _save(tmp_path / "a" / "float01.tif", ramp.astype(np.float32))
    _save(tmp_path / "b" / "float255.tiff", (ramp * 255).astype(np.float32))
    _save(tmp_path / "b" / "nan.tif", np.full((8, 8), np.nan, dtype=np.float32))
    _save(tmp_path / "b" / "grey8.png", (ramp * 255).astype(np.uint8))
    with pytest.warns(UserWarning, match="nan.tif.*NaN"):
        d = data.load(tmp_path, None, decode_size=64)
    assert [f for f, _ in d.skipped] == ["b/nan.tif"]
    want = torch.from_numpy(np.rint(ramp * 255).astype(np.uint8))
    for f, img in zip(d.files, d.images):
        assert img.shape == (3, 64, 64) and torch.equal(img[0], img[2]), f
        # the ramp survives: no clipping to 255 (16-bit) or to 0 (float)
        assert (img[0].float() - want.float()).abs().max() <= 2, f


def test_exif_orientation_is_what_the_graders_loader_sees(tmp_path):
    """The grader's loader (torchvision's ImageFolder: Image.open + convert("RGB")) ignores EXIF
    orientation; kdq decodes the same pixels."""
    from PIL import Image
    from torchvision.datasets.folder import pil_loader

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pic = np.zeros((40, 60, 3), np.uint8)
    pic[:, :20] = 255  # a white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pic).save(tmp_path / "a" / "rotated.jpg", exif=exif.tobytes(), quality=95)
    _save(tmp_path / "b" / "plain.png", pic)
    d = data.load(tmp_path, None, decode_size=60)
    grader_view = pil_loader(str(tmp_path / "a" / "rotated.jpg")).resize((60, 60), Image.BILINEAR)
    got = d.images[d.files.index("a/rotated.jpg")].permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - np.asarray(grader_view).astype(int)).max() <= 1
    assert got[:, :10].mean() > 200 and got[:, -10:].mean() < 50  # the band stays on the left


def test_stream_gives_the_same_pictures_at_another_size_in_chunks(clean_dataset):
    d = data.load(clean_dataset, None, decode_size=24)
    whole = data.load(clean_dataset, None, decode_size=40)
    starts, chunks = zip(*data.stream(d.root, d.files, 40, chunk=7))
    assert starts[0] == 0 and all(len(c) <= 7 for c in chunks)
    assert torch.equal(torch.cat(chunks), whole.images)


def test_holdout_is_stratified_grouped_and_apart_from_train_and_val():
    labels = np.repeat(np.arange(4), [100, 50, 200, 80])
    gid = np.arange(len(labels))
    gid[:10] = 0  # a group of ten images of class 0
    tr, va, ho = data.three_way(labels, gid, 0.15, 0.08, seed=1)
    assert len(tr) + len(va) + len(ho) == len(labels)
    assert not (set(tr) & set(va) or set(tr) & set(ho) or set(va) & set(ho))
    for c, n in enumerate([100, 50, 200, 80]):
        assert abs((labels[ho] == c).sum() - 0.08 * n) <= 10 and abs((labels[va] == c).sum() - 0.15 * n) <= 10
    members = set(range(10))
    assert members <= set(tr) or members <= set(va) or members <= set(ho)
    tr0, va0, ho0 = data.three_way(labels, gid, 0.15, 0.0, seed=1)
    assert len(ho0) == 0 and len(tr0) + len(va0) == len(labels)
