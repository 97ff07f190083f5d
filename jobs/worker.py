"""``kdq worker``: the Huey consumer of one home, with a heartbeat so ``kdq status`` knows it is alive.

The tasks live in ``kdq.worker`` (imported, never run as ``__main__``, so Huey finds them by name).
Only one worker runs per home: the home lock (``kdq.homelock``) is taken before anything else, and
only its holder clears the task locks a killed predecessor left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from kdq import worker
from kdq.awake import KeepAwake
from kdq.errors import disk_full
from kdq.homelock import HomeLock, HomeLocked
from kdq.log import get_logger
from kdq.store import Store

log = get_logger("kdq.worker")


def _beat(store: Store, started_at: float, **extra: float) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": started_at}
    store.set_meta("worker", {**holder, "ts": time.time(), **extra})


def _heartbeat(settings, stop: threading.Event, started_at: float, lost=None) -> None:
    """Beat into the database and touch the home lock's file: a full disk refuses the first but not the
    second (a timestamp needs no room), so `kdq status` still sees a live worker. A failing beat is
    logged when it starts failing and when it recovers, not at every beat. A database deleted or
    replaced under the worker ends it (``lost``): it would carry on against a file nobody else sees."""
    lock = HomeLock(settings.root).path
    failing, awake = False, KeepAwake(settings.allow_sleep)  # kdq/awake.py: the lock, and sleeps found
    with Store.open(settings) as store:
        inode = _inode(settings.db_path)
        while not stop.is_set():
            if lost is not None and _inode(settings.db_path) != inode:
                log.error(
                    f"{settings.db_path} was deleted or replaced while this worker ran: stopping (put it "
                    "back and start `kdq worker` again, or `kdq worker --force` for an empty one)"
                )
                awake.release()
                lost()
                return
            try:
                os.utime(lock)
            except OSError:
                pass  # no lock file: a heartbeat outside `kdq worker` (tests)
            try:
                _beat(store, started_at)
                awake.beat(store, settings)
                if failing:
                    log.info("heartbeat recovered")
                failing = False
            except Exception as exc:  # the heartbeat must never take the worker down
                if not failing:
                    log.warning("heartbeat failed", error=disk_full(exc, settings.db_path) or repr(exc))
                failing = True
            stop.wait(settings.heartbeat_s)
        awake.release()
        try:
            _beat(store, started_at, stopped_at=time.time())
        except Exception as exc:
            log.warning("the last heartbeat failed", error=disk_full(exc, settings.db_path) or repr(exc))


def _inode(path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _refuse_a_live_beat(settings) -> None:
    """The lock file can be deleted under a running worker (a cleanup of ``*.lock``), which frees the
    flock for a newcomer: a fresh heartbeat of another live process on this host refuses it too."""
    with Store.open(settings) as store:
        beat = store.get_meta_json("worker") or {}
    pid, host = beat.get("pid"), beat.get("host")
    if not pid or pid == os.getpid() or host != socket.gethostname() or beat.get("stopped_at"):
        return
    if time.time() - beat.get("ts", 0) > 3 * settings.heartbeat_s + 5:
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    except PermissionError:
        pass
    raise HomeLocked(
        f"another kdq worker is running for {settings.root}: pid {pid} on host {host} (its heartbeat is "
        "fresh, though worker.lock was removed); stop it first, or set KDQ_HOME to another folder"
    )


def run(settings) -> None:
    """Run until SIGINT or SIGTERM. ``HomeLocked`` if another worker holds this home."""
    with HomeLock(settings.root):
        _refuse_a_live_beat(settings)
        q = worker.queue(settings)
        with Store.open(settings) as store:
            names = [worker.lock_name(e.id) for e in store.list()]
        # A worker killed inside a task leaves its lock behind; locks are per experiment: name them all.
        flushed = q.huey.flush_locks(*names)
        if flushed:
            log.info("cleared locks left by a previous worker", locks=sorted(flushed))
        consumer = q.huey.create_consumer(
            workers=settings.worker_threads,
            worker_type="thread",
            periodic=True,
            initial_delay=0.1,
            backoff=1.15,
            max_delay=2.0,
            check_worker_health=True,
        )
        # Huey sets its signal handlers only once the consumer runs. A SIGTERM before then (the heartbeat
        # already says "alive") must still be a clean stop: the consumer then starts and ends at once.
        signal.signal(signal.SIGTERM, lambda signum, frame: consumer.stop_flag.set())
        stop = threading.Event()
        beat = threading.Thread(
            target=_heartbeat,
            args=(settings, stop, time.time(), consumer.stop_flag.set),
            daemon=True,
            name="heartbeat",
        )
        beat.start()
        ids = worker.redrive(q, grace_s=-1e9)  # at start, look at every live experiment once
        q.submissions()  # and let the scheduler look at the server
        q.searches()  # and let every search catch up with what ended while no worker ran
        log.info("worker started", home=str(settings.root), live=len(ids), threads=settings.worker_threads)
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
