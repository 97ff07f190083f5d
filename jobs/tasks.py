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
from kdq.store import Store

def make_huey(settings) -> SqliteHuey:
    settings.root.mkdir(parents=True, exist_ok=True)
    return SqliteHuey("kdq", filename=str(settings.queue_path), timeout=30, results=False)


settings = get_settings()
huey = make_huey(settings)
log = get_logger("kdq.worker")
REDRIVE_GRACE_S = 30.0


def context() -> steps.Context:
    return steps.Context(settings=settings, store=Store.open(settings))


@huey.task()
def advance(exp_id: int) -> None:
    try:
        with huey.lock_task(f"exp-{exp_id}"):
            ctx = context()
            try:
                delay = steps.run_until_wait(ctx, exp_id)
            finally:
                ctx.store.close()
    except TaskLockedException:
        return  # another task is on this experiment right now; it reschedules itself
    if delay is not None:
        raise RetryTask(delay=delay)


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


def nudge(ids: list[int], to=None) -> None:
    """Called by the CLI after it changes experiments: look at them now.

    ``to``: the settings whose queue to use (the CLI's, which may differ from this module's in tests).
    """
    task = advance
    if to is not None and to.queue_path != settings.queue_path:
        task = make_huey(to).task()(advance.func)  # same task name, that queue
    for exp_id in ids:
        task(exp_id)
