"""What a preemption needs in the Modal container (jobs/container.py): the training's checkpoint
copied from the container's disk to the Volume, and a SIGTERM taken as an interrupt.

The training writes its checkpoint on the container's own disk (every few minutes, and at the next
step after a SIGTERM: kdq/train/checkpoint.py); ``CheckpointCopy`` stages the Volume's copy there when
the run resumes and copies it back, whole, before a commit whenever it changed. ``sigterm_interrupts``
makes a SIGTERM to the container raise ``KeyboardInterrupt`` as a preemption's SIGINT does, so the
container's ``finally`` forwards SIGTERM to the training (its own session: no signal of the container's
reaches it) and waits ``container.STOP_GRACE_S`` for that checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdq import runfolder


class CheckpointCopy:
    """checkpoint.pt in ``local_dir`` (the training's) and in ``run_dir`` (the Volume's run folder)."""

    def __init__(self, local_dir: Path, run_dir: Path):
        self.local, self.remote = Path(local_dir) / runfolder.CHECKPOINT, Path(run_dir) / runfolder.CHECKPOINT
        if self.remote.exists():  # the run resumes: from the Volume's checkpoint
            self.local.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.remote, self.local)
        self.seen = self._state()

    def _state(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.local)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def __call__(self) -> None:
        """Copy it to the Volume if it changed (the training renames a new one in: never half)."""
        if (now := self._state()) is None or now == self.seen:
            return
        with runfolder.atomic_path(self.remote) as tmp:
            shutil.copyfile(self.local, tmp)
        self.seen = now


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} to the container")


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside: a SIGTERM raises ``KeyboardInterrupt``. Signals reach only the main thread; on any
    other (the tests' fake Modal runs containers on threads) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
