"""When and where a training run saves its checkpoint, and the stop a SIGTERM asks for.

    saver = Saver(path, every_s=spec.train.checkpoint_every_s)   # clock: time.monotonic
    signal.signal(signal.SIGTERM, saver.request_stop)             # kdq.train.__main__
    if saver.due(): saver.save(step, state)                       # at an epoch's end
    if saver.stopping: saver.save(step, state); raise Stopped     # after a step (the loop's check)

A checkpoint is written every ``every_s`` seconds at the end of an epoch (0: every epoch), once at
the last epoch, and once at the next step after a SIGTERM (a preemption: the training exits with
``runfolder.EXIT_STOPPED`` and the run resumes there, mid-epoch).
It is written whole or not at all (``runfolder.atomic_path``) to ``path``: the run folder's
checkpoint.pt, or the container's own disk on Modal (jobs/container.py copies it to the Volume).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import cuda

from kdq import runfolder
from kdq.train.step import Step


class Stopped(Exception):
    """The training stopped at a step boundary on request (SIGTERM) and saved its checkpoint."""


class Saver:
    def __init__(self, path: Path, every_s: float, clock: Callable[[], float] = time.monotonic):
        self.path, self.every_s, self.clock = Path(path), every_s, clock
        self.last = clock()
        self.stopping = False
        self.armed = False  # inside the epochs: a SIGTERM waits for the next step

    def request_stop(self, signum: int = signal.SIGTERM, frame=None) -> None:
        """A signal handler: a flag, read by the loop after each step. Before the first step and after
        the last (data, teacher, export), nothing waits for a step: the signal acts as if unhandled."""
        if not self.armed:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.stopping = True

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """Around the epochs: a SIGTERM stops them at the next step (the loop's check)."""
        self.armed = True
        try:
            yield
        finally:
            self.armed = False

    def due(self) -> bool:
        return self.clock() - self.last >= self.every_s

    def save(self, step: Step, state: dict) -> None:
        ck = {
            "model": step.model.state_dict(),
            "opt": step.opt.state_dict(),
            "sched": step.sched.state_dict(),
            "ema": step.ema.state_dict() if step.ema else None,
            "proj": step.proj.state_dict() if step.proj else None,
            "state": state,
            "rng": {
                "cpu": torch.get_rng_state(),
                "cuda": cuda.get_rng_state_all() if cuda.is_initialized() else None,
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with runfolder.atomic_path(self.path) as tmp:
            torch.save(ck, tmp)
        self.last = self.clock()

    def restore(self, step: Step) -> dict | None:
        """The checkpoint loaded into ``step`` (weights, optimizer, schedule, EMA, head; the random
        generators' states, so dropout draws on as if never stopped), and returned (its ``state``: the
        loop's); None when there is none."""
        if not self.path.exists():
            return None
        ck = torch.load(self.path, map_location="cpu", weights_only=False)  # load_state_dict moves them
        step.model.load_state_dict(ck["model"])
        step.opt.load_state_dict(ck["opt"])
        step.sched.load_state_dict(ck["sched"])
        if step.ema and ck.get("ema"):
            step.ema.load_state_dict(ck["ema"])
        if step.proj and ck.get("proj"):
            step.proj.load_state_dict(ck["proj"])
        rng = ck.get("rng") or {}
        if rng.get("cpu") is not None:
            torch.set_rng_state(rng["cpu"])
        if rng.get("cuda") is not None and cuda.is_available():
            cuda.set_rng_state_all(rng["cuda"])
        return ck
