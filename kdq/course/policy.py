"""The submission policy, pure: given what is ready, what is live on the server and the clock,
decide what to submit now or how long to wait. No I/O, no clock of its own.

Policies (``spec.submit.policy``):
    if_better  (default) never replace the live submission with a model whose validation
               macro-F1 is not higher; one that is not better is skipped once the live one is graded
    always     submit whenever a slot is free
    never      never submit (the worker finishes it as done)
    manual     only after ``kdq submit ID``
``kdq submit ID`` (``requested``) bypasses the policy, never the rate limit.

Order among the eligible: requested first, then the best validation macro-F1, then the smaller
model, then the older experiment. The live submission is the server's latest attempt that has not
failed (only the latest submission counts), whether kdq made it or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kdq.course.models import Attempt

SLACK_S = 2.0  # the server's clock shows whole seconds; don't knock a second early


@dataclass(frozen=True)
class Candidate:
    exp_id: int
    val_f1: float | None
    policy: str = "if_better"
    requested: bool = False
    size_mb: float | None = None


@dataclass(frozen=True)
class Live:
    """The submission that currently counts on the server."""

    attempt: int
    state: str  # "pending" | "successful"
    exp_id: int | None = None  # None: made outside kdq
    val_f1: float | None = None  # ours: its validation F1; outside kdq: the leaderboard's F1 if known


@dataclass(frozen=True)
class Plan:
    submit: int | None = None  # the experiment to submit now
    wait_s: float | None = None  # look again after this long; None: nothing to wait for
    finish: tuple[tuple[int, str, str], ...] = ()  # (exp_id, "done" | "skipped", why) never to be submitted
    reason: str = ""


def live_submission(
    attempts: Iterable[Attempt], ours: dict[int, tuple[int, float | None]], outside_f1: float | None = None
) -> Live | None:
    """The latest attempt that has not failed. ``ours``: attempt number → (experiment id, val F1)."""
    alive = [a for a in attempts if a.state != "failed"]
    if not alive:
        return None
    latest = max(alive, key=lambda a: a.attempt)
    exp_id, f1 = ours.get(latest.attempt, (None, outside_f1))
    return Live(attempt=latest.attempt, state=latest.state, exp_id=exp_id, val_f1=f1)


def next_slot(last_submit_at: float | None, interval_s: float, blocked_until: float | None = None) -> float:
    """The earliest time a submission may be made."""
    slot = 0.0 if last_submit_at is None else last_submit_at + interval_s + SLACK_S
    return max(slot, blocked_until or 0.0)


def _better(c: Candidate, live: Live | None) -> bool:
    if live is None or live.val_f1 is None:
        return True  # nothing to compare with: anything beats nothing
    return c.val_f1 is not None and c.val_f1 > live.val_f1


def plan(
    candidates: Iterable[Candidate],
    live: Live | None,
    *,
    now: float,
    last_submit_at: float | None,
    interval_s: float,
    blocked_until: float | None = None,
) -> Plan:
    finish: list[tuple[int, str, str]] = []
    eligible: list[Candidate] = []
    waiting_on_manual = False
    for c in candidates:
        if c.requested or c.policy == "always":
            eligible.append(c)
        elif c.policy == "never":
            finish.append((c.exp_id, "done", "submit.policy = never: not submitted"))
        elif c.policy == "manual":
            waiting_on_manual = True
        elif _better(c, live):
            eligible.append(c)
        elif live is not None and live.state == "successful":
            f1 = "none" if c.val_f1 is None else f"{c.val_f1:.4f}"
            whose = f"experiment {live.exp_id}" if live.exp_id is not None else "made outside kdq"
            finish.append(
                (
                    c.exp_id,
                    "skipped",
                    f"not submitted: val macro-F1 {f1} is not above {live.val_f1:.4f} of the live "
                    f"submission (attempt #{live.attempt}, {whose}); `kdq submit {c.exp_id}` overrides",
                )
            )
        # else: the live one is still pending and may yet fail; decide once it is graded
    if not eligible:
        why = "waiting for `kdq submit ID` (manual policy)" if waiting_on_manual else "nothing to submit"
        return Plan(finish=tuple(finish), reason=why)
    best = min(
        eligible,
        key=lambda c: (
            not c.requested,
            -(c.val_f1 if c.val_f1 is not None else -1.0),
            c.size_mb if c.size_mb is not None else 0.0,
            c.exp_id,
        ),
    )
    slot = next_slot(last_submit_at, interval_s, blocked_until)
    if now < slot:
        return Plan(
            wait_s=slot - now,
            finish=tuple(finish),
            reason=f"experiment {best.exp_id} next; the server's window opens in {slot - now:.0f} s",
        )
    return Plan(submit=best.exp_id, finish=tuple(finish), reason=f"experiment {best.exp_id}: best eligible")
