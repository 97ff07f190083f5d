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


def process_state(pid: int) -> str | None:
    """The state letter ``/proc`` gives ``pid`` (R running, S sleeping, T stopped, Z zombie...); ``None``
    when there is no such process; ``"?"`` for a live one where there is no ``/proc`` (macOS)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, a child that ended and was not reaped yet, does not)."""
    return process_state(pid) not in (None, "Z", "X")


def _age(pid: int) -> float | None:
    """How long ``pid`` has run, in seconds (both counts from ``/proc`` are since boot, so a stepped wall
    clock does not move it); ``None`` where it cannot be told."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def silent_worker(store) -> str | None:
    """What a worker whose heartbeat went quiet is doing, when its process is still here (this host, the
    pid of its last beat, started before it): stopped (SIGSTOP, Ctrl-Z) or not responding. ``None``:
    the worker is gone, and "not running" is the truth."""
    beat = store.get_meta_json("worker") or {}
    pid = beat.get("pid")
    if not pid or beat.get("stopped_at") or beat.get("host") != socket.gethostname() or not alive(pid):
        return None
    age = _age(pid)
    if age is not None and age < time.time() - beat.get("started_at", 0) - 5:
        return None  # another process that took the pid after the worker had gone
    if process_state(pid) in ("T", "t"):
        return (
            f"stopped: pid {pid} is suspended (SIGSTOP or Ctrl-Z) and does nothing until "
            f"`kill -CONT {pid}`; a second `kdq worker` is refused while it holds the home"
        )
    silent = time.time() - beat.get("ts", 0)
    return f"not responding: pid {pid} is alive but silent for {silent:.0f} s; `kill {pid}` stops it"
