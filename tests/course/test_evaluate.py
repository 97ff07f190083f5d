"""Grading as docs/getting-started.md describes: string-sorted classes, 224x224, ImageNet normalization."""

import pytest

from kdq.course.fake_server.evaluate import BrokenModel, evaluate, find_class_root, load_dataset


def test_nested_layout_found_and_junk_ignored(dataset_dir, layout):
    CLASSES, COUNTS = layout
    data = load_dataset(dataset_dir)
    assert data.root == find_class_root(dataset_dir) == dataset_dir / "train_dataset" / "train_dataset"
    assert data.classes == sorted(CLASSES) == ["1. red", "10. green", "2. blue"]
    assert len(data.items) == sum(COUNTS)
    assert not any("__MACOSX" in str(p) for p, _ in data.items)


def test_a_model_that_reads_the_classes_right_scores_one(dataset_dir, models):
    # It maps each red level to its class index in string-sorted order, through the server's normalization.
    assert evaluate(models["perfect"], load_dataset(dataset_dir)) == pytest.approx(1.0)


def test_a_model_that_always_says_class_zero(dataset_dir, models, layout):
    _, COUNTS = layout
    n, c0, k = sum(COUNTS), COUNTS[0], len(COUNTS)
    # class 0: precision c0/n, recall 1 -> F1 = 2 c0 / (c0 + n); every other class: 0.
    expected = 2 * c0 / (c0 + n) / k
    assert evaluate(models["const0"], load_dataset(dataset_dir)) == pytest.approx(expected)


def test_broken_file_and_wrong_shape(dataset_dir, models):
    data = load_dataset(dataset_dir)
    with pytest.raises(BrokenModel):
        evaluate(models["broken"], data)
    with pytest.raises(ValueError, match=r"expected output of shape \[9, 3\], got \[9, 7\]"):
        evaluate(models["wrong_shape"], data)


def test_folder_without_classes_names_the_layout(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="train_dataset/train_dataset"):
        find_class_root(tmp_path)


def test_grades_the_synthetic_course_dataset_with_its_quirks(tmp_path, models):
    from kdq.synth import CLASS_NAMES, synth

    man = synth(tmp_path / "synth", per_class=2, seed=0, corrupt=2, size_range=(32, 48))
    data = load_dataset(tmp_path / "synth")
    assert data.classes[:3] == ["1. Eczema", "10. Warts Molluscum and other Viral Infections", "2. Melanoma"]
    assert sorted(data.classes) == data.classes and set(data.classes) == set(CLASS_NAMES)
    assert man.corrupt  # unreadable files are skipped, not fatal
    with pytest.raises(ValueError, match=r"got \[\d+, 3\]"):  # a 3-class model on a 10-class set
        evaluate(models["const0"], data)
