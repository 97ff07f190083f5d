"""``python -m kdq.train``'s own options (the training itself: tests/train/test_loop.py)."""

import json

from kdq import runfolder
from kdq.spec import ExperimentSpec
from kdq.train import teacher
from kdq.train.__main__ import main, teacher_cache


def test_teacher_cache_only_builds_the_caches_every_run_reads_and_trains_nothing(
    clean_dataset, tmp_path, monkeypatch
):
    """The Modal backend has each teacher cache built once, by an input that trains no student; a run
    of another student, with other epochs, then finds it under the name it looks for."""
    run_dir, cache = tmp_path / "cache-abc", tmp_path / "cache"
    run_dir.mkdir()
    spec = ExperimentSpec.model_validate(
        {
            "name": "build",
            "student": {"library": "kdq", "name": "tiny_cnn"},
            "teacher": {"model": "tiny", "views": 2, "mix_views": 0, "l2": [1e-3]},
            "train": {"epochs": 3, "batch_size": 32, "image_size": 32, "device": "cpu"},
            "data": {"decode_size": 32},
        }
    )
    (run_dir / runfolder.SPEC).write_text(spec.model_dump_json())
    argv = [str(run_dir), "--data", str(clean_dataset), "--cache", str(cache), "--teacher-cache-only"]
    assert main(argv) == 0, (
        (run_dir / runfolder.ERROR).read_text() if (run_dir / runfolder.ERROR).exists() else ""
    )
    assert (
        len(list((cache / "teacher").glob("*.pt"))) == 1 and len(list((cache / "decoded").glob("*.pt"))) == 1
    )
    done = json.loads((run_dir / runfolder.DONE).read_text())
    assert 0 <= done["teacher_val_f1"] <= 1
    assert not (run_dir / runfolder.MODEL).exists() and not (run_dir / runfolder.CHECKPOINT).exists()
    assert json.loads((run_dir / runfolder.PROGRESS).read_text())["phase"] == "done"

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded again: the run missed the cache")

    monkeypatch.setattr(teacher, "load", no_teacher)
    other = spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 7, "lr": 1e-2})})
    other = other.model_copy(update={"student": other.student.model_copy(update={"drop_rate": 0.2})})
    assert teacher_cache(other, tmp_path / "run", clean_dataset, cache)["teacher_val_f1"] is not None
    assert len(list((cache / "teacher").glob("*.pt"))) == 1
