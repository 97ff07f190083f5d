"""kdq export: the verified model file out, its spec and metrics beside it, its sha256 against the upload."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from kdq import runfolder
from kdq.cli.main import app
from kdq.course.ledger import Ledger
from kdq.spec import ExperimentSpec

runner = CliRunner()


def _model(settings, store, name, val_f1, content: bytes, **fields):
    (exp_id,) = store.add([(None, ExperimentSpec(name=name, train={"seed": len(name)}))])
    art = settings.artifacts_dir / f"run-{exp_id}"
    art.mkdir(parents=True)
    (art / runfolder.MODEL).write_bytes(content)
    metrics = {"val_f1": val_f1, "holdout_f1": val_f1, "holdout_f1_ci": [val_f1 - 0.02, val_f1 + 0.02]}
    metrics["model_mb"] = 3.0
    store.update(exp_id, stage="done", artifacts=str(art), val_f1=val_f1, metrics=metrics, **fields)
    return exp_id


@pytest.fixture
def two(settings, store):
    weak = _model(settings, store, "weak", 0.5, b"weak model")
    strong = _model(settings, store, "strong", 0.8, b"strong model")
    ledger = Ledger(store)
    sub = ledger.open_submission(weak, attempt=3, sha256=hashlib.sha256(b"weak model").hexdigest())
    ledger.update_submission(sub, state="successful", score=2.5)
    return weak, strong


def test_export_by_id_writes_the_file_spec_and_metrics(settings, store, two, tmp_path):
    weak, _ = two
    r = runner.invoke(app, ["export", str(weak), "-o", str(tmp_path / "m.pt"), "--json"])
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert (tmp_path / "m.pt").read_bytes() == b"weak model"
    assert json.loads((tmp_path / "m.spec.json").read_text())["name"] == "weak"
    assert json.loads((tmp_path / "m.metrics.json").read_text())["val_f1"] == 0.5
    assert done["sha256"] == hashlib.sha256(b"weak model").hexdigest()
    assert done["uploads"] == [{"attempt": 3, "sha256": done["sha256"], "same_file": True}]


def test_best_is_by_expected_score_and_live_is_the_graded_one(settings, store, two, tmp_path):
    weak, strong = two
    r = runner.invoke(app, ["export", "--best", "-o", f"{tmp_path}/"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "model.pt").read_bytes() == b"strong model" and "never uploaded" in r.stdout
    r = runner.invoke(app, ["export", "--live", "-o", str(tmp_path / "live.pt")])
    assert r.exit_code == 0 and (tmp_path / "live.pt").read_bytes() == b"weak model"
    assert "uploaded as attempt #3: the same file" in r.stdout


def test_a_changed_file_is_told_apart_from_the_uploaded_one(settings, store, two, tmp_path):
    weak, _ = two
    (settings.artifacts_dir / f"run-{weak}" / runfolder.MODEL).write_bytes(b"overwritten")
    r = runner.invoke(app, ["export", str(weak), "-o", str(tmp_path / "m.pt")])
    assert "a DIFFERENT file" in r.stdout


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--best", "--live"], 2, "name one experiment"),
        ([], 2, "name one experiment"),
        (["--live"], 1, "nothing is live"),
        (["99"], 1, "no experiment 99"),
    ],
)
def test_bad_requests_are_one_line(settings, store, args, code, needle, tmp_path):
    store.add([(None, ExperimentSpec(name="q"))])
    r = runner.invoke(app, ["export", *args, "-o", str(tmp_path / "m.pt")])
    assert r.exit_code == code and needle in r.output and "Traceback" not in r.output


def test_no_model_yet_or_no_folder(settings, store, two, tmp_path):
    (queued,) = store.add([(None, ExperimentSpec(name="q"))])
    r = runner.invoke(app, ["export", str(queued), "-o", str(tmp_path / "m.pt")])
    assert r.exit_code == 1 and "has no verified model file yet" in r.output
    r = runner.invoke(app, ["export", str(two[0]), "-o", str(tmp_path / "nope" / "m.pt")])
    assert r.exit_code == 1 and "is not a folder" in r.output
