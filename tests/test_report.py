"""``kdq report ID``: a page per experiment, from a real tiny training run."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.report import experiment_data, submissions_for, write_experiment_report
from kdq.spec import ExperimentSpec
from kdq.stages import Stage
from kdq.synth import synth
from kdq.train import loop

FINISHED = (
    Stage.QUEUED,
    Stage.LAUNCHING,
    Stage.TRAINING,
    Stage.FETCHING,
    Stage.VALIDATING,
    Stage.READY,
    Stage.DONE,
)


def tiny_spec(name: str = "tiny", lr: float = 1e-3) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "name": name,
            "student": {"library": "kdq", "name": "tiny_cnn"},
            "teacher": {"kind": "none"},
            "distill": {"loss": "ce"},
            "data": {"decode_size": 40},
            "train": {"epochs": 2, "batch_size": 32, "image_size": 32, "lr": lr, "device": "cpu"},
        }
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[ExperimentSpec, Path]]:
    """Two real tiny training runs (different learning rates) on a small generated dataset."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    synth(root / "data", per_class=6, seed=3, size_range=(24, 40))
    out = {}
    for name, lr in (("slow-lr", 1e-3), ("<b>fast</b>-lr", 3e-3)):
        spec = tiny_spec(name, lr)
        run_dir = root / name.replace("<", "").replace(">", "").replace("/", "")
        loop.run(spec, run_dir, root / "data", root / "cache")
        out[name] = (spec, run_dir)
    return out


def finish(store, spec: ExperimentSpec, run_dir: Path, server: tuple[float, int, int] | None = None) -> int:
    """Record a finished run the way the worker does: stages in order, then metrics and artifacts."""
    [eid] = store.add([("test", spec)], force=True)
    for src, dst in zip(FINISHED, FINISHED[1:]):
        assert store.move(eid, src, dst)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    store.update(
        eid,
        run_id=run_dir.name,
        handle={"run_dir": str(run_dir)},
        artifacts=str(run_dir),
        metrics=metrics,
        val_f1=metrics["val_f1"],
        teacher_f1=metrics.get("teacher_probe_f1"),
    )
    if server:
        score, rank, attempt = server
        store.update(eid, server_score=score, server_rank=rank, server_attempt=attempt)
        now = time.time()
        store.db["submissions"].insert(
            {
                "exp_id": eid,
                "state": "scored",
                "attempt": attempt,
                "server_status": "successful",
                "score": score,
                "model_size": 0.13,
                "rank": rank,
                "message": f"Submission received. Attempt #{attempt}.",
                "created_at": now,
                "posted_at": now,
                "updated_at": now,
            }
        )
    return eid


def valid_png(path: Path) -> bool:
    with Image.open(path) as im:
        im.verify()
        return im.format == "PNG"


def test_report_of_a_finished_run_has_every_figure(runs, store, tmp_path):
    spec, run_dir = runs["slow-lr"]
    eid = finish(store, spec, run_dir, server=(4.25, 3, 2))
    exp = store.get(eid)
    page = write_experiment_report(exp, tmp_path / "rep", submissions_for(store, eid))
    html = page.read_text()
    for name in ("curves.png", "confusion.png", "per_class_f1.png"):
        assert valid_png(tmp_path / "rep" / name) and f'src="{name}"' in html
    assert "train.lr" in html and "student.name" in html  # the spec, flattened
    assert "4.2500" in html and "Attempt #2." in html  # the server's result and the submission
    assert "seconds per epoch (mean)" in html
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [int(r["epoch"]) for r in data["history"]] == [1, 2]  # counted from 1
    assert data["metrics"]["confusion"] and data["teacher_per_class_f1"] is None
    assert "no per-class F1 of the teacher probe" in html


def test_teacher_probe_per_class_f1_is_drawn_beside_the_students(runs, store, tmp_path):
    spec, run_dir = runs["slow-lr"]
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["teacher_per_class_f1"] = {c: 0.5 for c in metrics["classes"]}
    (copy / "metrics.json").write_text(json.dumps(metrics))
    eid = finish(store, spec, copy)
    page = write_experiment_report(store.get(eid), tmp_path / "rep", [])
    assert "student and teacher probe" in page.read_text()
    assert valid_png(tmp_path / "rep" / "per_class_f1.png")


def test_names_and_errors_are_escaped(runs, store, tmp_path):
    spec, run_dir = runs["<b>fast</b>-lr"]
    eid = finish(store, spec, run_dir)
    store.update(eid, error="boom <script>alert(1)</script>")
    html = write_experiment_report(store.get(eid), tmp_path / "rep", []).read_text()
    assert "<b>fast" not in html and "&lt;b&gt;fast&lt;/b&gt;-lr" in html
    assert "<script>alert" not in html and "Not submitted" in html


def test_an_unfinished_experiment_gets_a_page_without_figures(store, tmp_path):
    [eid] = store.add([("test", tiny_spec("queued-one"))])
    page = write_experiment_report(store.get(eid), tmp_path / "rep", [])
    assert "No artifacts found" in page.read_text()
    assert not list((tmp_path / "rep").glob("*.png"))
    assert experiment_data(store.get(eid), [])["history"] == []


def test_cli_report(runs, store, settings, tmp_path):
    spec, run_dir = runs["slow-lr"]
    eid = finish(store, spec, run_dir)
    result = CliRunner().invoke(app, ["report", str(eid), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "index.html").exists() and valid_png(tmp_path / "r" / "curves.png")
    assert "Timeline" in (tmp_path / "r" / "index.html").read_text()  # the store's events
    result = CliRunner().invoke(app, ["report", str(eid), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [e["event"] for e in out["timeline"]][:2] == ["enqueued", "stage"]
    assert (
        out["name"] == "slow-lr"
        and Path(out["report"]) == settings.root / "reports" / str(eid) / "index.html"
    )
    result = CliRunner().invoke(app, ["report", "999"])
    assert result.exit_code == 1 and "no experiment 999" in result.output


@pytest.mark.slow
def test_report_and_compare_on_experiments_finished_by_the_local_backend(settings, store, dataset, tmp_path):
    """The whole path: the worker's steps with the real local backend (a training subprocess each)."""
    from kdq import steps

    settings.poll_interval_s = 0.2
    ctx = steps.Context(settings=settings, store=store)
    specs = [tiny_spec("local-a", 1e-3), tiny_spec("local-b", 3e-3)]
    specs = [
        s.model_copy(
            update={
                "data": s.data.model_copy(update={"dataset": "synth"}),
                "submit": s.submit.model_copy(update={"policy": "never"}),
            }
        )
        for s in specs
    ]
    ids = store.add([("test", s) for s in specs])
    deadline = time.time() + 240
    while any(store.get(i).stage is not Stage.DONE for i in ids):
        assert time.time() < deadline, [(i, store.get(i).stage, store.get(i).error) for i in ids]
        for i in ids:
            assert store.get(i).stage is not Stage.FAILED, store.get(i).error
            steps.advance(ctx, i)
        time.sleep(0.2)
    result = CliRunner().invoke(app, ["report", str(ids[0])])
    assert result.exit_code == 0, result.output
    rep = settings.root / "reports" / str(ids[0])
    for name in ("curves.png", "confusion.png", "per_class_f1.png"):
        assert valid_png(rep / name)
    result = CliRunner().invoke(app, ["compare", *map(str, ids), "--html", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "train.lr" in result.output
    for name in ("metrics.png", "per_class_f1.png", "trust.png"):
        assert valid_png(tmp_path / "cmp" / name)


def test_holdout_f1_and_its_interval_are_shown_beside_val_f1(runs, store, tmp_path):
    spec, run_dir = runs["slow-lr"]
    eid = finish(store, spec, run_dir)
    m = store.get(eid).metrics
    lo, hi = m["holdout_f1_ci"]
    html = write_experiment_report(store.get(eid), tmp_path / "rep", []).read_text()
    assert "holdout_f1" in html and f"[{lo:.4f}, {hi:.4f}]" in html
    rows = json.loads(CliRunner().invoke(app, ["results", "--json"]).output)
    assert [(r["holdout_f1"], r["holdout_f1_ci"]) for r in rows] == [(m["holdout_f1"], [lo, hi])]
    table = CliRunner().invoke(app, ["results"]).output
    assert "holdout_f1" in table.splitlines()[0] and f"[{lo:.3f}, {hi:.3f}]" in table
    shown = CliRunner().invoke(app, ["show", str(eid)]).output
    assert "holdout_f1" in shown and f"[{lo:.4f}, {hi:.4f}]" in shown


def test_a_refit_says_it_has_no_holdout_and_whose_expected_score_it_carries(store, tmp_path):
    [parent] = store.add([("test", tiny_spec("parent"))])
    [eid] = store.add([("test", tiny_spec("parent (refit)", lr=2e-3))], columns={"refit_of": parent})
    page = write_experiment_report(store.get(eid), tmp_path / "rep", []).read_text()
    assert f"A refit of experiment {parent}" in page and "no holdout of its\nown" in page
    assert experiment_data(store.get(eid), [])["refit_of"] == parent
