"""One worker per home: an exclusive ``flock`` on ``$KDQ_HOME/worker.lock``, held for the worker's life.

The kernel drops the lock when its process ends, however it ends (SIGKILL included), so a crashed
worker never leaves a stale lock and no worker ever clears one held by a live process. Beside it,
``worker.lock.json`` says who holds it (pid, host, since), for the message a second worker prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from kdq import runfolder


class HomeLocked(Exception):
    """Another worker holds this home."""


class HomeLock:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / "worker.lock"
        self.info_path = self.root / "worker.lock.json"
        self._fd: int | None = None

    def acquire(self) -> HomeLock:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HomeLocked(self._held_by()) from None
        self._fd = fd
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        runfolder.write_json(self.info_path, holder)
        return self

    def _held_by(self) -> str:
        try:
            holder = json.loads(self.info_path.read_text())
            who = f"pid {holder['pid']} on host {holder['host']}"
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            who, since = "another process", "unknown"
        return (
            f"another kdq worker is running for {self.root}: {who} (since {since}); "
            "stop it first, or set KDQ_HOME to another folder"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        self.info_path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> HomeLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def heartbeat_age(store) -> float | None:
    """Seconds since the worker's last heartbeat; ``None`` if no worker is running.

    The worker also touches its home lock's file at each beat: on a full disk the database keeps the
    last beat it could write, the file's time keeps moving."""
    beat = store.get_meta_json("worker")
    if not beat or beat.get("stopped_at"):
        return None
    try:
        touched = HomeLock(store.path.parent).path.stat().st_mtime
    except OSError:
        touched = 0.0
    return time.time() - max(beat["ts"], touched)
