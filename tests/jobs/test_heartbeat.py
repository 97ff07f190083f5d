"""The worker's heartbeat (jobs/worker.py), fast: tests/jobs/test_worker.py runs real workers (slow)."""

import time

from kdq.store import Store


def test_a_full_disk_does_not_make_a_live_worker_look_dead(settings, monkeypatch):
    """Issue 12, 10: the database refuses the heartbeat; `kdq status` must still see a live worker, and
    the log says so once, not at every beat."""
    import sqlite3
    import threading

    from jobs import worker as entry
    from kdq.homelock import HomeLock, heartbeat_age

    def full(self, key, value):
        raise sqlite3.OperationalError("database or disk is full")

    warnings = []
    monkeypatch.setattr(entry.log, "warning", lambda *a, **k: warnings.append((a, k)))
    settings.heartbeat_s = 0.05
    with Store.open(settings) as store, HomeLock(settings.root):
        entry._beat(store, time.time())  # a beat from before the disk filled up ...
        old = store.get_meta_json("worker")
        old["ts"] -= 3600  # ... an hour ago
        store.set_meta("worker", old)
        monkeypatch.setattr(Store, "set_meta", full)
        stop = threading.Event()
        beat = threading.Thread(target=entry._heartbeat, args=(settings, stop, time.time()))
        beat.start()
        time.sleep(0.5)
        age = heartbeat_age(store)
        stop.set()
        beat.join(5)
    assert not beat.is_alive()
    assert age is not None and age < 5, age
    failed = [k["error"] for a, k in warnings if a == ("heartbeat failed",)]
    assert len(failed) == 1 and failed[0].startswith("disk full (ENOSPC): cannot write "), warnings
    assert str(settings.db_path) in failed[0]


def test_kdq_worker_takes_the_home_lock_before_anything_else(settings, monkeypatch):
    """One worker per home: `run` refuses a held home before it builds a queue or reads a task."""
    import pytest

    from jobs import worker as entry
    from kdq.homelock import HomeLock, HomeLocked

    monkeypatch.setattr(entry.worker, "queue", lambda s: pytest.fail("the worker started on a held home"))
    with HomeLock(settings.root), pytest.raises(HomeLocked, match="another kdq worker is running"):
        entry.run(settings)


def test_a_second_worker_is_refused_when_the_lock_file_was_deleted(settings, monkeypatch):
    """`rm worker.lock` frees the flock for a newcomer; the live worker's heartbeat still refuses it."""
    import os
    import socket
    import subprocess
    import sys

    import pytest

    from jobs import worker as entry
    from kdq.homelock import HomeLocked

    monkeypatch.setattr(entry.worker, "queue", lambda s: pytest.fail("a second worker started"))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with Store.open(settings) as store:
            now = time.time()
            store.set_meta(
                "worker", {"pid": other.pid, "host": socket.gethostname(), "started_at": now, "ts": now}
            )
        assert not (settings.root / "worker.lock").exists()
        with pytest.raises(HomeLocked, match=f"pid {other.pid}"):
            entry.run(settings)
    finally:
        other.kill()
        other.wait()
    assert os.getpid() != other.pid


def test_a_worker_whose_database_was_deleted_stops_with_one_clear_line(settings, monkeypatch):
    import threading

    from jobs import worker as entry

    errors, stopped = [], threading.Event()
    monkeypatch.setattr(entry.log, "error", lambda *a, **k: errors.append(a[0]))
    settings.heartbeat_s = 0.05
    Store.open(settings).close()
    stop = threading.Event()
    beat = threading.Thread(target=entry._heartbeat, args=(settings, stop, time.time(), stopped.set))
    beat.start()
    time.sleep(0.2)
    settings.db_path.unlink()
    assert stopped.wait(5), "the worker carried on against a deleted database"
    stop.set()
    beat.join(5)
    [line] = errors
    assert str(settings.db_path) in line and "stopping" in line
