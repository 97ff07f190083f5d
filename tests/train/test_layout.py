"""The class folders, found without decoding (and without torch)."""

import pytest

from kdq.synth import CLASS_NAMES
from kdq.train import layout


def test_discover_nested_layout_and_grader_class_order(dataset, tmp_path):
    folder, man = dataset
    ds = layout.discover(folder)
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
    ds = layout.discover(tmp_path)
    assert ds.classes == ["a", "b"] and [str(f) for f in ds.files] == ["a/x.png", "b/y.JPG"]
    (tmp_path / "c").mkdir()
    with pytest.raises(layout.DataError, match="c: class folder has no images"):
        layout.discover(tmp_path)
    with pytest.raises(layout.DataError, match="kdq data synth"):
        layout.discover(tmp_path / "missing")
