"""Exactly one upload per decision, whatever fails: a slow server, a kill during that slow upload, a
second worker, a model swapped after validation, a server that restarts without its state, a full
disk during an upload, a server clock hours ahead. Each is a real ``kdq worker`` process against the
stand-in; each counts the POSTs the stand-in received (the ones lost in a restart included).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdq.stages import Stage

from .conftest import HERE

pytestmark = pytest.mark.slow
SLOW = {"KDQ_REQUEST_TIMEOUT_S": "4"}  # the client gives up after 4 s; the stand-in records after 8


def posts(h) -> int:
    """Every upload that reached the stand-in, answered or not."""
    return sum(1 for r in h.server.course.requests if r["route"] == "submit" and r["method"] == "POST")


def wait_out_the_stall(h, started: float, stall_s: float) -> None:
    """Until the stand-in has recorded or refused every upload it was holding."""
    time.sleep(max(0.0, started + stall_s + 2 - time.time()))
    h.wait_finished(60)


def attempts_of(h, exp_id: int) -> list[dict]:
    return list(
        h.store.db.query("select attempt, state from submissions where exp_id = ? order by id", [exp_id])
    )


def test_a_slow_server_that_records_after_the_timeout_gets_one_upload(overnight, tiny_model):
    h = overnight(extra_env=SLOW)
    h.server.inject("stall", seconds=8, route="submit", when="read")
    ids = [h.place(tiny_model, val_f1=0.6)]
    started = time.time()
    h.start_worker()
    h.wait_finished(120)
    wait_out_the_stall(h, started, 8)
    h.check_delivered(ids)
    assert posts(h) == 1, h.report()
    assert any("went through" in e["message"] for e in h.store.events(ids[0])), h.report()


def test_sigkill_during_a_slow_upload_then_a_restart_gets_one_upload(overnight, tiny_model):
    h = overnight(extra_env=SLOW)
    h.server.inject("stall", seconds=8, route="submit", when="read")
    ids = [h.place(tiny_model, val_f1=0.6)]
    h.start_worker()
    h.wait_stage(ids[0], Stage.SUBMITTING, 60)
    started = time.time()
    time.sleep(1.0)  # the upload has been read by the stand-in, which records it in 7 s
    h.signal(signal.SIGKILL)
    h.start_worker()
    h.wait_finished(120)
    wait_out_the_stall(h, started, 8)
    h.check_delivered(ids)
    assert posts(h) == 1, h.report()


def test_a_second_worker_refuses_to_start_and_leaves_the_upload_alone(overnight, tiny_model):
    h = overnight()
    h.server.inject("stall", seconds=8, route="submit", when="read")  # the first worker waits for its answer
    ids = [h.place(tiny_model, val_f1=0.6)]
    h.start_worker()
    h.wait_stage(ids[0], Stage.SUBMITTING, 60)
    started = time.time()
    second = subprocess.Popen(
        [sys.executable, str(HERE / "worker_entry.py")],
        env=h.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        said, _ = second.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        second.kill()
        second.communicate(timeout=10)
        raise AssertionError(f"a second worker started and kept running\n{h.report()}") from None
    assert second.returncode != 0, said
    assert f"pid {h.worker.pid}" in said and socket.gethostname() in said and "Traceback" not in said, said
    h.wait_finished(120)
    wait_out_the_stall(h, started, 8)
    h.check_delivered(ids)
    assert posts(h) == 1, h.report()


def test_a_model_replaced_after_validation_is_never_uploaded(overnight):
    h = overnight()
    [i] = h.enqueue(1, policy="manual")
    h.start_worker()
    h.wait_stage(i, Stage.READY, 180)
    model = Path(h.get(i).artifacts) / "model.pt"
    model.write_bytes(os.urandom(model.stat().st_size))  # the same size: only the hash can tell
    h.cli("submit", i)
    h.wait_stage(i, Stage.FAILED, 60)
    assert "changed after validation" in h.get(i).error and "nothing was uploaded" in h.get(i).error
    assert posts(h) == 0 and h.server.course.submissions == [], h.report()


def test_a_server_restart_without_state_never_gives_one_experiment_anothers_grade(overnight, tiny_model):
    h = overnight(eval_delay_s=60)
    a = h.place(tiny_model, val_f1=0.6)
    h.start_worker()
    h.wait(lambda: (attempts_of(h, a) or [{}])[-1].get("state") == "evaluating", 60, "the first upload")
    h.wait(
        lambda: h.store.db.execute("select recorded_at from submissions where exp_id = ?", [a]).fetchone()[0],
        30,
        "the first attempt seen on the status list",
    )
    h.server.course.eval_delay_s = 0
    h.server.restart(0.5)  # attempt #1 is lost, and the next upload is attempt #1 again
    b = h.place(tiny_model, val_f1=0.7)
    h.wait_finished(120)
    [graded] = h.server.course.submissions
    assert h.get(b).stage is Stage.DONE and h.get(b).server_score == pytest.approx(graded.score)
    lost = h.get(a)
    assert lost.stage is Stage.DONE and lost.server_score is None, h.report()
    assert "no longer on the server's status list" in h.store.events(a)[-1]["message"]
    assert attempts_of(h, a) == [{"attempt": 1, "state": "lost"}]
    assert "course.list_restarted" in h.log.read_text()
    assert posts(h) == 2, h.report()  # one per decision


def test_a_full_disk_during_an_upload_is_named_retried_and_shown(overnight, tiny_model):
    h = overnight(extra_env={"KDQ_TEST_DISK_FULL_S": "5"})
    ids = [h.place(tiny_model, val_f1=0.6), h.place(tiny_model, val_f1=0.5)]
    h.start_worker()
    h.wait_finished(150)
    assert [h.get(i).stage for i in ids] == [Stage.DONE, Stage.DONE], h.report()
    assert sorted(s.attempt for s in h.server.course.submissions) == [1, 2] and posts(h) == 2, h.report()
    log = h.log.read_text()
    assert "disk full (ENOSPC)" in log and str(h.settings.db_path) in log, log[-3000:]
    shown = h.cli("status").stdout
    assert "recovered" in shown and "disk full (ENOSPC)" in shown, shown


def test_server_times_hours_ahead_are_clamped_and_do_not_block_the_window(overnight, tiny_model):
    h = overnight(clock_ahead_s=5 * 3600)  # a server that writes UTC and calls it Eastern
    ids = [h.place(tiny_model, val_f1=0.6), h.place(tiny_model, val_f1=0.7)]
    h.start_worker()
    h.wait_finished(90)
    h.check_delivered(ids)
    assert "ahead of this machine" in h.log.read_text()
