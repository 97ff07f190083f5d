"""What the policy needs to play for the score, read from the ledger, the store and the settings.

The scheduler calls these each tick, then hands the results to the pure ``policy.plan``; the CLI and
the report call ``outlook`` and ``expected_of`` to show the same numbers. Nothing here calls the server.

    factor, calibration = outlook(store, settings)
    expected_of(exp, factor, calibration)         # Expected, or None before validation
    plan(..., **inputs(store, ledger, settings, interval_s, now))
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import NamedTuple

from kdq.course.expected import Calibration, Deadline, Expected, expected_score
from kdq.course.policy import CONFIDENCE, Candidate, Graded, Live
from kdq.course.size_factor import DEFAULT_PRIOR, SizeFactor, fit
from kdq.experiment import Experiment, local_f1
from kdq.stages import WORKING, Stage

VALIDATED = {Stage.READY, Stage.SUBMITTING, Stage.EVALUATING, Stage.DONE, Stage.SKIPPED}


def candidate(exp: Experiment, refit: int | None = None) -> Candidate:
    f1, ci, holdout = local_f1(exp.metrics)
    return Candidate(
        exp.id,
        f1,
        exp.spec.submit.policy,
        bool(exp.submit_requested),
        (exp.metrics or {}).get("model_mb"),
        ci=ci,
        holdout=holdout,
        refit=refit,
        refit_of=exp.refit_of,
        scored=scored(exp.metrics),
    )


def scored(metrics: dict | None) -> bool:
    """Whether the file was scored as the grader scores it (``grader_f1``), or could not be: a run with
    no holdout pictures (a refit, ``data.holdout_fraction = 0``)."""
    m = metrics or {}
    return m.get("grader_f1") is not None or not m.get("holdout_files")


def candidates(store, ready: list[Experiment]) -> list[Candidate]:
    """The ready models as the policy sees them; a parent whose refit is on its way knows it."""
    from kdq import refit

    coming = refit.coming(store)
    return [candidate(e, coming.get(e.id)) for e in ready]


def expected_of(exp: Experiment, factor: SizeFactor, calibration: Calibration) -> Expected | None:
    f1, ci, holdout = local_f1(exp.metrics)
    size = (exp.metrics or {}).get("model_mb")
    if f1 is None or size is None:
        return None
    return expected_score(f1, ci, size, factor, calibration, holdout=holdout)


# ---------------------------------------------------------------- from the ledger


def size_factor(ledger, settings, remember: bool = False) -> SizeFactor:
    """Fitted from the latest leaderboard snapshot, else the prior ``KDQ_SIZE_FACTOR``. A fit of that
    snapshot kept in the ledger (``remember``: the scheduler keeps it) is used as it is, so that
    ``kdq status`` neither fits again nor imports scikit-learn."""
    prior = getattr(settings, "size_factor", DEFAULT_PRIOR)
    latest = ledger.latest_board()
    if latest is None:
        return fit([], prior)
    ts, rows = latest
    kept = ledger.size_factor_fit()
    if kept and kept.get("snapshot_at") == ts:
        return SizeFactor.from_json(kept)
    factor = fit(rows, prior, snapshot_at=ts)
    if remember and not factor.assumed:
        ledger.save_size_factor_fit(factor.as_json())
    return factor


def calibration(store, ledger, factor: SizeFactor) -> Calibration:
    """(our local F1, the server's F1) for each graded submission of ours; the server's F1 is its score
    plus the size factor at its size, over 10 (the leaderboard's F1 column, where it shows one)."""
    return Calibration(tuple((loc, srv) for _, loc, srv in _pairs(store, ledger, factor)))


def _pairs(store, ledger, factor: SizeFactor) -> list[tuple[dict, float, float]]:
    out = []
    for row in ledger.graded():
        exp = store.get(row["exp_id"])
        f1, _, _ = local_f1(exp.metrics)
        size = row["model_size"] if row["model_size"] is not None else (exp.metrics or {}).get("model_mb")
        if f1 is not None and size is not None and row["score"] is not None:
            out.append((row, f1, (row["score"] + factor(size)) / 10))
    return out


def grading_delay(store, ledger) -> float | None:
    """The longest time seen from an upload of ours to its grade being known."""
    delays = []
    for row in ledger.graded():
        if row["posted_at"] is None:
            continue
        graded = [
            e["ts"]
            for e in store.events(row["exp_id"])
            if e["stage"] == str(Stage.DONE) and e["ts"] >= row["posted_at"]
        ]
        if graded:
            delays.append(min(graded) - row["posted_at"])
    return max(delays, default=None)


def deadline(settings, store, ledger, interval_s: float) -> Deadline | None:
    when: datetime | None = getattr(settings, "deadline", None)
    if when is None:
        return None
    seen = grading_delay(store, ledger)
    return Deadline(
        at=when.timestamp(), interval_s=interval_s, grading_s=interval_s if seen is None else seen
    )


def deadline_ahead(settings, now: float) -> bool:
    """Whether a deadline is set and still to come (the scheduler then keeps looking)."""
    when: datetime | None = getattr(settings, "deadline", None)
    return when is not None and now < when.timestamp()


def graded(ledger) -> tuple[Graded, ...]:
    return tuple(
        Graded(r["exp_id"], r["attempt"], r["score"])
        for r in ledger.graded()
        if r["attempt"] is not None and r["score"] is not None
    )


def best_known(store, factor: SizeFactor, cal: Calibration) -> float | None:
    """The highest expected score of every model validated so far that could count (not ``never``
    submitted)."""
    exps = [e for e in store.list(VALIDATED) if e.spec.submit.policy != "never" or e.server_attempt]
    scores = [x.score for e in exps if (x := expected_of(e, factor, cal)) is not None]
    return max(scores, default=None)


def live_details(store, ledger, live: Live | None, team: str | None) -> Live | None:
    """The live submission with what the policy compares against: ours, its local F1, interval, size
    and server score; made outside kdq, its row of the latest leaderboard snapshot."""
    if live is None:
        return None
    if live.exp_id is not None:
        exp = store.get(live.exp_id)
        f1, ci, holdout = local_f1(exp.metrics)
        score = next((g.score for g in graded(ledger) if g.attempt == live.attempt), None)
        size, policy = (exp.metrics or {}).get("model_mb"), exp.spec.submit.policy
        return replace(live, val_f1=f1, ci=ci, holdout=holdout, size_mb=size, score=score, policy=policy)
    latest = ledger.latest_board()
    want = " ".join((team or "").split()).casefold()
    row = next(
        (r for r in (latest[1] if latest else []) if want and " ".join(r["team"].split()).casefold() == want),
        None,
    )
    if row is None:
        return live
    return replace(
        live, score=row.get("score"), val_f1=row.get("f1", live.val_f1), size_mb=row.get("size_mb")
    )


def outlook(store, settings) -> tuple[SizeFactor, Calibration]:
    """The size factor and the calibration as the ledger knows them now (no network call)."""
    from kdq.course.ledger import Ledger

    ledger = Ledger(store)
    factor = size_factor(ledger, settings)
    return factor, calibration(store, ledger, factor)


def inputs(store, ledger, settings, interval_s: float) -> dict:
    """``plan``'s keyword arguments for playing the score."""
    factor = size_factor(ledger, settings, remember=True)
    cal = calibration(store, ledger, factor)
    return {
        "factor": factor,
        "calibration": cal,
        "confidence": getattr(settings, "submit_confidence", CONFIDENCE),
        "deadline": deadline(settings, store, ledger, interval_s),
        "best_known": best_known(store, factor, cal),
        "graded": graded(ledger),
        "work_left": bool(store.list(set(WORKING))),
    }


def explored_worse(store, ledger) -> bool:
    """Whether our latest graded submission was an exploration (``submit.policy = explore``) that graded
    below our best: the scheduler then keeps looking, to put the best back once nothing is left to try."""
    done = graded(ledger)
    if not done:
        return False
    latest, best = max(done, key=lambda g: g.attempt), max(done, key=lambda g: g.score)
    return latest.score < best.score - 1e-9 and store.get(latest.exp_id).spec.submit.policy == "explore"


# ---------------------------------------------------------------- for people (status, results, show, report)


def expected_all(store, settings, exps) -> dict[int, Expected]:
    """Each validated experiment's expected score, with one look at the ledger for all of them."""
    factor, cal = outlook(store, settings)
    return {e.id: x for e in exps if (x := expected_of(e, factor, cal)) is not None}


class TrustPoint(NamedTuple):
    """One graded submission of ours on the trust chart (kdq/plots.py ``trust``)."""

    exp_id: int
    label: str  # "ID #attempt"
    f1: float  # our local F1: the holdout's where measured
    ci: tuple[float, float] | None  # its 90% interval
    server_f1: float  # the server's F1: its score plus the size factor at its size, over 10


def calibration_points(store, settings) -> list[TrustPoint]:
    """Every graded submission of ours: the calibration, as the one trust chart plots it."""
    from kdq.course.ledger import Ledger

    ledger = Ledger(store)
    factor = size_factor(ledger, settings)
    return [
        TrustPoint(
            r["exp_id"],
            f"{r['exp_id']} #{r['attempt']}",
            loc,
            local_f1(store.get(r["exp_id"]).metrics)[1],
            srv,
        )
        for r, loc, srv in _pairs(store, ledger, factor)
    ]


def header_lines(store, settings, now: float) -> list[str]:
    """``kdq status``: how scores are expected, and with a deadline, the countdown and what will count."""
    from kdq.course.ledger import Ledger

    ledger = Ledger(store)
    factor = size_factor(ledger, settings)
    cal = calibration(store, ledger, factor)
    curve = ", ".join(f"{s:g} MiB {v:.2f}" for s, v in factor.table((2.0, 10.0, 20.0)))
    how = "assumed (KDQ_SIZE_FACTOR)" if factor.assumed else factor.method
    lines = [f"size factor {how}: {curve}", f"calibration: {cal.text()}"]
    decided = ledger.decision()
    if decided:
        lines.append(f"policy, {_span(now - decided['ts'])} ago: {decided['text']}")
    d = deadline(settings, store, ledger, settings.submit_interval_s)
    if d is None:
        return lines
    phase, when = (
        d.phase(now),
        datetime.fromtimestamp(d.at, settings.deadline.tzinfo).strftime("%b %d %H:%M %Z"),
    )
    if phase == "over":
        return [*lines, f"deadline {when}: passed"]
    steps = {
        "open": f"final windows in {_span(d.final_at - now)}",
        "final": "final windows: only the best goes",
    }
    step = steps.get(phase, "closing: no new model goes")
    best = max(graded(ledger), key=lambda g: (g.score, g.attempt), default=None)
    counts = "nothing graded yet" if best is None else f"experiment {best.exp_id} (score {best.score:.3f})"
    return [*lines, f"deadline {when}: in {_span(d.at - now)}; {step}", f"best graded so far: {counts}"]


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds / 60:.0f}m" if seconds < 5400 else f"{seconds / 3600:.1f}h"
