"""The stage machine: which stage follows which. Pure: no I/O, no clock.

queued → launching → training → fetching → validating → ready → submitting → evaluating → done
any live stage → failed | cancelled;  ready → skipped | done;  training → pruned (a search's pruner)
failed | cancelled | skipped | pruned → queued (retry)
submitting → ready (put back) | done (outcome unknown for good);  done | skipped → ready (`kdq submit ID`)
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    QUEUED = "queued"
    LAUNCHING = "launching"
    TRAINING = "training"
    FETCHING = "fetching"
    VALIDATING = "validating"
    READY = "ready"
    SUBMITTING = "submitting"
    EVALUATING = "evaluating"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    PRUNED = "pruned"  # a search trial its pruner stopped early (kdq.search)


PIPELINE: tuple[Stage, ...] = (
    Stage.QUEUED,
    Stage.LAUNCHING,
    Stage.TRAINING,
    Stage.FETCHING,
    Stage.VALIDATING,
    Stage.READY,
    Stage.SUBMITTING,
    Stage.EVALUATING,
    Stage.DONE,
)
TERMINAL = frozenset({Stage.DONE, Stage.FAILED, Stage.CANCELLED, Stage.SKIPPED, Stage.PRUNED})
LIVE = frozenset(set(Stage) - TERMINAL)
RETRYABLE = frozenset({Stage.FAILED, Stage.CANCELLED, Stage.SKIPPED, Stage.PRUNED})
# Still on its way to a model: queued or training (what is left of the night).
WORKING = frozenset({Stage.QUEUED, Stage.LAUNCHING, Stage.TRAINING, Stage.FETCHING, Stage.VALIDATING})
# Once submitted, a model is on the server: cancelling cannot take it back.
SUBMITTED = frozenset({Stage.SUBMITTING, Stage.EVALUATING})


def next_stage(stage: Stage) -> Stage:
    """The stage after ``stage`` on the happy path."""
    i = PIPELINE.index(stage)
    if i + 1 >= len(PIPELINE):
        raise ValueError(f"{stage} has no next stage")
    return PIPELINE[i + 1]


def can_move(src: Stage, dst: Stage) -> bool:
    """Whether ``src → dst`` is a legal transition."""
    if src in TERMINAL:
        if dst is Stage.READY:  # `kdq submit ID` of a validated model
            return src in (Stage.DONE, Stage.SKIPPED)
        return dst is Stage.QUEUED and src in RETRYABLE
    if dst in (Stage.FAILED, Stage.CANCELLED):
        return True
    if dst is Stage.PRUNED:
        return src is Stage.TRAINING
    if src is Stage.READY and dst in (Stage.SKIPPED, Stage.DONE):
        return True
    if src is Stage.SUBMITTING and dst is Stage.READY:  # a submission put back (rate limit, server down)
        return True
    if src is Stage.SUBMITTING and dst is Stage.DONE:  # its outcome unknown for good: never sent again
        return True
    if src is Stage.LAUNCHING and dst is Stage.QUEUED:  # a login is missing (kdq/pause.py): back in line
        return True
    return dst is next_stage(src)


def after_ready(policy: str) -> Stage | None:
    """Where a validated experiment goes under its submission policy; ``None``: the scheduler decides."""
    if policy == "never":
        return Stage.DONE
    return None


class IllegalTransition(ValueError):
    def __init__(self, src: Stage, dst: Stage):
        super().__init__(f"cannot move an experiment from {src} to {dst}")
        self.src, self.dst = src, dst


def check_move(src: Stage, dst: Stage) -> None:
    if not can_move(src, dst):
        raise IllegalTransition(src, dst)
