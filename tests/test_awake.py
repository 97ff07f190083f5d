"""Keep-awake through wakepy (its fake method here), and the worker's sleeps found in its heartbeat."""

from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from kdq.awake import KeepAwake, asleep, slept_line, windows_missed
from kdq.cli.main import app
from kdq.spec import ExperimentSpec


@pytest.fixture
def fake_wakepy(monkeypatch):
    monkeypatch.setenv("WAKEPY_FAKE_SUCCESS", "1")


def test_a_gap_in_the_heartbeat_is_a_sleep():
    assert asleep(None, 100.0, 5.0) is None
    assert asleep(100.0, 106.0, 5.0) is None  # a beat on time
    assert asleep(100.0, 150.0, 5.0) is None  # a slow one (a busy disk), not a sleep
    assert asleep(100.0, 100.0 + 7800.0, 5.0) == 7795.0
    assert asleep(100.0, 200.0, 30.0) is None  # six beats' worth of a slow heartbeat setting
    assert windows_missed(7800.0, 900.0) == 8 and windows_missed(100.0, 0.0) == 0


def test_the_lock_is_held_while_anything_is_live(fake_wakepy):
    awake = KeepAwake()
    awake.update(live=2)
    assert awake.held and awake.mode.active and awake.mode.active_method.name == "WakepyFakeSuccess"
    mode = awake.mode
    awake.update(live=1)
    assert awake.mode is mode  # taken once
    awake.update(live=0)
    assert not awake.held and not mode.active  # released when the queue is empty


def test_allow_sleep_never_takes_it(fake_wakepy):
    awake = KeepAwake(allow_sleep=True)
    awake.update(live=3)
    assert not awake.held


def test_no_method_here_is_said_once(monkeypatch, capsys):
    monkeypatch.setenv("WAKEPY_FORCE_FAILURE", "1")
    awake = KeepAwake()
    awake.update(live=1)
    awake.update(live=1)
    out = capsys.readouterr()
    assert not awake.held and awake.refused
    assert (out.out + out.err).count("cannot keep this machine awake") == 1


def test_a_beat_after_a_sleep_is_recorded_and_shown(fake_wakepy, settings, store):
    store.add([(None, ExperimentSpec(name="queued"))])
    awake = KeepAwake()
    awake.beat(store, settings, now=1_000_000.0)
    assert awake.held
    awake.beat(store, settings, now=1_000_000.0 + 7800.0)  # 2h10m later: the laptop slept
    slept = store.get_meta_json("worker.slept")
    assert slept["windows"] == 8 and slept["seconds"] == 7800.0
    line = slept_line(store, now=1_000_000.0 + 7800.0)
    assert line.startswith("the worker was asleep 2h10m (") and line.endswith("8 submission windows missed")
    assert slept_line(store, now=1_000_000.0 + 7800.0 + 13 * 3600) is None  # old news
    awake.release()


def test_status_shows_a_recent_sleep(settings, store):
    import time

    now = time.time()
    store.set_meta("worker.slept", {"from": now - 3600, "to": now - 60, "seconds": 3540, "windows": 3})
    r = CliRunner().invoke(app, ["status"])
    assert "the worker was asleep 59m" in r.stdout and "3 submission windows missed" in r.stdout
    data = json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout)
    assert data["worker_slept"]["windows"] == 3


def test_the_heartbeat_beats_the_keep_awake(settings, store, monkeypatch):
    from jobs import worker as jobs_worker

    seen = threading.Event()
    monkeypatch.setattr("kdq.awake.KeepAwake.beat", lambda self, store, s: seen.set())
    released = []
    monkeypatch.setattr("kdq.awake.KeepAwake.release", lambda self: released.append(True))
    stop = threading.Event()
    t = threading.Thread(target=jobs_worker._heartbeat, args=(settings, stop, 0.0))
    t.start()
    assert seen.wait(10)
    stop.set()
    t.join(10)
    assert released


def test_a_sleep_is_a_gap_of_the_night(fake_wakepy, settings, store):
    from kdq import gaps

    awake = KeepAwake(allow_sleep=True)
    awake.beat(store, settings, now=1000.0)
    awake.beat(store, settings, now=4600.0)
    (gap,) = gaps.read(store)
    assert (gap["kind"], gap["from"], gap["to"]) == ("asleep", 1000.0, 4600.0)
