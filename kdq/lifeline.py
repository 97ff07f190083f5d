"""A helper process that ends with the process that started it (``python -m kdq.verify --parent PID``).

A worker killed with SIGKILL cannot stop its children; a child started for the worker alone (the
verifier) would run on, reparented to init, and a kill loop piles them up. The child calls
``die_with(parent)`` first thing: the kernel's parent-death signal on Linux, a thread that watches the
parent's pid elsewhere, and an exit at once when the parent is already gone.
"""

from __future__ import annotations

import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    try:
        import ctypes

        kernel = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (AttributeError, OSError):  # not Linux
        kernel = False
    if os.getppid() != parent:  # it died before the signal was asked for
        os._exit(1)
    if not kernel:
        threading.Thread(target=_watch, args=(parent,), daemon=True, name="lifeline").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
