import hashlib
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from kdq.synth import CLASS_NAMES, MANIFEST, class_counts, synth


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_layout_names_formats_and_imbalance(tmp_path):
    man = synth(tmp_path, per_class=30, seed=0)
    root = tmp_path / "train_dataset" / "train_dataset"
    assert sorted(p.name for p in root.iterdir()) == sorted(CLASS_NAMES)
    assert (
        CLASS_NAMES[0] == "1. Eczema" and CLASS_NAMES[9] == "10. Warts Molluscum and other Viral Infections"
    )
    counts = {c: len(list((root / c).glob("img_*"))) for c in CLASS_NAMES}
    assert counts == man.classes == class_counts(30)
    assert (
        max(counts, key=counts.get) == "5. Melanocytic Nevi"
        and min(counts, key=counts.get) == "3. Atopic Dermatitis"
    )
    exts = Counter(Path(p).suffix for p in man.images)
    assert set(exts) >= {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".jfif"}
    sizes = set()
    for rel in man.images:
        with Image.open(tmp_path / rel) as im:
            im.load()
            sizes.add(im.size)
    assert len(sizes) > 50  # mixed sizes
    assert (tmp_path / "__MACOSX").is_dir() and all((tmp_path / j).exists() for j in man.junk)
    assert (tmp_path / MANIFEST).exists()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kw = dict(per_class=6, exact_duplicates=2, near_duplicates=2, cross_class=2, corrupt=2, overlays=0.3)
    synth(tmp_path / "a", seed=5, **kw)
    synth(tmp_path / "b", seed=5, **kw)
    synth(tmp_path / "c", seed=6, **kw)
    a, b, c = (digest(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


def test_planted_troubles_are_in_the_manifest_and_on_disk(tmp_path):
    man = synth(
        tmp_path,
        per_class=10,
        seed=3,
        exact_duplicates=3,
        near_duplicates=2,
        cross_class=2,
        corrupt=4,
        overlays=0.5,
    )
    for orig, copy in man.exact_duplicates:
        assert (tmp_path / orig).read_bytes() == (tmp_path / copy).read_bytes()
        assert Path(orig).parent == Path(copy).parent
    for orig, near in man.near_duplicates:
        a, b = Image.open(tmp_path / orig), Image.open(tmp_path / near)
        assert b.size[0] < a.size[0] and (tmp_path / orig).read_bytes() != (tmp_path / near).read_bytes()
    for orig, dup in man.cross_class:
        assert (tmp_path / orig).read_bytes() == (tmp_path / dup).read_bytes()
        assert Path(orig).parent.name != Path(dup).parent.name
    assert len(man.corrupt) == 4
    for rel in man.corrupt:
        with pytest.raises(OSError):
            with Image.open(tmp_path / rel) as im:
                im.load()
    assert len(man.overlays) > 10 and set(man.overlays.values()) <= {"text", "watermark", "axes", "frame"}


def test_cli_writes_the_dataset(tmp_path):
    from typer.testing import CliRunner

    from kdq.cli.main import app

    res = CliRunner().invoke(
        app,
        [
            "data",
            "synth",
            str(tmp_path / "d"),
            "--per-class",
            "4",
            "--seed",
            "1",
            "--corrupt",
            "1",
            "--balanced",
        ],
    )
    assert res.exit_code == 0, res.output
    root = tmp_path / "d" / "train_dataset" / "train_dataset"
    assert len(list(root.glob("*/img_*"))) == 40
    assert "manifest" in res.output


def test_quirk_pixel_formats_are_written_and_decode_without_loss(tmp_path):

    from kdq.synth import QUIRKS
    from kdq.train import data

    man = synth(tmp_path, per_class=2, seed=5, quirks=1, macosx=False)
    assert sorted(man.quirks.values()) == sorted(QUIRKS) and set(man.quirks) <= set(man.images)
    modes = {k: Image.open(tmp_path / rel).mode for rel, k in man.quirks.items()}
    assert modes["grey16_png"].startswith("I") and modes["float_tiff"] == "F" and modes["cmyk_jpeg"] == "CMYK"
    assert modes["rgba_png"] == "RGBA" and modes["grey_jpeg"] == "L"
    rotated = next(rel for rel, k in man.quirks.items() if k == "exif_rotated_jpeg")
    assert rotated.endswith(".jfif") and Image.open(tmp_path / rotated).getexif()[0x0112] == 6
    d = data.load(tmp_path, None, decode_size=32)
    assert d.skipped == []
    for rel, kind in man.quirks.items():
        img = d.images[d.files.index(rel.split("train_dataset/train_dataset/")[1])].float()
        assert 60 < img.mean() < 240 and img.std() > 3, kind  # neither clipped to white nor zeroed to black


def test_workers_and_separate_heights(tmp_path):
    a = synth(tmp_path / "a", per_class=4, seed=6, size_range=(30, 40), height_range=(60, 70))
    synth(tmp_path / "b", per_class=4, seed=6, size_range=(30, 40), height_range=(60, 70), workers=2)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    sizes = {Image.open(tmp_path / "a" / rel).size for rel in a.images}
    assert all(30 <= w <= 40 and 60 <= h <= 70 for w, h in sizes)
