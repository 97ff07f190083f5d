"""The Huey tasks: the queue is only a nudge, the database is the truth.

``advance(exp_id)`` runs the steps of one experiment until it must wait, then reschedules itself
(``RetryTask(delay=...)`` keeps the task id). ``reconcile`` runs every minute and re-drives any live
experiment whose task was lost (Huey delivers at most once; a task running when the worker is
killed is gone). A per-experiment lock makes a duplicate nudge harmless.
"""

from __future__ import annotations

import time

from huey import SqliteHuey, crontab
from huey.exceptions import RetryTask, TaskLockedException

from kdq import steps
from kdq.log import get_logger
from kdq.settings import get_settings
from kdq.stages import Stage
from kdq.store import Store


def make_huey(settings) -> SqliteHuey:
    settings.root.mkdir(parents=True, exist_ok=True)
    return SqliteHuey("kdq", filename=str(settings.queue_path), timeout=30, results=False)


settings = get_settings()
huey = make_huey(settings)
log = get_logger("kdq.worker")
REDRIVE_GRACE_S = 30.0
SUBMISSIONS_LOCK = "submissions"
SEARCH_LOCK = "searches"


def lock_name(exp_id: int) -> str:
    return f"exp-{exp_id}"


def context() -> steps.Context:
    return steps.Context(settings=settings, store=Store.open(settings))


@huey.task()
def advance(exp_id: int) -> None:
    try:
        with huey.lock_task(lock_name(exp_id)):
            ctx = context()
            try:
                delay = steps.run_until_wait(ctx, exp_id)
                search_trial = ctx.store.get(exp_id).search is not None
            finally:
                ctx.store.close()
    except TaskLockedException:
        return  # another task is on this experiment right now; it reschedules itself
    if search_trial:
        searches()  # a trial moved on: report its epoch, tell its end, ask for the next one
    if delay is None:
        submissions()  # it may have become ready: the scheduler decides
    else:
        raise RetryTask(delay=delay)


@huey.task()
def submissions() -> None:
    """The submission scheduler, one tick at a time, one tick at once (kdq.course.scheduler)."""
    from kdq.course.scheduler import run_tick

    try:
        with huey.lock_task(SUBMISSIONS_LOCK):
            delay = run_tick(settings)
    except TaskLockedException:
        return
    if delay is not None:
        raise RetryTask(delay=delay)


@huey.task()
def searches() -> None:
    """Every search, one tick at once: tell, prune, ask for the next trials (kdq.search.driver)."""
    from kdq.search import driver

    try:
        with huey.lock_task(SEARCH_LOCK):
            ctx = context()
            try:
                ids = driver.tick(ctx)
            finally:
                ctx.store.close()
    except TaskLockedException:
        return
    for exp_id in ids:
        advance(exp_id)


def scheduler_has_work(store: Store) -> bool:
    return bool(store.list({Stage.READY, Stage.SUBMITTING, Stage.EVALUATING}))


def redrive(grace_s: float) -> list[int]:
    with Store.open(settings) as store:
        ids = steps.due_for_redrive(store, time.time(), grace_s)
    for exp_id in ids:
        advance(exp_id)
    return ids


@huey.periodic_task(crontab(minute="*"))
def reconcile() -> None:
    ids = redrive(REDRIVE_GRACE_S)
    if ids:
        log.info("re-drove experiments whose task was lost", ids=ids)
    with Store.open(settings) as store:
        if scheduler_has_work(store):
            submissions()  # a lost scheduler task costs a minute at most; an extra tick is harmless
    searches()  # trials are re-driven like experiments; a search also asks for its next ones here


def nudge(ids: list[int], to=None, scheduler: bool = False) -> None:
    """Called by the CLI after it changes experiments: look at them (and the scheduler) now.

    ``to``: the settings whose queue to use (the CLI's, which may differ from this module's in tests).
    """
    tasks = (advance, submissions)
    if to is not None and to.queue_path != settings.queue_path:
        other = make_huey(to)
        tasks = tuple(other.task()(t.func) for t in tasks)  # same task names, that queue
    for exp_id in ids:
        tasks[0](exp_id)
    if scheduler:
        tasks[1]()
