"""``kdq worker``: the Huey consumer of one home, with a heartbeat so ``kdq status`` knows it is alive.

The tasks live in ``kdq.worker`` (imported, never run as ``__main__``, so Huey finds them by name).
Only one worker runs per home: the home lock (``kdq.homelock``) is taken before anything else, and
only its holder clears the task locks a killed predecessor left behind.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from kdq import worker
from kdq.homelock import HomeLock
from kdq.log import get_logger
from kdq.store import Store

log = get_logger("kdq.worker")


def _beat(store: Store, started_at: float, **extra: float) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": started_at}
    store.set_meta("worker", {**holder, "ts": time.time(), **extra})


def _heartbeat(settings, stop: threading.Event, started_at: float) -> None:
    with Store.open(settings) as store:
        while not stop.is_set():
            try:
                _beat(store, started_at)
            except Exception as exc:  # the heartbeat must never take the worker down
                log.warning("heartbeat failed", error=repr(exc))
            stop.wait(settings.heartbeat_s)
        _beat(store, started_at, stopped_at=time.time())


def run(settings) -> None:
    """Run until SIGINT or SIGTERM. ``HomeLocked`` if another worker holds this home."""
    with HomeLock(settings.root):
        q = worker.queue(settings)
        with Store.open(settings) as store:
            names = [worker.lock_name(e.id) for e in store.list()]
        # A worker killed inside a task leaves its lock behind; locks are per experiment: name them all.
        flushed = q.huey.flush_locks(*names)
        if flushed:
            log.info("cleared locks left by a previous worker", locks=sorted(flushed))
        stop = threading.Event()
        beat = threading.Thread(
            target=_heartbeat, args=(settings, stop, time.time()), daemon=True, name="heartbeat"
        )
        beat.start()
        ids = worker.redrive(q, grace_s=-1e9)  # at start, look at every live experiment once
        q.submissions()  # and let the scheduler look at the server
        q.searches()  # and let every search catch up with what ended while no worker ran
        log.info("worker started", home=str(settings.root), live=len(ids), threads=settings.worker_threads)
        consumer = q.huey.create_consumer(
            workers=settings.worker_threads,
            worker_type="thread",
            periodic=True,
            initial_delay=0.1,
            backoff=1.15,
            max_delay=2.0,
            check_worker_health=True,
        )
        try:
            consumer.run()
        finally:
            stop.set()
            beat.join(timeout=5)
            log.info("worker stopped")


if __name__ == "__main__":  # python -m jobs.worker: the same as `kdq worker` (the tasks live in kdq.worker)
    import sys

    from kdq import log as kdqlog
    from kdq.homelock import HomeLocked
    from kdq.settings import get_settings

    settings = get_settings()
    kdqlog.configure(settings.log_json, settings=settings)
    try:
        run(settings)
    except HomeLocked as exc:
        sys.exit(f"error: {exc}")
