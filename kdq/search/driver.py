"""The worker's side of every search, one tick at a time: tell the study what happened, ask for more.

A tick, for each search with a live or unfinished trial:

1. **Adopt.** Trials queued by ``kdq enqueue`` have no trial number yet: each is handed to the study as an
   enqueued trial (its parameters fixed) and asked for; an asked trial that has no experiment row (a
   worker killed between the two writes) gets its row now, and one killed inside ``ask`` (some
   parameters not yet written) gets the rest first. So no trial is lost and none is made twice.
2. **Report and prune.** A training trial's latest epoch (``progress.json``: epoch, best validation F1) is
   reported to the study; when the pruner says stop, the trial moves ``training → pruned`` first, then
   its run is cancelled on its backend. A two-sided study (F1 and size) takes no reports, and no pruner.
3. **Tell.** A trial that ended is told: validated → its objective (two values when two-sided);
   pruned → pruned; failed or cancelled → failed (it counts toward the total, so a broken search cannot
   loop forever).
4. **Ask.** While the study has fewer than ``trials`` trials, fewer than ``parallel`` are live and the
   GPU budget is not spent, ask the study for a trial and queue it as an experiment.

Only the worker runs this, under one lock; every write can happen twice without harm.
"""

from __future__ import annotations

import sqlite3
import time

import optuna
from optuna.trial import TrialState

from kdq.experiment import Experiment
from kdq.log import get_logger
from kdq.search import study as studies
from kdq.search.spec import document, fewest_epochs, params_of, trial_spec
from kdq.stages import LIVE, WORKING, Stage
from kdq.steps import Context

log = get_logger("kdq.search")
EXP_ATTR = "exp_id"  # user attribute of a study trial adopted from a row that `kdq enqueue` made
VALIDATED = frozenset({Stage.READY, Stage.SUBMITTING, Stage.EVALUATING, Stage.DONE, Stage.SKIPPED})
FAILED = frozenset({Stage.FAILED, Stage.CANCELLED})


def by_search(exps: list[Experiment]) -> dict[str, list[Experiment]]:
    out: dict[str, list[Experiment]] = {}
    for e in exps:
        if e.search:
            out.setdefault(e.search, []).append(e)
    return out


def training_seconds(events: list[dict], now: float) -> float:
    """Seconds spent in ``training`` by one experiment (every attempt), from its stage events. Pure."""
    total, since = 0.0, None
    for e in events:
        if e["kind"] != "stage":
            continue
        if since is not None:
            total += e["ts"] - since
            since = None
        if e["stage"] == Stage.TRAINING:
            since = e["ts"]
    return total + (now - since if since is not None else 0.0)


def tick(ctx: Context) -> list[int]:
    """One look at every search; returns the experiments it queued (the caller nudges them)."""
    new: list[int] = []
    for name, trials in by_search(ctx.store.list()).items():
        trials.sort(key=lambda e: e.id)
        search = trials[0].spec.search
        if search is None:
            continue
        try:
            new += _tick_one(ctx, name, trials)
        except Exception as exc:  # one broken search must not stop the others, nor the worker
            log.error("search tick failed", search=name, error=repr(exc))
    return new


def _tick_one(ctx: Context, name: str, trials: list[Experiment]) -> list[int]:
    search = trials[0].spec.search
    study = studies.open_study(ctx.settings.root, search, fewest_epochs(trials[0].spec))
    new = _adopt(ctx, study, trials)
    trials = sorted((e for e in ctx.store.list() if e.search == name), key=lambda e: e.id)
    states = {t.number: t for t in study.get_trials(deepcopy=False)}
    for exp in trials:
        frozen = states.get(exp.trial)
        if frozen is None or frozen.state is not TrialState.RUNNING:
            continue
        if exp.stage is Stage.TRAINING:
            if not search.two_sided:  # Optuna takes no per-epoch values in a two-sided study
                _report(ctx, study, frozen, exp)
        else:
            _tell(ctx, study, frozen, ctx.store.get(exp.id))
    trials = sorted((e for e in ctx.store.list() if e.search == name), key=lambda e: e.id)  # after prunes
    new += _ask(ctx, study, trials)
    if not new:
        new += _refit_best(ctx, study, trials)
    return new


def _refit_best(ctx: Context, study: optuna.Study, trials: list[Experiment]) -> list[int]:
    """``data.refit``: once no trial is left to run, the best one's refit (kdq.refit), queued once."""
    from kdq import refit

    if not trials[0].spec.data.refit or trials[0].spec.search.two_sided:
        return []
    if any(e.stage in WORKING for e in trials):
        return []
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return []
    best = next((e for e in trials if e.trial == study.best_trial.number), None)
    made = None if best is None else refit.spawn(ctx.store, best, best.metrics or {})
    return [] if made is None else [made]


def _adopt(ctx: Context, study: optuna.Study, trials: list[Experiment]) -> list[int]:
    rows = {e.trial: e for e in trials if e.trial is not None}
    claimed = {t.user_attrs.get(EXP_ATTR) for t in study.get_trials(deepcopy=False)}
    for exp in trials:
        if exp.trial is None and exp.id not in claimed:
            study.enqueue_trial(params_of(exp.spec), user_attrs={EXP_ATTR: exp.id})
    new = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if studies.complete(study, t, trials[0].spec.search):  # killed inside ask: params missing
            t = study.get_trials(deepcopy=False)[t.number]
        if t.number not in rows:
            new += _row_for(ctx, trials, t)
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        t = studies.ask(study, trials[0].spec.search)
        new += _row_for(ctx, trials, study.get_trials(deepcopy=False)[t.number])
    return new


def _row_for(ctx: Context, trials: list[Experiment], t: optuna.trial.FrozenTrial) -> list[int]:
    """Give a running study trial its experiment row: the adopted one, or a new one."""
    exp_id = t.user_attrs.get(EXP_ATTR)
    if exp_id is not None:
        ctx.store.update(exp_id, trial=t.number)
        return []
    first = trials[0]
    spec = trial_spec(document(first.spec), t.params, t.number)
    try:
        [i] = ctx.store.add(
            [(first.source, spec)], priority=first.priority, force=True, columns={"trial": t.number}
        )
    except sqlite3.IntegrityError:  # the row exists: made by a tick that was killed before it returned
        return []
    log.info("search trial queued", search=first.search, trial=t.number, exp=i, params=t.params)
    return [i]


def _report(ctx: Context, study: optuna.Study, frozen: optuna.trial.FrozenTrial, exp: Experiment) -> None:
    p = exp.progress or {}
    epoch, value = p.get("epoch"), studies.intermediate(p)
    if not epoch or value is None or p.get("phase") != "training":
        return
    trial = optuna.trial.Trial(study, frozen._trial_id)
    if epoch not in frozen.intermediate_values:
        trial.report(float(value), int(epoch))
    if not studies.prunable(p) or not trial.should_prune():
        return
    message = f"pruned by {exp.spec.search.pruner} at epoch {epoch}: best validation F1 {value:.4f}"
    if ctx.store.move(exp.id, Stage.TRAINING, Stage.PRUNED, message):
        log.info("search trial pruned", search=exp.search, trial=exp.trial, exp=exp.id, epoch=epoch)
        _tell(ctx, study, frozen, ctx.store.get(exp.id))


def _tell(ctx: Context, study: optuna.Study, frozen: optuna.trial.FrozenTrial, exp: Experiment) -> None:
    if exp.stage is Stage.PRUNED:
        if exp.handle:
            ctx.backend(exp.backend).cancel(exp.handle)  # again after a crash: cancelling twice is harmless
        study.tell(frozen.number, state=TrialState.PRUNED, skip_if_finished=True)
    elif exp.stage in FAILED:
        study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
    elif exp.stage in VALIDATED and exp.metrics:
        objective = exp.spec.search.objective
        score = expected_score(ctx, exp) if objective == "expected_score" else None
        try:
            value = studies.objective_value(objective, exp.metrics, score)
        except (KeyError, ValueError) as exc:
            log.warning("search trial has no objective value", exp=exp.id, error=str(exc))
            study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
            return
        optuna.trial.Trial(study, frozen._trial_id).set_user_attr("epochs", (exp.progress or {}).get("epoch"))
        study.tell(frozen.number, value, skip_if_finished=True)
        log.info("search trial told", search=exp.search, trial=exp.trial, exp=exp.id, value=value)


def expected_score(ctx: Context, exp: Experiment) -> float | None:
    """The expected leaderboard score of a validated trial, as the submission policy sees it now."""
    from kdq.course.scoring import expected_of, outlook

    factor, calibration = outlook(ctx.store, ctx.settings)
    expected = expected_of(exp, factor, calibration)
    return None if expected is None else expected.score


def gpu_hours_used(ctx: Context, trials: list[Experiment]) -> float:
    now = time.time()
    return sum(training_seconds(ctx.store.events(e.id), now) for e in trials) / 3600


def _ask(ctx: Context, study: optuna.Study, trials: list[Experiment]) -> list[int]:
    search = trials[0].spec.search
    live = sum(1 for e in trials if e.stage in LIVE)
    total = len(study.get_trials(deepcopy=False))
    new: list[int] = []
    while total < search.trials and live < search.parallel:
        if search.gpu_hours is not None and gpu_hours_used(ctx, trials) >= search.gpu_hours:
            log.info("search budget spent", search=search.name, gpu_hours=search.gpu_hours)
            break
        t = studies.ask(study, search)
        new += _row_for(ctx, trials, study.get_trials(deepcopy=False)[t.number])
        total, live = total + 1, live + 1
    return new
