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
