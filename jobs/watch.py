"""The training process as the container watches it: its log copied to the Volume and echoed, a stall
noticed, a stop that escalates, and the last commit tried again while another file on the mount is open.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tenacity import Retrying, stop_after_delay, wait_exponential

from kdq import runfolder


def echo(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


class LogCopy:
    """Appends what the training process wrote to its local log onto the Volume's log.txt, each time
    opening and closing that file (a commit leaves out, and its reload fails on, an open file), and
    echoes it on the container's stdout, which is what `modal app logs` and the dashboard show."""

    def __init__(self, local: Path, remote: Path, echo: Callable[[bytes], None] = echo):
        self.local, self.remote, self.echo, self.done = local, remote, echo, 0

    def __call__(self) -> None:
        if not self.local.exists():
            return
        with open(self.local, "rb") as f:
            f.seek(self.done)
            new = f.read()
        if new:
            with open(self.remote, "ab") as out:
                out.write(new)
            self.done += len(new)
            self.echo(new)


class Watchdog:
    """A training that wrote no progress.json and no log line for ``stall_s`` hangs (a stuck read, a
    CUDA hang, a deadlocked decode pool): the container's heartbeat alone would keep paying for it."""

    def __init__(self, files: tuple[Path, ...], stall_s: float):
        self.files, self.stall_s = files, stall_s
        self.seen, self.since = self._state(), time.monotonic()

    def _state(self) -> tuple:
        return tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None for p in self.files)

    def stalled(self) -> bool:
        if (now := self._state()) != self.seen:
            self.seen, self.since = now, time.monotonic()
        return time.monotonic() - self.since > self.stall_s


def stall_error(run_dir: Path, stall_s: float) -> str:
    progress = runfolder.read_json(run_dir / runfolder.PROGRESS) or {}
    where = f"phase {progress.get('phase') or 'start'!r}"
    if progress.get("epochs"):
        where += f" (epoch {progress.get('epoch', 0)}/{progress['epochs']})"
    return (
        f"stalled in {where}: no progress and no log output for {stall_s / 60:g} min, so the training "
        "process was stopped (a hung run bills its GPU until backend.timeout_min); `kdq retry ID` "
        "resumes from its last checkpoint"
    )


def stop_child(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def last_commit(commit: Callable[[], None], within_s: float, first_wait_s: float) -> None:
    """``commit``, tried again (waits doubling from ``first_wait_s``) until ``within_s`` has passed: a
    refusal for a file that is open elsewhere on the mount ends when that file is closed."""
    retrying = Retrying(
        stop=stop_after_delay(within_s),
        wait=wait_exponential(multiplier=first_wait_s, max=15.0),
        reraise=True,
    )
    retrying(commit)
