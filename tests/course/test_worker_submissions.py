"""A real ``kdq worker`` process submits ready models to the stand-in: best first, one per window,
and through a SIGKILL in the middle of an upload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdq.course.fake_server import FakeServer
from kdq.stages import Stage
from kdq.store import Store

from .test_scheduler import make_ready

pytestmark = pytest.mark.slow
KDQ = [sys.executable, "-c", "from kdq.cli.main import app; app()"]


def start_worker(settings, url: str, token: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "KDQ_HOME": str(settings.home),
        "KDQ_SERVER_URL": url,
        "KDQ_TOKEN": token,
        "KDQ_TEAM": "Team Rocket",
        "KDQ_SUBMIT_INTERVAL_S": "1",
        "KDQ_STATUS_INTERVAL_S": "0.2",
        "KDQ_POLL_INTERVAL_S": "0.5",
        "KDQ_HEARTBEAT_S": "1",
    }
    return subprocess.Popen(
        [*KDQ, "worker", "--log-json"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)


def wait_until_done(settings, ids, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with Store.open(settings) as store:
            if all(store.get(i).stage is Stage.DONE for i in ids):
                return
        time.sleep(0.2)
    with Store.open(settings) as store:
        raise AssertionError(f"not done after {timeout} s: {[(i, str(store.get(i).stage)) for i in ids]}")


def check_results(settings, srv, ids, token, log) -> None:
    assert len(srv.course.submissions) == len(ids), "a submission was made twice"
    with Store.open(settings) as store:
        order = sorted(ids, key=lambda i: store.get(i).server_attempt)
        assert [store.get(i).val_f1 for i in order] == [0.9, 0.8, 0.7]  # best first
        assert all(store.get(i).server_score is not None for i in ids)
        # only the live (latest) submission is on the leaderboard: the superseded ones keep no rank
        assert [store.get(i).server_rank for i in order] == [None] * (len(ids) - 1) + [1]
    assert token not in log.read_text()


@pytest.fixture
def srv(dataset_dir, token):
    with FakeServer(
        teams={"Team Rocket": token}, data_dir=dataset_dir, submit_interval_s=1, status_interval_s=0.2
    ) as s:
        yield s


def test_worker_submits_ready_models_best_first(settings, srv, models, token, tmp_path):
    with Store.open(settings) as store:
        ids = [make_ready(store, tmp_path, models["perfect"], f, "always") for f in (0.7, 0.9, 0.8)]
    log = tmp_path / "worker.log"
    worker = start_worker(settings, srv.url, token, log)
    try:
        wait_until_done(settings, ids, 90)
    finally:
        stop(worker)
    check_results(settings, srv, ids, token, log)


def test_worker_killed_mid_upload_resumes_without_a_second_post(settings, srv, models, token, tmp_path):
    with Store.open(settings) as store:
        ids = [make_ready(store, tmp_path, models["perfect"], f, "always") for f in (0.7, 0.9, 0.8)]
    srv.inject("stall", seconds=60, route="submit", when="after")  # the first upload lands, its answer hangs
    log = tmp_path / "worker.log"
    worker = start_worker(settings, srv.url, token, log)
    try:
        deadline = time.time() + 60
        while not srv.course.submissions and time.time() < deadline:
            time.sleep(0.05)
        assert srv.course.submissions, "the first upload never came"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        srv.clear_faults()
        worker = start_worker(settings, srv.url, token, log)
        wait_until_done(settings, ids, 45)
    finally:
        stop(worker)
    check_results(settings, srv, ids, token, log)
