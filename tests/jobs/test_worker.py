"""A real `kdq worker` process against the local backend: to done, through SIGKILL, under load."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.stages import Stage
from kdq.store import Store

pytestmark = pytest.mark.slow
KDQ = [sys.executable, "-c", "from kdq.cli.main import app; app()"]


def start_worker(settings, log: Path) -> subprocess.Popen:
    env = {**os.environ, "KDQ_HOME": str(settings.home), "KDQ_POLL_INTERVAL_S": "0.5", "KDQ_HEARTBEAT_S": "1"}
    return subprocess.Popen(
        [*KDQ, "worker", "--log-json"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def stages(settings) -> list[Stage]:
    with Store.open(settings) as store:
        return [e.stage for e in store.list()]


def enqueue(settings, *args):
    r = CliRunner().invoke(app, [*map(str, args)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def sweep(tiny_spec_file: Path) -> Path:
    text = tiny_spec_file.read_text().replace("epochs = 2", "epochs = 6")
    tiny_spec_file.write_text(text + '\n[sweep]\n"train.lr" = [0.001, 0.003, 0.01]\n')
    return tiny_spec_file


def test_sweep_reaches_done_through_a_sigkilled_worker(settings, dataset, sweep, tmp_path):
    enqueue(settings, "enqueue", sweep)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    try:
        wait_for(lambda: Stage.TRAINING in stages(settings), 60, "a training experiment")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        with Store.open(settings) as store:
            running = [e for e in store.list() if e.stage is Stage.TRAINING]
            assert running
        worker = start_worker(settings, log)
        try:
            wait_for(lambda: all(s is Stage.DONE for s in stages(settings)), 240, "every experiment done")
        except AssertionError:
            with Store.open(settings) as store:
                for e in store.list():
                    print(e.id, e.stage, e.error, [ev["message"] for ev in store.events(e.id)])
            print(log.read_text()[-3000:])
            raise
    finally:
        worker.kill()
        worker.wait(10)
    results = json.loads(CliRunner().invoke(app, ["results", "--json"]).stdout)
    assert len(results) == 3 and all(0 <= r["val_f1"] <= 1 for r in results)
    with Store.open(settings) as store:
        for exp in store.list():
            assert exp.attempt == 1
            launches = [e for e in store.events(exp.id) if e["message"].startswith("launched run")]
            assert len(launches) == 1, "launched twice"
            launch = json.loads((settings.runs_dir / exp.run_id / "launch.json").read_text())
            assert launch["pid"] == exp.handle["pid"], "a second training process was started"
            assert (Path(exp.artifacts) / "model.pt").exists()
    assert sorted(p.name for p in settings.runs_dir.iterdir()) == sorted(
        f"{Store.open(settings).instance}-e{i}-a1" for i in (1, 2, 3)
    )


def test_sigterm_stops_the_worker_cleanly_and_status_says_so(settings, tmp_path):
    worker = start_worker(settings, tmp_path / "worker.log")
    status = lambda: json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout)  # noqa: E731
    wait_for(lambda: status()["worker_alive"], 60, "the heartbeat")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert status()["worker_alive"] is False


def test_two_hundred_enqueues_while_the_worker_runs(settings, tmp_path):
    """Each experiment fails at launch in milliseconds (its dataset is not there), so the worker writes
    as often as the enqueues do. `kdq enqueue` refuses such a spec, so the rows go in as it would put
    them (Store.add, then the nudge), as if the dataset had been removed after enqueue."""
    from kdq.spec import ExperimentSpec
    from kdq.worker import nudge

    spec = tmp_path / "nodata.toml"
    spec.write_text('[data]\ndataset = "absent"\n[teacher]\nkind = "none"\n[distill]\nloss = "ce"\n')
    refused = CliRunner().invoke(app, ["enqueue", str(spec)])
    assert refused.exit_code == 1 and "data.dataset = 'absent': no dataset at" in refused.stderr
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    nodata = {"data": {"dataset": "absent"}, "teacher": {"kind": "none"}, "distill": {"loss": "ce"}}
    try:
        for k in range(200):
            one = ExperimentSpec.model_validate({**nodata, "name": f"nodata-{k}", "train": {"seed": k}})
            with Store.open(settings) as store:
                ids = store.add([(str(spec), one)])
            nudge(ids, settings)
        wait_for(lambda: stages(settings).count(Stage.FAILED) == 200, 180, "200 experiments processed")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    text = log.read_text()
    assert "database is locked" not in text
    with Store.open(settings) as store:
        exps = store.list()
        assert len(exps) == 200
        assert {e.spec.train.seed for e in exps} == set(range(200))
        assert all("dataset 'absent' not found" in e.error for e in exps)
