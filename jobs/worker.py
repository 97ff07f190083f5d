"""``kdq worker``: the Huey consumer, with a heartbeat so ``kdq status`` knows it is alive.

Import, never run as ``__main__``: tasks must be registered under ``jobs.tasks``.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from kdq.log import get_logger
from kdq.store import Store

log = get_logger("kdq.worker")


def _heartbeat(settings, stop: threading.Event, started_at: float) -> None:
    with Store.open(settings) as store:
        while not stop.is_set():
            try:
                store.set_meta(
                    "worker",
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "started_at": started_at,
                        "ts": time.time(),
                    },
                )
            except Exception as exc:  # the heartbeat must never take the worker down
                log.warning("heartbeat failed", error=repr(exc))
            stop.wait(settings.heartbeat_s)
        store.set_meta(
            "worker",
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": started_at,
                "ts": time.time(),
                "stopped_at": time.time(),
            },
        )


def run() -> None:
    from jobs import tasks

    settings = tasks.settings
    with Store.open(settings) as store:
        names = [tasks.lock_name(e.id) for e in store.list()]
    # A worker killed inside a task leaves its lock behind; lock names are per experiment, so name them all.
    flushed = tasks.huey.flush_locks(*names, tasks.SUBMISSIONS_LOCK, tasks.SEARCH_LOCK)
    if flushed:
        log.info("cleared locks left by a previous worker", locks=sorted(flushed))
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(settings, stop, time.time()), daemon=True, name="heartbeat"
    )
    beat.start()
    ids = tasks.redrive(grace_s=-1e9)  # at start, look at every live experiment once
    tasks.submissions()  # and let the scheduler look at the server
    tasks.searches()  # and let every search catch up with what ended while no worker ran
    log.info("worker started", home=str(settings.root), live=len(ids), threads=settings.worker_threads)
    consumer = tasks.huey.create_consumer(
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


def heartbeat_age(store: Store) -> float | None:
    """Seconds since the worker's last heartbeat; ``None`` if no worker is running."""
    beat = store.get_meta_json("worker")
    if not beat or beat.get("stopped_at"):
        return None
    return time.time() - beat["ts"]
