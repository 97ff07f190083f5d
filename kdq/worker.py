"""The worker's Huey tasks: the queue is only a nudge, the database is the truth.

    q = queue(settings)              # the queue of that home, built on first use (never at import)
    nudge([3, 4], settings)          # the CLI: look at these experiments now

``advance(exp_id)`` runs the steps of one experiment until it must wait, then reschedules itself
(``RetryTask(delay=...)`` keeps the task id). ``submissions`` runs one scheduler tick
(``kdq.course.scheduler``); ``reconcile`` runs every minute and re-drives any live experiment whose
task was lost (Huey delivers at most once). A per-experiment Huey lock makes a duplicate nudge harmless.
Only one worker runs per home (``kdq.homelock``), so the scheduler's one-tick-at-a-time lock is a
lock of this process: it can never be left behind, not even by a failure that cannot write to disk.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from huey import SqliteHuey, crontab
from huey.exceptions import RetryTask, TaskLockedException
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from kdq import notify, steps
from kdq.errors import database_trouble
from kdq.log import get_logger
from kdq.stages import Stage
from kdq.store import Store

log = get_logger("kdq.worker")
REDRIVE_GRACE_S = 30.0
DISK_RETRY_FOR_S = 600.0  # how long a tick that cannot write anything is retried in place
DB_RETRY_S = 30.0  # a step that found kdq.db unusable (read-only, deleted, busy) looks again after this


def lock_name(exp_id: int) -> str:
    return f"exp-{exp_id}"


@dataclass
class Queue:
    """One home's Huey and its tasks."""

    settings: object
    huey: SqliteHuey
    tasks: dict = field(default_factory=dict)
    tick_lock: threading.Lock = field(default_factory=threading.Lock)
    search_lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self, exp_id: int):
        return self.tasks["advance"](exp_id)

    def look(self, exp_ids: list[int]):
        return self.tasks["look"](list(exp_ids))

    def submissions(self):
        return self.tasks["submissions"]()

    def searches(self):
        return self.tasks["searches"]()


_QUEUES: dict[str, Queue] = {}
_QUEUES_LOCK = threading.Lock()


def queue(settings) -> Queue:
    """The queue of ``settings``' home, one per home and process (the first settings given win)."""
    path = str(settings.queue_path)
    with _QUEUES_LOCK:
        if path not in _QUEUES:
            _set_aside_if_damaged(settings.queue_path)
            _QUEUES[path] = _build(settings)
        return _QUEUES[path]


def _set_aside_if_damaged(path: Path) -> None:
    """queue.db holds only nudges (kdq.db is the truth): a damaged one is moved aside and a new one made.
    Nothing is lost: the worker looks at every live experiment at start, and re-drives them every minute."""
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with closing(sqlite3.connect(path)) as conn:
            if conn.execute("pragma quick_check(1)").fetchone()[0] == "ok":
                return
    except sqlite3.OperationalError:
        return  # busy or locked is not damage
    except sqlite3.DatabaseError:
        pass
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    log.warning(
        "queue.db was damaged: set aside, a new one made; kdq.db drives the experiments", aside=str(aside)
    )


def _build(settings) -> Queue:
    settings.root.mkdir(parents=True, exist_ok=True)
    q = Queue(settings, SqliteHuey("kdq", filename=str(settings.queue_path), timeout=30, results=False))

    def advance(exp_id: int) -> None:
        _advance(q, exp_id)

    def look(exp_ids: list[int]) -> None:
        for exp_id in exp_ids:  # the worker fans out: the CLI waits for one message, not one per id
            q.advance(exp_id)

    def submissions() -> None:
        _submissions(q)

    def reconcile() -> None:
        _reconcile(q)

    def searches() -> None:
        _searches(q)

    q.tasks["advance"] = q.huey.task(name="advance")(advance)
    q.tasks["look"] = q.huey.task(name="look")(look)
    q.tasks["submissions"] = q.huey.task(name="submissions")(submissions)
    q.tasks["reconcile"] = q.huey.periodic_task(crontab(minute="*"), name="reconcile")(reconcile)
    q.tasks["searches"] = q.huey.task(name="searches")(searches)
    return q


def _advance(q: Queue, exp_id: int) -> None:
    try:
        with q.huey.lock_task(lock_name(exp_id)):
            with Store.open(q.settings) as store:
                delay = steps.run_until_wait(steps.Context(settings=q.settings, store=store), exp_id)
                search_trial = store.get(exp_id).search is not None
    except TaskLockedException:
        return  # another task is on this experiment right now; it reschedules itself
    except Exception as exc:  # kdq.db read-only, deleted or busy: one line, look again later
        line = database_trouble(exc, q.settings.db_path)
        if line is None:
            raise
        log.error("kdq.db cannot be used now", exp=exp_id, error=line)
        raise RetryTask(delay=DB_RETRY_S) from None
    if search_trial:
        q.searches()  # a trial moved on: report its epoch, tell its end, ask for the next one
    if delay is None:
        q.submissions()  # it may have become ready: the scheduler decides
    else:
        raise RetryTask(delay=delay)


def _submissions(q: Queue) -> None:
    """One scheduler tick at a time; a tick already running reschedules itself."""
    if not q.tick_lock.acquire(blocking=False):
        return
    try:
        delay = tick(q.settings)
    finally:
        q.tick_lock.release()
    if delay is not None:
        raise RetryTask(delay=delay)


def _searches(q: Queue) -> None:
    """Every search, one tick at a time: tell, prune, ask for the next trials (kdq.search.driver)."""
    from kdq.search import driver

    if not q.search_lock.acquire(blocking=False):
        return  # a tick is running; the next trial step asks for another
    try:
        with Store.open(q.settings) as store:
            ids = driver.tick(steps.Context(settings=q.settings, store=store))
    finally:
        q.search_lock.release()
    for exp_id in ids:
        q.advance(exp_id)


def tick(settings) -> float | None:
    """``run_tick``, retried in place while even its failure cannot be written down (a full disk)."""
    from kdq.course.errors import describe_failure
    from kdq.course.ledger import Ledger
    from kdq.course.scheduler import run_tick

    failures: list[str] = []

    def note(state) -> None:
        what = describe_failure(state.outcome.exception(), settings.db_path)
        failures.append(what)
        log.error("course.scheduler_failed", error=what, retry_in_s=round(state.upcoming_sleep, 1))

    retrying = Retrying(
        retry=retry_if_exception_type(Exception),
        wait=wait_exponential(multiplier=0.5, max=30),
        stop=stop_after_delay(DISK_RETRY_FOR_S),
        before_sleep=note,
    )
    try:
        delay = retrying(run_tick, settings)
    except RetryError as exc:
        log.error("course.scheduler_gave_up", error=failures[-1] if failures else repr(exc))
        return 60.0  # the periodic reconcile would bring it back too
    if failures:
        with Store.open(settings) as store:
            Ledger(store).recovered(failures[-1])
    return delay


def scheduler_has_work(store: Store) -> bool:
    return bool(store.list({Stage.READY, Stage.SUBMITTING, Stage.EVALUATING}))


def redrive(q: Queue, grace_s: float) -> list[int]:
    with Store.open(q.settings) as store:
        ids = steps.due_for_redrive(store, time.time(), grace_s)
    for exp_id in ids:
        q.advance(exp_id)
    return ids


def _reconcile(q: Queue) -> None:
    try:
        ids = redrive(q, REDRIVE_GRACE_S)
        with Store.open(q.settings) as store:
            busy = scheduler_has_work(store)
    except Exception as exc:  # kdq.db read-only, deleted or busy: one line a minute, no traceback
        line = database_trouble(exc, q.settings.db_path)
        if line is None:
            raise
        log.error("kdq.db cannot be used now", error=line)
        return
    if ids:
        log.info("re-drove experiments whose task was lost", ids=ids)
    if busy:
        q.submissions()  # a lost scheduler task costs a minute at most; an extra tick is harmless
    q.searches()  # trials are re-driven like experiments; a search also asks for its next ones here
    notify.check(q.settings)  # KDQ_NOTIFY: what became news this minute; it never raises


def nudge(ids: list[int], settings, scheduler: bool = False) -> None:
    """Called by the CLI after it changes experiments: look at them (and the scheduler) now."""
    q = queue(settings)
    if len(ids) == 1:
        q.advance(ids[0])
    elif ids:
        q.look(ids)  # one message (one commit) for an enqueue of 200
    if scheduler:
        q.submissions()
