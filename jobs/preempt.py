"""What a preemption needs in the Modal container (jobs/container.py): a SIGTERM taken as an interrupt.

The training writes its checkpoint on the container's own disk (every few minutes, and at the next
step after a SIGTERM: kdq/train/checkpoint.py), in its run folder, which the container copies onto
the Volume before each commit (jobs/mirror.py). ``sigterm_interrupts`` makes a SIGTERM to the
container raise ``KeyboardInterrupt`` as a preemption's SIGINT does, so the container's ``finally``
forwards SIGTERM to the training (its own session: no signal of the container's reaches it) and waits
``container.STOP_GRACE_S`` for that checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


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
