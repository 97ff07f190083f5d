"""One step of one experiment: read its state, do one action, write the new state.

``advance(ctx, exp_id)`` is what the worker's Huey task calls. It returns how many seconds until the
experiment wants looking at again (``0``: at once), or ``None`` when the worker has nothing more to
do for it (a terminal stage, or a stage the submission scheduler owns). Each step can run twice
without harm: launches are idempotent by run id, moves are compare-and-set, and no database write is
held across a backend call.

    queued      → a free slot of the launch gate (kdq.gate): fix the run id      → launching
    launching   → backend.launch(run_id, resume_from=the last run, kdq retry)   → training
    training    → backend.poll: running (look again) | failed | succeeded       → fetching
    fetching    → backend.fetch into $KDQ_HOME/artifacts/<run id>               → validating
    validating  → verify model.pt as the grader loads it, keep its sha256       → ready (done: policy never)
                  (data.refit: its refit is queued, kdq.refit; a validated refit replaces its parent)
    ready, submitting, evaluating: the submission scheduler (kdq.course.scheduler)

A backend's ``TransientError`` makes the step wait with back-off; a ``CredentialError`` (a login this
machine lacks) pauses what needs it (kdq/pause.py); a ``PermanentError`` fails the stage
with its message; any other exception fails it with its traceback (``kdq retry ID`` brings it back).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdq import pause, runfolder
from kdq.backends import Backend, get_backend
from kdq.errors import CredentialError, PermanentError, TransientError, read_only
from kdq.experiment import Experiment
from kdq.log import get_logger, redact
from kdq.settings import Settings
from kdq.stages import SUBMITTED, TERMINAL, Stage, after_ready
from kdq.store import Busy, Store

log = get_logger("kdq.steps")
TRANSIENT_BACKOFF_S = (5, 15, 30, 60, 120, 300)
READ_ONLY_RECHECK_S = 30.0  # KDQ_HOME read-only: how often a step looks again (it fails nothing)
QUEUED_WAITS = "queued_waits"  # meta: {experiment id: why the backend keeps it queued}
PAUSED_RECHECK_S = 60.0  # a missing login (kdq/pause.py): how often a waiting experiment tries again


@dataclass
class Context:
    settings: Settings
    store: Store
    backends: dict[str, Backend] = field(default_factory=dict)
    backend_factory: Callable[[str, Settings], Backend] = get_backend

    def backend(self, kind: str) -> Backend:
        if kind not in self.backends:
            self.backends[kind] = self.backend_factory(kind, self.settings)
        return self.backends[kind]


def run_id_for(instance: str, exp: Experiment) -> str:
    """Fixed before launch: the same experiment and attempt always get the same run id."""
    return f"{instance}-e{exp.id}-a{exp.attempt}"


def step_queued(ctx: Context, exp: Experiment) -> float:
    """Launch when the gate has a slot for this backend and nothing queued is ahead (kdq.gate); else wait."""
    run_id = run_id_for(ctx.store.instance, exp)
    limit = ctx.settings.max_running(exp.backend)
    paused = pause.active(ctx.store).keys()  # what waits for a missing login holds no one back
    if paused and not pause.probe_due(ctx.store, pause.needs(exp), PAUSED_RECHECK_S):
        return PAUSED_RECHECK_S  # another tried the login less than a minute ago: wait, quietly
    waiting = {e.id for e in ctx.store.list({Stage.QUEUED}) if pause.needs(e) & paused} if paused else set()
    waiting |= {int(k) for k in ctx.store.get_meta_json(QUEUED_WAITS) or {}}  # and what waits for a cache
    # The backend is asked (Modal: a Volume read and a Dict read) only when the gate has this one's turn.
    if not ctx.store.gate_open(exp.id, exp.backend, limit, waiting) or _waits(ctx, exp, run_id):
        return ctx.settings.poll_interval_s
    if ctx.store.start_launch(exp.id, exp.backend, limit, "queued → launching", waiting, run_id=run_id):
        return 0
    return ctx.settings.poll_interval_s


def _waits(ctx: Context, exp: Experiment, run_id: str) -> str | None:
    """Why the backend keeps ``exp`` queued before its launch (Modal: another experiment builds the
    teacher cache it needs), said once in its events and kept in the database's meta, so that it holds
    no one back at the gate; ``None``: it may launch."""
    check = getattr(ctx.backend(exp.backend), "waits", None)
    why = check(run_id, exp.spec) if check else None
    waits = ctx.store.get_meta_json(QUEUED_WAITS) or {}
    if waits.get(str(exp.id)) != why:
        if why:
            waits[str(exp.id)] = why
            ctx.store.event(exp.id, "transient", f"queued: {why}")
        else:
            waits.pop(str(exp.id), None)
        ctx.store.set_meta(QUEUED_WAITS, waits)
    return why


def step_launching(ctx: Context, exp: Experiment) -> float:
    resume = {"resume_from": exp.resume_from} if exp.resume_from else {}  # kdq retry (kdq.requests)
    handle = ctx.backend(exp.backend).launch(exp.run_id, exp.spec, **resume)
    ctx.store.move(exp.id, Stage.LAUNCHING, Stage.TRAINING, f"launched run {exp.run_id}", handle=handle)
    for key in pause.clear(ctx.store, pause.needs(exp)):
        log.info("queue goes on", login=key, exp=exp.id)
    return ctx.settings.poll_interval_s


def step_training(ctx: Context, exp: Experiment) -> float:
    status = ctx.backend(exp.backend).poll(exp.handle)
    if status.state == "running":
        if status.progress and status.progress != exp.progress:
            ctx.store.update(exp.id, progress=status.progress)
        return ctx.settings.poll_interval_s
    if status.state == "failed":
        raise PermanentError(status.error or "training failed")
    ctx.store.move(exp.id, Stage.TRAINING, Stage.FETCHING, "training finished", progress=status.progress)
    return 0


def step_fetching(ctx: Context, exp: Experiment) -> float:
    dest = ctx.settings.artifacts_dir / exp.run_id  # never reused: a new database cannot overwrite it
    ctx.backend(exp.backend).fetch(exp.handle, dest)
    ctx.store.move(exp.id, Stage.FETCHING, Stage.VALIDATING, f"artifacts in {dest}", artifacts=str(dest))
    return 0


def step_validating(ctx: Context, exp: Experiment) -> float | None:
    from kdq import refit
    from kdq.course.sealed import sha256_of
    from kdq.verify import VerifyError, holdout_check, recorded, verify_file

    dest = Path(exp.artifacts)
    model = dest / runfolder.MODEL
    sha256 = sha256_of(model) if model.is_file() else None  # the one file the scheduler may upload
    metrics = runfolder.read_json(dest / runfolder.METRICS)
    if not metrics or "val_f1" not in metrics:
        raise PermanentError(f"{dest / runfolder.METRICS} is missing or has no val_f1")
    if metrics.get("grader_error"):  # the run scored its file where its pictures are, and it failed
        raise PermanentError(f"model.pt fails the grader's checks (in the run): {metrics['grader_error']}")
    data_dir = ctx.settings.datasets_dir / exp.spec.data.dataset
    try:
        report = verify_file(dest / runfolder.MODEL, **holdout_check(data_dir, metrics))
    except VerifyError as exc:
        raise PermanentError(f"model.pt fails the grader's checks: {exc}") from None
    metrics = {**metrics, "verify": report, **recorded(report, metrics)}
    metrics["sha256"] = sha256
    metrics = refit.carry(ctx.store, exp, metrics)
    moved = ctx.store.move(
        exp.id,
        Stage.VALIDATING,
        Stage.READY,
        _verified(metrics),
        metrics=metrics,
        val_f1=metrics["val_f1"],
        teacher_f1=metrics.get("teacher_probe_f1"),
    )
    if moved:
        refit.replace(ctx.store, exp)
        if exp.search is None:  # a search refits its best trial once it ends (kdq.search.driver)
            refit.spawn(ctx.store, exp, metrics)
    if after_ready(exp.spec.submit.policy) is Stage.DONE:
        ctx.store.move(exp.id, Stage.READY, Stage.DONE, "submit.policy = never: not submitted")
    return None


def _verified(metrics: dict) -> str:
    if metrics.get("refit_of") is not None:
        f1 = metrics.get("parent_f1")
        shown = "none" if f1 is None else f"{f1:.4f}"
        return f"verified: refit of experiment {metrics['refit_of']}, expected F1 {shown} (its parent's)"
    return f"verified: val macro-F1 {metrics['val_f1']:.4f}"


STEPS: dict[Stage, Callable[[Context, Experiment], float | None]] = {
    Stage.QUEUED: step_queued,
    Stage.LAUNCHING: step_launching,
    Stage.TRAINING: step_training,
    Stage.FETCHING: step_fetching,
    Stage.VALIDATING: step_validating,
}


def _cancel(ctx: Context, exp: Experiment) -> None:
    # A launch that spawned but did not finish may have left no handle: the backend finds it by run id.
    handle = exp.handle or ({"run_id": exp.run_id} if exp.run_id else None)
    if handle:
        ctx.backend(exp.backend).cancel(handle)
    ctx.store.move(exp.id, exp.stage, Stage.CANCELLED, "cancelled by the user")


def transient_delay(failures: int) -> float:
    return TRANSIENT_BACKOFF_S[min(failures, len(TRANSIENT_BACKOFF_S) - 1)]


def advance(ctx: Context, exp_id: int) -> float | None:
    """Run one step of experiment ``exp_id``; see the module docstring."""
    exp = ctx.store.get(exp_id)
    if exp.stage in TERMINAL:
        return None
    if exp.cancel_requested and exp.stage not in SUBMITTED:
        _cancel(ctx, exp)
        return None
    step = STEPS.get(exp.stage)
    if step is None:
        return None
    try:
        delay = step(ctx, exp)
    except TransientError as exc:
        failures = sum(1 for e in ctx.store.events(exp.id)[-20:] if e["kind"] == "transient")
        delay = transient_delay(failures)
        message = redact(str(exc))
        ctx.store.event(exp.id, "transient", f"{exp.stage}: {message} (trying again in {delay:.0f} s)")
        log.warning("transient trouble", exp=exp.id, stage=str(exp.stage), error=message, retry_in=delay)
    except CredentialError as exc:  # the machine's trouble: wait, fail nothing (kdq/pause.py)
        delay = PAUSED_RECHECK_S
        message = redact(str(exc))
        if exp.stage is Stage.LAUNCHING:  # it waits back in line: its launch slot goes to one that can use it
            ctx.store.move(exp.id, Stage.LAUNCHING, Stage.QUEUED, f"waiting for a login: {message}")
        if pause.record(ctx.store, exc.key, message):
            ctx.store.event(exp.id, "paused", message)
            log.warning(f"queue paused: {message}; what needs it waits, `kdq doctor` says when it works")
    except PermanentError as exc:
        _fail(ctx, exp, redact(str(exc)))
        return None
    except Busy as exc:  # another process held kdq.db's write lock a long while: look again, fail nothing
        log.warning("kdq.db busy", exp=exp.id, stage=str(exp.stage), error=str(exc))
        return ctx.settings.poll_interval_s
    except Exception as exc:  # a bug or a surprise: fail loudly, lose nothing (`kdq retry` brings it back)
        if line := read_only(exc):  # KDQ_HOME remounted read-only: the machine's trouble, fail nothing
            log.warning("KDQ_HOME read-only", exp=exp.id, stage=str(exp.stage), error=line)
            return READ_ONLY_RECHECK_S
        log.error("step crashed", exp=exp.id, stage=str(exp.stage), error=redact(repr(exc)))
        _fail(
            ctx,
            exp,
            redact(f"{exp.stage} step crashed: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"),
        )
        return None
    if delay is not None:
        ctx.store.update(exp.id, next_check_at=time.time() + delay)
    return delay


def _fail(ctx: Context, exp: Experiment, message: str) -> None:
    if ctx.store.move(exp.id, exp.stage, Stage.FAILED, message.splitlines()[0][:500], error=message):
        log.warning("experiment failed", exp=exp.id, stage=str(exp.stage), error=message.splitlines()[0])


def run_until_wait(ctx: Context, exp_id: int, max_steps: int = 20) -> float | None:
    """Advance through every step that needs no waiting; return the first real delay (or ``None``)."""
    for _ in range(max_steps):
        delay = advance(ctx, exp_id)
        if delay != 0:
            return delay
    return 0


def due_for_redrive(store: Store, now: float, grace_s: float) -> list[int]:
    """Live experiments the worker owns whose next look is overdue: their queue task was lost. A look
    due further ahead than any step ever waits was set before the wall clock stepped back: overdue too."""
    owned = set(STEPS)
    furthest = now + 2 * max(TRANSIENT_BACKOFF_S)
    return [
        e.id
        for e in store.live()
        if e.stage in owned and (e.next_check_at is None or not now - grace_s <= e.next_check_at <= furthest)
    ]
