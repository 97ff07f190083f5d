import csv
import json
import subprocess
import sys

import pytest
import torch

from kdq import runfolder
from kdq.spec import ExperimentSpec
from kdq.train import finish, loop
from kdq.verify import verify_file


def spec(**over) -> ExperimentSpec:
    raw = {
        "name": "tiny",
        "student": {"library": "kdq", "name": "tiny_cnn"},
        "teacher": {"model": "tiny", "views": 2, "mix_views": 0, "l2": [1e-3]},
        "distill": {"loss": "hinton", "temperature": 2.0, "alpha": 0.5},
        "train": {"epochs": 3, "batch_size": 32, "image_size": 32, "lr": 3e-3, "device": "cpu"},
        "data": {"decode_size": 32},
    }
    for key, value in over.items():
        section, field = key.split("__")
        raw[section][field] = value
    return ExperimentSpec.model_validate(raw)


def rows(run_dir):
    with open(run_dir / runfolder.HISTORY) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_full_run_through_the_entry_point_writes_every_file(clean_dataset, tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    run_dir.mkdir()
    s = spec(distill__embed_weight=0.5, train__tune_bias=True, train__tta_flip=True, train__ema_decay=0.9)
    (run_dir / runfolder.SPEC).write_text(s.model_dump_json())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdq.train",
            str(run_dir),
            "--data",
            str(clean_dataset),
            "--cache",
            str(cache),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in (
        runfolder.PROGRESS,
        runfolder.CHECKPOINT,
        runfolder.METRICS,
        runfolder.MODEL,
        runfolder.HISTORY,
        runfolder.DONE,
    ):
        assert (run_dir / name).exists(), name
    m = json.loads((run_dir / runfolder.METRICS).read_text())
    for key in (
        "val_f1",
        "val_acc",
        "per_class_f1",
        "confusion",
        "model_mb",
        "torch_version",
        "best_epoch",
        "teacher_probe_f1",
        "holdout_f1",
        "holdout_f1_ci",
    ):
        assert m[key] is not None, key
    assert len(m["holdout_f1_ci"]) == 2 and m["holdout_f1_ci"][0] <= m["holdout_f1"] <= m["holdout_f1_ci"][1]
    assert list(m["per_class_f1"]) == m["classes"] == sorted(m["classes"])
    assert len(m["confusion"]) == 10 and 0 <= m["val_f1"] <= 1 and 0 <= m["teacher_probe_f1"] <= 1
    assert m["teacher_probe"]["head"] == "probe" and m["teacher_probe"]["l2"] == 1e-3  # the spec's one value
    assert m["teacher_probe"]["temperature"] > 0 and list(m["teacher_per_class_f1"]) == m["classes"]
    assert m["val_f1_bias_in_sample"] >= m["val_f1_before_bias"]  # tuning never lowers F1 where it was tuned
    assert m["val_f1"] <= m["val_f1_bias_in_sample"] and m["bias"] is not None and len(m["bias"]) == 10
    h = rows(run_dir)
    assert [int(r["epoch"]) for r in h] == [1, 2, 3]  # counted from 1, as best_epoch
    f1 = [float(r["val_f1"]) for r in h]
    assert m["best_epoch"] == f1.index(max(f1)) + 1  # the first epoch with the best F1, counted from 1
    assert all(float(r["kd"]) > 0 and float(r["embed"]) > 0 and float(r["ce"]) > 0 for r in h)
    progress = json.loads((run_dir / runfolder.PROGRESS).read_text())
    assert progress["phase"] == "done" and progress["epoch"] == 3 and progress["epochs"] == 3
    report = verify_file(run_dir / runfolder.MODEL)
    assert report["output_shape"] == [4, 10]
    assert list((cache / "teacher").iterdir()) and list((cache / "decoded").iterdir())


def test_resume_after_an_interruption_continues_where_it_stopped(clean_dataset, tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    s = spec(teacher__kind="none", distill__loss="ce", train__epochs=4, train__checkpoint_every_s=0)

    def stop(epoch):
        if epoch == 1:
            raise KeyboardInterrupt("preempted")

    with pytest.raises(KeyboardInterrupt):
        loop.run(s, run_dir, clean_dataset, cache, on_epoch=stop)
    assert [int(r["epoch"]) for r in rows(run_dir)] == [1, 2]
    assert not (run_dir / runfolder.MODEL).exists()
    before = torch.load(run_dir / runfolder.CHECKPOINT, weights_only=False)["state"]["history"]

    seen = []

    def watch(epoch):
        seen.append(epoch)
        progress = json.loads((run_dir / runfolder.PROGRESS).read_text())
        assert progress["epoch"] == epoch + 1 and progress["phase"] == "training" and progress["epochs"] == 4

    summary = loop.run(s, run_dir, clean_dataset, cache, on_epoch=watch)
    assert seen == [2, 3]  # only the missing epochs ran
    h = rows(run_dir)
    assert [int(r["epoch"]) for r in h] == [1, 2, 3, 4]
    assert h[0]["loss"] == str(before[0]["loss"])
    assert (run_dir / runfolder.MODEL).exists() and summary["best_epoch"] == (
        f1 := [float(r["val_f1"]) for r in h]
    ).index(max(f1)) + 1
    # and a run that is complete does no more epochs
    seen.clear()
    loop.run(s, run_dir, clean_dataset, cache, on_epoch=seen.append)
    assert seen == []


def test_resumed_run_matches_an_uninterrupted_one(clean_dataset, tmp_path):
    s = spec(teacher__kind="none", distill__loss="ce", train__epochs=3)
    loop.run(s, tmp_path / "a", clean_dataset, tmp_path / "cache")

    def stop(epoch):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run(s, tmp_path / "b", clean_dataset, tmp_path / "cache", on_epoch=stop)
    loop.run(s, tmp_path / "b", clean_dataset, tmp_path / "cache")
    a, b = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["val_f1"] for r in a] == [r["val_f1"] for r in b]


def test_dkd_with_early_stopping(clean_dataset, tmp_path):
    s = spec(
        distill__loss="dkd",
        train__epochs=6,
        train__patience=1,
        train__lr=1e-6,
        train__warmup_epochs=0,
        train__optimizer="sgd",
        distill__label_smoothing=0.1,
        distill__class_weighted=False,
        train__ema_decay=None,
    )
    loop.run(s, tmp_path / "run", clean_dataset, tmp_path / "cache")
    h = rows(tmp_path / "run")
    assert len(h) < 6  # no gain with a tiny learning rate: stopped early
    m = json.loads((tmp_path / "run" / runfolder.METRICS).read_text())
    assert m["epochs_run"] == len(h) and float(h[0]["kd"]) > 0
    assert len(h) >= 4  # never in the schedule's first two thirds
    a, b = s.distill.dkd_alpha, s.distill.dkd_beta
    assert float(h[0]["kd"]) == pytest.approx(a * float(h[0]["tckd"]) + b * float(h[0]["nckd"]), rel=1e-3)


def _only_in_loop(render):
    """The loop's own ``augment`` with ``render`` replaced (the teacher's and predict's stay as they are)."""
    import types

    from kdq.train import augment

    return types.SimpleNamespace(
        render=render, sample=augment.sample, identity=augment.identity, options=augment.options
    )


def _picture_keys(images: torch.Tensor) -> set[bytes]:
    return {bytes(img.flatten().tolist()) for img in images.cpu()}


def test_the_holdout_is_scored_once_and_never_trained_validated_or_probed_on(
    clean_dataset, tmp_path, monkeypatch
):
    from kdq.train import data, evaluate, teacher

    s = spec(train__epochs=2, train__tune_bias=True)
    ds = data.load(clean_dataset, None, 32)
    _, _, hold = data.three_way(ds.labels, data.groups(ds.digests, ds.hashes, ds.thumbs), 0.15, 0.08, 0)
    held = _picture_keys(ds.images[hold])
    assert 10 <= len(held) < len(ds.files) // 4
    trained, predicted, probed = set(), [], []
    real_render, real_predict, real_prepare = loop.augment.render, evaluate.predict, teacher.prepare

    def render(images, params, size, *a, **k):
        trained.update(_picture_keys(images))
        return real_render(images, params, size, *a, **k)

    def prepare(spec_, ds_, train_idx, val_idx, *a, **k):
        probed.append(set(map(int, train_idx)) | set(map(int, val_idx)))
        return real_prepare(spec_, ds_, train_idx, val_idx, *a, **k)

    monkeypatch.setattr(loop, "augment", _only_in_loop(render))
    for module in (loop, finish):  # validation in the loop, the holdout at the end
        monkeypatch.setattr(
            module,
            "predict",
            lambda m, imgs, *a: predicted.append(_picture_keys(imgs)) or real_predict(m, imgs, *a),
        )
    monkeypatch.setattr(teacher, "prepare", prepare)
    loop.run(s, tmp_path / "run", clean_dataset, tmp_path / "cache")
    assert not (trained & held) and not (probed[0] & set(map(int, hold)))
    assert [p == held for p in predicted] == [
        False,
        False,
        True,
    ]  # two epochs of validation, then the holdout
    m = json.loads((tmp_path / "run" / runfolder.METRICS).read_text())
    lo, hi = m["holdout_f1_ci"]
    assert 0 <= lo <= m["holdout_f1"] <= hi <= 1 and m["n_holdout"] == len(held)


def test_the_student_sees_the_plain_picture_and_fresh_crops(clean_dataset, tmp_path, monkeypatch):
    from kdq.train import augment

    seen = []
    real = loop.augment.render
    monkeypatch.setattr(
        loop.augment, "render", lambda imgs, p, *a, **k: seen.append(p) or real(imgs, p, *a, **k)
    )
    cached = teacher_views = None

    def rows(fresh):
        nonlocal cached, teacher_views
        seen.clear()
        run = tmp_path / f"run-{fresh}"
        loop.run(spec(distill__fresh_fraction=fresh), run, clean_dataset, tmp_path / "cache")
        cached = torch.load(next((tmp_path / "cache" / "teacher").iterdir()), weights_only=True)["params"]
        teacher_views = {tuple(r.tolist()) for r in cached.reshape(-1, len(augment.FIELDS))} | {
            tuple(augment.identity(1)[0].tolist())
        }
        return [tuple(r.tolist()) for p in seen if p is not None and len(p) > 0 for r in p]

    plain = tuple(augment.identity(1)[0].tolist())
    only_teacher = rows(0.0)
    assert plain in only_teacher and set(only_teacher) <= teacher_views  # the plain view is trained on
    mixed = rows(0.5)
    fresh = [r for r in mixed if r not in teacher_views]
    assert 0.3 < len(fresh) / len(mixed) < 0.7  # about half of every batch: fresh crops, never cached


def test_compile_trains_the_compiled_module_and_exports_the_plain_one(clean_dataset, tmp_path, monkeypatch):
    calls = []

    class Compiled(torch.nn.Module):  # stands in for torch.compile's wrapper (no compiler in the test)
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, x):
            calls.append(len(x))
            return self._orig_mod(x)

    monkeypatch.setattr(loop.torch, "compile", Compiled)
    loop.run(spec(train__compile=True, train__epochs=1), tmp_path / "run", clean_dataset, tmp_path / "cache")
    assert calls  # training went through the compiled module
    exported = torch.jit.load(str(tmp_path / "run" / runfolder.MODEL))
    assert not any("_orig_mod" in k for k in exported.state_dict())
    assert verify_file(tmp_path / "run" / runfolder.MODEL)["output_shape"] == [4, 10]


def test_no_function_in_kdq_train_is_over_80_lines():
    """The loop reads as a sequence of named phases: no function of kdq/train grows past 80 lines."""
    import ast
    from pathlib import Path

    import kdq.train

    long = []
    for path in sorted(Path(kdq.train.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if (n := node.end_lineno - node.lineno + 1) > 80:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long
    phases = ("load", "teacher_targets", "student", "resume", "epochs", "export_best", "evaluate")
    body = ast.unparse(
        next(n for n in ast.parse(Path(loop.__file__).read_text()).body if getattr(n, "name", "") == "run")
    )
    assert [p for p in phases if f"{p}(" in body] == list(phases)  # run calls every phase by name


def test_patience_never_stops_in_the_schedules_first_two_thirds():
    from kdq.spec import TrainSpec

    tr = TrainSpec(epochs=300, patience=5)
    assert (
        not loop.stop_early(tr, 199, 50) and loop.stop_early(tr, 200, 5) and not loop.stop_early(tr, 250, 4)
    )
    assert not loop.stop_early(TrainSpec(epochs=300), 299, 299)  # off by default


def test_the_ema_weights_are_validated_and_exported(clean_dataset, tmp_path, monkeypatch):
    from kdq.train import export

    exported = {}
    real_export = export.export
    monkeypatch.setattr(
        export,
        "export",
        lambda model, *a, **k: exported.update(model.state_dict()) or real_export(model, *a, **k),
    )
    s = spec(teacher__kind="none", distill__loss="ce", train__epochs=1, train__ema_decay=0.5)
    loop.run(s, tmp_path / "run", clean_dataset, tmp_path / "cache")
    ck = torch.load(tmp_path / "run" / runfolder.CHECKPOINT, weights_only=False)
    w = "conv.0.weight" if "conv.0.weight" in exported else next(k for k in exported if k.endswith("weight"))
    assert torch.equal(exported[w], ck["ema"][f"module.{w}"].cpu())  # the one epoch is the best one
    assert not torch.equal(exported[w], ck["model"][w].cpu())  # not the raw weights
    m = json.loads((tmp_path / "run" / runfolder.METRICS).read_text())
    assert m["pretrained_loaded"] is False  # kdq's models have no pretrained weights


def test_metrics_say_whether_the_student_started_from_pretrained_weights(
    clean_dataset, tmp_path, monkeypatch
):
    real = loop.students.build_loaded
    monkeypatch.setattr(loop.students, "build_loaded", lambda spec, nc: (real(spec, nc)[0], True))
    s = spec(teacher__kind="none", distill__loss="ce", train__epochs=1)
    loop.run(s, tmp_path / "run", clean_dataset, tmp_path / "cache")
    assert json.loads((tmp_path / "run" / runfolder.METRICS).read_text())["pretrained_loaded"] is True
