"""Each run writes TensorBoard event files beside history.csv; progress.json times epochs and the teacher."""

import csv

from kdq import runfolder
from kdq.train import loop
from kdq.train.curves import Curves, event_files

from .test_loop import spec


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_an_epoch_row_is_read_back_by_tensorboard(tmp_path):
    with Curves(tmp_path) as curves:
        curves.epoch({"epoch": 1, "loss": 2.5, "kd": 1.0, "ce": None, "val_f1": 0.4, "lr": 0.001})
        curves.epoch({"epoch": 2, "loss": 2.0, "kd": 0.8, "ce": None, "val_f1": 0.5, "lr": 0.0005})
    got = scalars(tmp_path)
    assert [v for _, v in got["loss/total"]] == [2.5, 2.0]
    assert [s for s, _ in got["val/f1"]] == [1, 2] and abs(got["lr"][1][1] - 0.0005) < 1e-9
    assert "loss/ce" not in got  # a part this loss does not have is not drawn as zeros
    assert len(event_files(tmp_path)) == 1


def test_a_run_writes_its_curves_and_times_itself(clean_dataset, tmp_path):
    seen = []
    run_dir = tmp_path / "run"

    def watch(epoch):
        seen.append(runfolder.read_json(run_dir / runfolder.PROGRESS))

    loop.run(spec(train__epochs=2), run_dir, clean_dataset, tmp_path / "cache", on_epoch=watch)
    with open(run_dir / runfolder.HISTORY) as f:
        history = list(csv.DictReader(f))
    got = scalars(run_dir)
    assert [round(v, 4) for _, v in got["val/f1"]] == [round(float(r["val_f1"]), 4) for r in history]
    assert {"loss/total", "loss/kd", "loss/ce", "train/acc", "val/acc", "lr"} <= set(got)
    assert all(p["epoch_s"] > 0 for p in seen) and [p["epoch"] for p in seen] == [1, 2]


def test_the_teacher_phase_says_how_many_pictures_are_embedded(clean_dataset, tmp_path, monkeypatch):
    from kdq.train import teacher

    calls = []
    real = teacher.embed_stream

    def spy(*args, on_progress=None, **kwargs):
        def note(done, n):
            calls.append(runfolder.read_json(tmp_path / "run" / runfolder.PROGRESS))
            on_progress(done, n)
            calls[-1] = runfolder.read_json(tmp_path / "run" / runfolder.PROGRESS)

        return real(*args, on_progress=note, **kwargs)

    monkeypatch.setattr(teacher, "embed_stream", spy)
    loop.run(spec(train__epochs=1), tmp_path / "run", clean_dataset, tmp_path / "cache2")
    assert calls, "the teacher embedded nothing"
    last = calls[-1]
    assert last["phase"] == "teacher" and last["embedded"] == last["to_embed"] > 0
    assert last["teacher_s"] >= 0
