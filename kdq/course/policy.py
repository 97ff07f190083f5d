"""The submission policy, pure: given what is ready, what is live on the server and the clock,
decide what to submit now or how long to wait. No I/O, no clock of its own.

Every model is judged by its expected leaderboard score (``kdq.course.expected``): 10 x E[server F1]
minus the size factor, with the chance that it beats another read from its holdout interval.

Policies (``spec.submit.policy``):
    if_better  (default) submit only when the chance that the candidate's score beats the live
               submission's (ours: its expected score; made elsewhere: its leaderboard score) is at
               least ``confidence``; one that is not is skipped, with the numbers, once the live
               one is graded
    always     submit whenever a slot is free
    explore    the leaderboard's test set is the one that counts, so among models within each
               other's noise the best *graded* is worth more than the best guess: once the live
               submission is graded, submit a candidate whose expected score's upper bound reaches
               the best score graded so far (ours, or the live one made elsewhere); one whose upper
               bound is below it is skipped, with the numbers. The best graded is put back
               (``Plan.restore``) when nothing is left to try: no candidate, nothing queued or
               training (``work_left``)
    never      never submit (the worker finishes it as done)
    manual     only after ``kdq submit ID``
``kdq submit ID`` (``requested``) bypasses the policy, never the rate limit. A refit (kdq.refit) is its
parent's successor: the parent waits while its refit is on its way (not in the final windows), and a
refit whose parent is live and graded goes whatever the policy.

Order among the eligible: requested first, then the highest expected score (for ``explore``: the
highest upper bound), then the smaller model, then the older experiment. The live submission is the
server's latest attempt that has not failed (only the latest submission counts), whether kdq made it
or not.

With a deadline (``expected.Deadline``): in the final windows only a candidate whose expected score
is the best of every model validated so far goes; once closing (one interval plus the grading delay
before it) no new model goes. In both, when nothing else goes and the live submission is graded worse
than the best one graded, that one is put back (``Plan.restore``) so it is what counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kdq.course.expected import (
    NO_CALIBRATION,
    Calibration,
    Deadline,
    Expected,
    chance_better,
    expected_score,
)
from kdq.course.models import Attempt
from kdq.course.size_factor import SizeFactor, assumed

SLACK_S = 2.0  # the server's clock shows whole seconds; don't knock a second early
CONFIDENCE = 0.8  # KDQ_SUBMIT_CONFIDENCE's default
AUTO = ("always", "if_better", "explore")  # the policies that submit on their own


@dataclass(frozen=True)
class Candidate:
    exp_id: int
    f1: float | None  # the local F1: holdout_f1 when the run has one, else val_f1
    policy: str = "if_better"
    requested: bool = False
    size_mb: float | None = None
    ci: tuple[float, float] | None = None  # holdout_f1_ci, the 90% bootstrap interval
    holdout: bool = False  # whether ``f1`` is the holdout F1
    refit: int | None = None  # its refit (kdq.refit), still on its way: the successor goes instead
    refit_of: int | None = None  # it is the refit of this experiment: it succeeds it when that one is live
    scored: bool = True  # its file was scored as the grader scores it (else if_better waits for kdq submit)


@dataclass(frozen=True)
class Live:
    """The submission that currently counts on the server."""

    attempt: int
    state: str  # "pending" | "successful"
    exp_id: int | None = None  # None: made outside kdq
    val_f1: float | None = None  # ours: its local F1; outside kdq: the leaderboard's F1 if known
    size_mb: float | None = None
    ci: tuple[float, float] | None = None
    holdout: bool = False
    score: float | None = None  # the server's score once graded (outside kdq: the leaderboard's)
    policy: str | None = None  # ours: its submit.policy (``explore``: put the best graded back after it)


@dataclass(frozen=True)
class Graded:
    """One of our submissions the server graded successfully."""

    exp_id: int
    attempt: int
    score: float


@dataclass(frozen=True)
class Plan:
    submit: int | None = None  # the experiment to submit now
    wait_s: float | None = None  # look again after this long; None: nothing to wait for
    finish: tuple[tuple[int, str, str], ...] = ()  # (exp_id, "done" | "skipped", why) never to be submitted
    reason: str = ""
    restore: int | None = None  # a graded experiment to submit again (``kdq submit``): the best graded


def live_submission(
    attempts: Iterable[Attempt], ours: dict[int, tuple[int, float | None]], outside_f1: float | None = None
) -> Live | None:
    """The latest attempt that has not failed. ``ours``: attempt number → (experiment id, local F1)."""
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


@dataclass(frozen=True)
class _Judge:
    factor: SizeFactor
    calibration: Calibration
    confidence: float

    def expected(self, c: Candidate) -> Expected | None:
        if c.f1 is None:
            return None
        return expected_score(c.f1, c.ci, c.size_mb or 0.0, self.factor, self.calibration, holdout=c.holdout)

    def live_score(self, live: Live) -> tuple[float, float, str] | None:
        """(score, sigma, what it is) of the live submission; ``None``: nothing to compare with."""
        if live.exp_id is not None and live.val_f1 is not None:
            e = expected_score(
                live.val_f1, live.ci, live.size_mb or 0.0, self.factor, self.calibration, holdout=live.holdout
            )
            return e.score, e.sigma, f"expected {e.text()}"
        if live.exp_id is None and live.score is not None:
            return live.score, 0.0, f"leaderboard score {live.score:.3f}"
        if live.exp_id is None and live.val_f1 is not None and live.size_mb is not None:
            e = expected_score(live.val_f1, None, live.size_mb, self.factor, self.calibration)
            return e.score, 0.0, f"{e.score:.3f} from its leaderboard F1 {live.val_f1:.4f}"
        return None

    def verdict(self, c: Candidate, live: Live | None) -> tuple[bool, str]:
        """Whether ``c`` beats the live submission, and the numbers that say so."""
        mine = self.expected(c)
        if mine is None:
            return False, "no local F1"
        theirs = None if live is None else self.live_score(live)
        if theirs is None:
            return True, f"expected {mine.text()}; nothing live to compare with"
        score, sigma, what = theirs
        p = chance_better(mine, score, sigma)
        whose = f"experiment {live.exp_id}" if live.exp_id is not None else "made outside kdq"
        if live.exp_id is not None and live.score is not None:  # what `kdq submit` and the leaderboard show
            whose += f"; its server score {live.score:.3f}"
        numbers = (
            f"expected score {mine.text()} vs {what} of the live submission (attempt #{live.attempt}, "
            f"{whose}): chance better {p:.2f}"
        )
        ok = p >= self.confidence and mine.score > score
        return ok, numbers + (f" ≥ {self.confidence:.2f}" if ok else f" < {self.confidence:.2f} needed")

    def explore(self, c: Candidate, bar: tuple[float, str] | None) -> tuple[bool, str]:
        """Whether ``c``'s upper bound reaches ``bar`` (the best graded score), and the numbers."""
        mine = self.expected(c)
        if mine is None:
            return False, "no local F1"
        if bar is None:
            return True, f"upper bound {mine.high:.3f} of expected {mine.text()}; nothing graded yet"
        score, what = bar
        ok = mine.high >= score - 1e-9
        verb = "reaches" if ok else "is below"
        return (
            ok,
            f"upper bound {mine.high:.3f} of expected {mine.text()} {verb} the best graded score {what}",
        )


def _bar(live: Live | None, graded: Sequence[Graded]) -> tuple[float, str] | None:
    """The best score graded so far, ours or the live one made outside kdq, with what it is."""
    bars = [(g.score, f"{g.score:.3f} (experiment {g.exp_id}, attempt #{g.attempt})") for g in graded]
    if live is not None and live.exp_id is None and live.score is not None:
        bars.append((live.score, f"{live.score:.3f} (attempt #{live.attempt}, made outside kdq)"))
    return max(bars, key=lambda b: b[0], default=None)


def _order(judge: _Judge, c: Candidate) -> tuple:
    e = judge.expected(c)
    key = float("-inf") if e is None else e.high if c.policy == "explore" and not c.requested else e.score
    return (not c.requested, -key, c.size_mb or 0.0, c.exp_id)


def plan(
    candidates: Iterable[Candidate],
    live: Live | None,
    *,
    now: float,
    last_submit_at: float | None,
    interval_s: float,
    blocked_until: float | None = None,
    factor: SizeFactor | None = None,
    calibration: Calibration = NO_CALIBRATION,
    confidence: float = CONFIDENCE,
    deadline: Deadline | None = None,
    best_known: float | None = None,
    graded: Sequence[Graded] = (),
    work_left: bool = False,
) -> Plan:
    """``best_known``: the highest expected score of every model validated so far (the final windows);
    ``graded``: our successfully graded submissions (what to put back); ``work_left``: experiments are
    still queued or training (``explore`` puts the best graded back only once there are none)."""
    judge = _Judge(factor or assumed(), calibration, confidence)
    phase = deadline.phase(now) if deadline is not None else "open"
    bar = _bar(live, graded)
    s = _sort(judge, list(candidates), live, phase, best_known, bar)
    restore = _restore(live, graded) if not s.eligible else None
    if restore is not None:
        when = _restore_when(phase, live, work_left)
        numbers = (
            f"experiment {restore.exp_id} (score {restore.score:.3f}, attempt #{restore.attempt}) is the "
            f"best graded; the live attempt #{live.attempt} scored {live.score:.3f}"
        )
        if when is not None:
            why = f"{when}: {numbers}; putting it back so it is what counts"
            return Plan(finish=tuple(s.finish), restore=restore.exp_id, reason=why)
        if live.policy == "explore" and phase == "open":
            s.held.append(f"{numbers}; experiment {restore.exp_id} goes back once nothing is left to try")
    if not s.eligible:
        why = "waiting for `kdq submit ID` (manual policy)" if s.manual else "nothing to submit"
        return Plan(finish=tuple(s.finish), reason="; ".join([*s.held, why]))
    best = min(s.eligible, key=lambda c: _order(judge, c))
    slot = next_slot(last_submit_at, interval_s, blocked_until)
    if now < slot:
        return Plan(
            wait_s=slot - now,
            finish=tuple(s.finish),
            reason=f"experiment {best.exp_id} next; the server's window opens in {slot - now:.0f} s",
        )
    e = judge.expected(best)
    why = f"expected score {e.text()}" if e is not None else "requested"
    if best.policy == "explore" and not best.requested:
        why = f"explore: {judge.explore(best, bar)[1]}"
    return Plan(
        submit=best.exp_id, finish=tuple(s.finish), reason=f"experiment {best.exp_id}: best eligible, {why}"
    )


@dataclass
class _Sorted:
    eligible: list[Candidate]
    finish: list[tuple[int, str, str]]
    held: list[str]
    manual: bool = False  # a candidate waits for ``kdq submit ID``


def _sort(
    judge: _Judge,
    candidates: list[Candidate],
    live: Live | None,
    phase: str,
    best_known: float | None,
    bar: tuple[float, str] | None,
) -> _Sorted:
    """Each candidate: eligible now, finished (never / skipped, with the numbers) or held (and why)."""
    s = _Sorted([], [], [])
    graded = live is not None and live.state == "successful"
    for c in candidates:
        if c.requested:
            s.eligible.append(c)
        elif c.policy == "never":
            s.finish.append((c.exp_id, "done", "submit.policy = never: not submitted"))
        elif c.policy == "manual":
            s.manual = True
        elif c.refit is not None and phase == "open":
            s.held.append(f"experiment {c.exp_id} waits for its refit, experiment {c.refit}")
        elif phase == "over" or (phase == "closing" and live is not None):
            s.held.append(f"experiment {c.exp_id} held: the deadline is {phase}")
        elif phase == "final" and not _best_so_far(judge, c, candidates, best_known):
            s.held.append(f"experiment {c.exp_id} held: not the best expected score so far (final windows)")
        elif c.policy == "always":
            s.eligible.append(c)
        elif live is not None and c.refit_of is not None and live.exp_id == c.refit_of:
            if graded:  # the same recipe on every picture succeeds its live parent, whatever the policy
                s.eligible.append(c)
            else:
                s.held.append(f"experiment {c.exp_id} waits: its parent, live, is being graded")
        elif not c.scored:
            s.held.append(
                f"experiment {c.exp_id} waits for `kdq submit {c.exp_id}`: its file was never scored on the "
                "holdout pictures as the grader scores them"
            )
        else:
            ok, numbers = judge.explore(c, bar) if c.policy == "explore" else judge.verdict(c, live)
            if ok and (graded or live is None or c.policy != "explore"):
                s.eligible.append(c)
            elif ok:  # explore learns from each grade: the live one's comes first
                s.held.append(
                    f"experiment {c.exp_id} waits: the live attempt #{live.attempt} is being graded"
                )
            elif graded or c.policy == "explore":  # a bar already graded only rises
                s.finish.append(
                    (c.exp_id, "skipped", f"not submitted: {numbers}; `kdq submit {c.exp_id}` overrides")
                )
            # else (if_better): the live one is still pending and may yet fail; decide once it is graded
    return s


def _restore_when(phase: str, live: Live, work_left: bool) -> str | None:
    """When the best graded goes back: in the deadline's last windows; after an exploration, at the end
    of the night (nothing queued or training); ``None``: not now."""
    if phase in ("final", "closing"):
        return f"deadline {phase}"
    if phase == "open" and live.policy == "explore" and not work_left:
        return "end of the night, nothing left to try"
    return None


def _best_so_far(judge: _Judge, c: Candidate, candidates: list[Candidate], best_known: float | None) -> bool:
    """Whether ``c`` has the highest expected score of the candidates and of every model seen so far."""
    mine = judge.expected(c)
    if mine is None:
        return False
    auto = [o for o in candidates if not o.requested and o.policy in AUTO]
    scored = [(e.score, -(o.size_mb or 0.0), -o.exp_id, o) for o in auto if (e := judge.expected(o))]
    top = max(scored, key=lambda t: t[:3], default=(None,) * 4)[3]
    return top is c and (best_known is None or mine.score >= best_known - 1e-9)


def _restore(live: Live | None, graded: Sequence[Graded]) -> Graded | None:
    """The best graded submission of ours, when the live one is graded and worse than it."""
    if not graded or live is None or live.state != "successful":
        return None
    best = max(graded, key=lambda g: (g.score, g.attempt))
    if live.attempt == best.attempt or live.score is None or live.score >= best.score - 1e-9:
        return None
    return best
