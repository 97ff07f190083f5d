"""One worker per home: the second is refused with the holder's pid and host; a dead holder frees it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from kdq.homelock import HomeLock, HomeLocked

HOLD = (
    "import sys, time; from kdq.homelock import HomeLock; HomeLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); time.sleep(60)"
)


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_host(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(HomeLocked) as refused:
            HomeLock(tmp_path).acquire()
        assert f"pid {child.pid} on host {socket.gethostname()}" in str(refused.value)
        assert str(tmp_path) in str(refused.value)
        os.kill(child.pid, signal.SIGKILL)  # a crash: the kernel drops the lock, nobody clears it by hand
        child.wait(10)
        deadline = time.monotonic() + 10
        while True:
            try:
                lock = HomeLock(tmp_path).acquire()
                break
            except HomeLocked:
                assert time.monotonic() < deadline, "the lock of a dead process was not released"
                time.sleep(0.05)
        assert f'"pid": {os.getpid()}' in lock.info_path.read_text()
        lock.release()
        assert not lock.info_path.exists()
    finally:
        child.kill()
        child.wait(10)


def _worker_beat(store, pid: int, age_s: float) -> None:
    """The heartbeat a worker with ``pid`` (started just now) wrote ``age_s`` seconds ago."""
    now = time.time()
    store.set_meta("worker", {"pid": pid, "host": socket.gethostname(), "started_at": now, "ts": now - age_s})


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(0.3)
    yield proc
    proc.kill()
    proc.wait(10)


def _kdq(*args):
    from typer.testing import CliRunner

    from kdq.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _until_state(pid: int, state: str) -> None:
    from kdq.homelock import process_state

    deadline = time.time() + 10
    while process_state(pid) != state:
        assert time.time() < deadline, f"pid {pid} never reached state {state}"
        time.sleep(0.01)


def test_a_suspended_worker_is_called_stopped_not_not_running(settings, store, sleeper):
    """A worker stopped with SIGSTOP (Ctrl-Z) beats no more but holds the home: `kdq status` and
    `kdq cancel` say it is stopped and how to resume it, never that no worker runs."""
    from kdq.cli.views import status_header
    from kdq.spec import ExperimentSpec

    os.kill(sleeper.pid, signal.SIGSTOP)
    _until_state(sleeper.pid, "T")  # a signal is delivered a moment later
    _worker_beat(store, sleeper.pid, age_s=600)
    header = "\n".join(status_header(store, settings))
    assert "not running" not in header
    assert f"stopped: pid {sleeper.pid} is suspended" in header and f"kill -CONT {sleeper.pid}" in header
    from kdq.cli.status import status_json

    said = status_json(store, settings, show_all=False)  # scripts learn it too, not only worker_alive
    assert said["worker_alive"] is False and said["worker_silent"].startswith(f"stopped: pid {sleeper.pid}")
    [i] = store.add([(None, ExperimentSpec(name="a"))])
    store.update(i, stage="launching")
    said = _kdq("cancel", i).output
    assert "no worker is running" not in said and f"pid {sleeper.pid} is suspended" in said, said
    os.kill(sleeper.pid, signal.SIGCONT)
    _until_state(sleeper.pid, "S")
    header = "\n".join(status_header(store, settings))
    assert f"not responding: pid {sleeper.pid} is alive but silent" in header


def test_a_gone_worker_or_another_process_with_its_pid_is_not_running(settings, store, sleeper):
    from kdq.cli.views import status_header

    _worker_beat(store, 2**22 + 17, age_s=600)  # no such process
    assert "worker: [red]not running[/red]" in "\n".join(status_header(store, settings))
    now = time.time()  # a live process that started after the worker did: the pid was reused
    store.set_meta(
        "worker",
        {"pid": sleeper.pid, "host": socket.gethostname(), "started_at": now - 3600, "ts": now - 3000},
    )
    os.kill(sleeper.pid, signal.SIGSTOP)
    assert "worker: [red]not running[/red]" in "\n".join(status_header(store, settings))
    os.kill(sleeper.pid, signal.SIGCONT)


@pytest.mark.parametrize("stage", ["submitting", "evaluating"])
def test_cancel_of_an_upload_says_what_can_and_cannot_be_stopped(settings, store, stage):
    """Nothing stops an upload on the wire or a grading: the message says what the cancel does."""
    from kdq.spec import ExperimentSpec

    [i] = store.add([(None, ExperimentSpec(name="a"))])
    store.update(i, stage=stage)
    _worker_beat(store, os.getpid(), age_s=0)
    said = _kdq("cancel", i).output
    assert "the worker stops it" not in said
    if stage == "evaluating":
        assert "already on the course server" in said and "grade is still recorded" in said, said
    else:
        assert "if the server refuses it, it is not sent again" in said, said


def test_a_finished_child_that_was_never_reaped_is_not_still_training(settings):
    """At worker stop, "still training in the background" counted the worker's own zombie child (a run
    that had failed without a verdict, on a full disk) as alive: a zombie is dead."""
    from kdq import runfolder
    from kdq.backends.local import LocalBackend

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    run_dir = settings.runs_dir / "r1"
    runfolder.write_json(run_dir / "launch.json", {"pid": child.pid, "started_at": 0, "cmd": ["python"]})
    deadline = time.time() + 20
    while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.time() < deadline
        time.sleep(0.05)
    try:
        assert LocalBackend(settings).running() == []
    finally:
        child.wait()


def test_kdq_doctor_names_a_suspended_worker(settings, store, sleeper):
    from kdq import doctor
    from kdq.doctor import Env

    os.kill(sleeper.pid, signal.SIGSTOP)
    _until_state(sleeper.pid, "T")
    _worker_beat(store, sleeper.pid, age_s=600)
    check = doctor.check_worker(Env(settings))
    assert not check.ok and f"pid {sleeper.pid} is suspended" in check.detail, check
    os.kill(sleeper.pid, signal.SIGCONT)
