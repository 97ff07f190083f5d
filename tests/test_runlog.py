"""kdq logs: a training's log, whole, its tail, or followed until the training ends; local or Modal."""

from __future__ import annotations

import threading
import time

import pytest
from typer.testing import CliRunner

from kdq import runfolder
from kdq.cli.main import app
from kdq.runlog import follow, tail
from kdq.spec import ExperimentSpec

runner = CliRunner()


def test_tail_and_follow():
    assert tail("a\nb\nc\n", 2) == "b\nc\n" and tail("a\nb\n", 0) == "" and tail("a\n", None) == "a\n"
    texts = iter(["one\n", "one\ntwo\n", "one\ntwo\n", "new attempt\n"])
    states = iter([True, True, True, False])
    out = []
    follow(lambda: next(texts), lambda: next(states), out.append, shown="", sleep=lambda s: None)
    assert out == ["one\n", "two\n", "new attempt\n"]  # a log that starts over is written again


@pytest.fixture
def local_run(settings, store):
    (exp_id,) = store.add([(None, ExperimentSpec(name="a"))])
    run_dir = settings.runs_dir / "r-1"
    run_dir.mkdir(parents=True)
    (run_dir / runfolder.LOG).write_text("".join(f"line {i}\n" for i in range(1, 11)))
    store.update(exp_id, stage="training", run_id="r-1", handle={"run_dir": str(run_dir)})
    return exp_id, run_dir


def test_logs_prints_the_local_log_or_its_tail(settings, store, local_run):
    exp_id, _ = local_run
    r = runner.invoke(app, ["logs", str(exp_id)])
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "line 1" and "line 10" in r.stdout
    r = runner.invoke(app, ["logs", str(exp_id), "--tail", "2"])
    assert r.stdout == "line 9\nline 10\n"


def test_logs_follow_prints_new_lines_until_the_training_ends(settings, store, local_run):
    exp_id, run_dir = local_run

    def train():
        time.sleep(1.5)
        with open(run_dir / runfolder.LOG, "a") as f:
            f.write("epoch 1/2\n")
        time.sleep(1.5)
        with open(run_dir / runfolder.LOG, "a") as f:
            f.write("epoch 2/2\n")
        store.update(exp_id, stage="fetching")

    t = threading.Thread(target=train)
    t.start()
    r = runner.invoke(app, ["logs", str(exp_id), "-f", "-n", "1"])
    t.join()
    assert r.exit_code == 0, r.output
    assert r.stdout == "line 10\nepoch 1/2\nepoch 2/2\n"


def test_logs_of_a_modal_run_come_from_the_volume(settings, store, monkeypatch):
    class Volume:
        def __init__(self, settings):
            pass

        def read_file(self, path):
            assert path == f"runs/m-1/{runfolder.LOG}"
            return b"on the GPU\n"

    monkeypatch.setattr("kdq.backends.modal.ModalGateway", Volume)
    (exp_id,) = store.add([(None, ExperimentSpec(name="m", backend={"kind": "modal"}))])
    store.update(exp_id, stage="done", run_id="m-1")
    r = runner.invoke(app, ["logs", str(exp_id)])
    assert r.exit_code == 0 and r.stdout == "on the GPU\n"


def test_logs_without_a_run_is_one_line(settings, store):
    (exp_id,) = store.add([(None, ExperimentSpec(name="q"))])
    r = runner.invoke(app, ["logs", str(exp_id)])
    assert r.exit_code == 1 and "no run yet (queued)" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["logs", "99"])
    assert r.exit_code == 1 and "no experiment 99" in r.output
