"""Several experiments in one GPU container: what the Modal class's concurrent inputs share.

Modal runs up to ``backend.pack`` inputs of the ``Trainer`` class (jobs/modal_app.py) at once in one
container, one input per experiment, so call ids, retries, timeouts and ``kdq cancel ID`` stay per
experiment. Each input runs ``jobs.container.run_training`` on a thread of its own, and its own training
process. What the inputs of one container share is here: the dataset staged once on the container's
disk, and one lock around the Volume's commit and reload (a commit of one input and the reload of
another must not interleave on one mount).

Cancel: Modal cancels an async input by cancelling its task (``FunctionCall.cancel(
terminate_containers=False)``; ``True`` would end the container and reschedule its neighbours).
``train_input`` then tells the run's thread to stop, which stops its training process and makes the
last commit, and only then lets the cancellation through. Nothing here imports modal.
"""

from __future__ import annotations

import asyncio
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdq import runfolder
from kdq.backends.modal_gateway import DATASET_MARK
from kdq.train.gpu import MEMORY_FRACTION_ENV  # the child reads it (limit_memory)

STOP_POLL_S = 0.5  # how soon a cancelled input stops its training process


class Stopped(Exception):
    """The input was cancelled (``stop`` set): its training process is stopped and its run committed."""


def wait_or_stop(proc: subprocess.Popen, seconds: float, stop: threading.Event | None) -> int | None:
    """The process's exit code if it ends within ``seconds``, else ``None``; ``Stopped`` once ``stop``
    is set (``train_input``: Modal cancelled this input)."""
    end = time.monotonic() + seconds
    while stop is None or not stop.is_set():
        try:
            return proc.wait(timeout=max(0.0, min(STOP_POLL_S, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= end:
                return None
    raise Stopped("the call was cancelled")


class Pack:
    """What the inputs of one container share: the staged datasets and the Volume's lock."""

    def __init__(self, local: Path, pack: int = 1):
        self.local, self.pack = local, pack
        self.lock = threading.RLock()
        self._staged: dict[tuple[str, str], Path] = {}

    def locked(self, fn: Callable[[], None]) -> Callable[[], None]:
        """``fn`` (the Volume's commit or reload) one input at a time."""

        def call() -> None:
            with self.lock:
                fn()

        return call

    def stage(self, data_dir: Path, dest_name: str) -> Path:
        """The dataset on this container's disk, unpacked once from its archive on the Volume for every
        input that needs it (a dataset an older kdq uploaded file by file is read where it is). The
        training then holds no Volume file open for minutes, which would make every commit fail."""
        mark = runfolder.read_json(data_dir / DATASET_MARK) or {}
        if not mark.get("archive"):
            return data_dir
        key = (dest_name, str(mark.get("fingerprint")))
        with self.lock:
            if key not in self._staged:
                dest = self.local / "staged" / str(len(self._staged)) / dest_name  # named as on the Volume
                with tarfile.open(data_dir / mark["archive"]) as tar:
                    tar.extractall(dest, filter="data")
                self._staged[key] = dest
            return self._staged[key]

    def env(self) -> dict[str, str]:
        """The training process's share of the GPU's memory: one student that runs out of it fails
        alone instead of starving its neighbours (a GPU isolates no memory between processes)."""
        return {MEMORY_FRACTION_ENV: f"{1 / self.pack:.4f}"} if self.pack > 1 else {}


async def train_input(run: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """``run(**kwargs, stop=event)`` (``run_training``) on a thread, as one async input of the class.
    A cancelled input (or a preemption, which cancels every task) sets ``stop`` and waits for the thread
    to stop its training process and commit, then lets the cancellation through."""
    stop = threading.Event()
    work = asyncio.ensure_future(asyncio.to_thread(run, **kwargs, stop=stop))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait({work})
        raise
