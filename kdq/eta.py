"""How long: each training's elapsed and remaining time, and when the night's queue should be empty. Pure.

    eta = Eta.of(progress, attempt_start, now, typical_epoch_s)   # one experiment in flight
    eta.cell()                                                     # "3/10 4m+9m", "teacher 3,200/10,000"
    queue_empty_at(running, queued, slots, now)                   # the launch gate's order, simulated

A training's remaining time is its epochs still to go times its seconds per epoch (``progress.json``'s
``epoch_s``, the mean of the epochs so far; else the attempt's time over the epochs done). Inside the
teacher phase, the pictures embedded so far (``embedded`` of ``to_embed``) give that phase's pace. A
queued experiment is expected to take what finished ones of its backend took per epoch, times its
epochs (``typical_epoch_s``); with nothing finished yet there is no estimate, and none is made up.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import median


def short(seconds: float | None) -> str:
    """``45s``, ``12m``, ``2h10m``."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s < 90:
        return f"{s}s"
    if s < 5400:
        return f"{round(s / 60)}m"
    h, m = divmod(round(s / 60), 60)
    return f"{h}h{m:02d}m"


@dataclass(frozen=True)
class Eta:
    phase: str
    elapsed_s: float | None
    remaining_s: float | None
    done: int | None = None  # epochs, or pictures embedded in the teacher phase
    total: int | None = None

    @classmethod
    def of(
        cls, progress: Mapping | None, started: float | None, now: float, typical_epoch_s: float | None = None
    ) -> Eta:
        """A training in flight: ``progress`` (progress.json), ``started`` (its attempt's launch)."""
        p = progress or {}
        elapsed = None if started is None else max(0.0, now - started)
        epoch, epochs = int(p.get("epoch") or 0), p.get("epochs")
        epoch_s = p.get("epoch_s") or (
            (p["updated_at"] - started) / epoch
            if epoch and started and p.get("updated_at")
            else typical_epoch_s
        )
        after_teacher = None if epochs is None or epoch_s is None else (epochs - epoch) * epoch_s
        if p.get("phase") == "teacher" and p.get("to_embed"):
            done, todo = int(p.get("embedded") or 0), int(p["to_embed"])
            phase_s = p.get("teacher_s")  # seconds since the teacher phase started, at the last update
            left = None
            if done and phase_s is not None:
                left = (todo - done) * phase_s / done - max(0.0, now - p.get("updated_at", now))
                left = max(0.0, left) + (after_teacher or 0.0) if after_teacher is not None else None
            return cls("teacher", elapsed, left, done, todo)
        if p.get("phase") in ("data", "teacher"):  # no pictures counted: the phase and its time
            return cls(p["phase"], elapsed, None)
        if p.get("phase") in ("export", "done"):
            return cls(p["phase"], elapsed, 0.0, epoch, epochs)
        if after_teacher is not None and epoch and p.get("updated_at"):  # the epoch under way counts
            after_teacher = max(0.0, after_teacher - max(0.0, now - p["updated_at"]))
        return cls(p.get("phase") or "launching", elapsed, after_teacher, epoch, epochs)

    def cell(self) -> str:
        """The status table's cell: progress, then elapsed+remaining."""
        if self.phase == "teacher" and self.total:
            what = f"teacher {self.done or 0:,}/{self.total:,}"
        elif self.total:
            what = f"{self.done or 0}/{self.total}"
        else:
            what = self.phase
        if self.elapsed_s is None:
            return what
        if self.remaining_s is None or self.phase in ("export", "done"):
            return f"{what} {short(self.elapsed_s)}"
        return f"{what} {short(self.elapsed_s)}+{short(self.remaining_s)}"

    def as_json(self) -> dict:
        def r(x):
            return None if x is None else round(x, 1)

        return {
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "elapsed_s": r(self.elapsed_s),
            "remaining_s": r(self.remaining_s),
        }


def typical_epoch_s(finished: Iterable[tuple[float, int]]) -> float | None:
    """Median seconds per epoch of finished trainings, given as ``(attempt seconds, epochs run)``."""
    per = [s / n for s, n in finished if n and s > 0]
    return median(per) if per else None


def queue_empty_at(
    running: Iterable[float | None], queued: Iterable[float | None], slots: int, now: float
) -> float | None:
    """When the last of these trainings should end: ``running`` (seconds each has left) hold their slots,
    then ``queued`` (seconds each will take, in launch order) take the first slot free. ``None`` when
    any of them has no estimate; ``now`` when there is nothing to wait for."""
    running, queued = list(running), list(queued)
    if any(x is None for x in running + queued):
        return None
    free = [0.0] * max(0, slots - len(running)) + sorted(running)  # seconds from now each slot frees
    heapq.heapify(free)
    end = max(free, default=0.0)
    for seconds in queued:
        start = heapq.heappop(free) if free else end
        heapq.heappush(free, start + seconds)
        end = max(end, start + seconds)
    return now + end
