"""The submission scheduler: read the ledger, ask the pure policy, act, write the ledger. One ``tick``
does what is due and says how long until the next one (``None``: idle); the worker runs one at a time.

    delay = scheduler.run_tick(settings)

What a tick does, in order:
1. **Settle the upload in flight.** Before every POST the intent (experiment, file hash and size,
   time) is in the ledger. An intent still open (a crash, a timeout, a lost answer) stays *unknown*
   until the status list shows an attempt that matches it (size, recorded after the intent), which is
   adopted as ours, or until a full submission interval plus a grace has passed with the server
   answering and nothing matched: then it was not sent. While it is unknown nothing else is uploaded.
2. **Follow the submissions being graded**, matched by number, size and recorded time (never by
   number alone): ``successful`` records score and rank → ``done``; any other text → ``failed`` with
   the server's words; pending while a newer attempt exists → ``done``, superseded; gone from a list
   that restarted → ``done``, lost, reported.
3. **Submit the next model** when ``policy.plan`` says so, from a read-only copy named by the hash
   recorded at validation (see ``kdq.course.sealed``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kdq import runfolder
from kdq.course import matching, scoring
from kdq.course.client import CourseClient
from kdq.course.ledger import BLOCKED_UNTIL, ERROR, INTENT, LAST_SUBMIT, NEXT_TICK, SERVER, STATUS, Ledger
from kdq.course.models import Attempt, known_word
from kdq.course.policy import live_submission, plan
from kdq.course.server_view import ServerView, Wait
from kdq.course.upload import Uploader, file_bytes
from kdq.experiment import Experiment
from kdq.log import get_logger, redact
from kdq.stages import Stage
from kdq.store import Store

log = get_logger("kdq.course.scheduler")
__all__ = ["BLOCKED_UNTIL", "ERROR", "INTENT", "LAST_SUBMIT", "NEXT_TICK", "SERVER", "STATUS", "Scheduler"]


class Scheduler:
    def __init__(
        self,
        store: Store,
        client: CourseClient,
        settings,
        *,
        clock=time.time,
        monotonic=time.monotonic,
        retry_s: float | None = None,
        max_retry_s: float | None = None,
        eval_timeout_s: float | None = None,
        idle_s: float | None = None,
    ) -> None:
        """Waits follow the server's pace: with the real 15-minute window an unreachable server is
        retried after 1, 2, 4... minutes up to 15, a never-graded attempt stops blocking after an hour,
        a pending one is looked at every minute; a stand-in with short windows gets shorter waits."""
        self.store, self.client, self.settings, self.clock = store, client, settings, clock
        self.ledger = Ledger(store, clock, monotonic)
        self.interval_s = settings.submit_interval_s
        self.status_interval_s = settings.status_interval_s
        pace = max(1.0, self.interval_s / 4)
        self.retry_s = retry_s if retry_s is not None else min(60.0, pace)
        self.max_retry_s = (
            max_retry_s if max_retry_s is not None else max(self.retry_s, min(900.0, self.interval_s))
        )
        self.eval_timeout_s = (
            eval_timeout_s if eval_timeout_s is not None else max(600.0, 4 * self.interval_s)
        )
        self.idle_s = idle_s if idle_s is not None else max(self.status_interval_s, min(60.0, pace))
        self.leaderboard_every_s = min(1800.0, max(60.0, 2 * self.interval_s))
        self.view = ServerView(client, self.ledger, self.status_interval_s, self.retry_s, self.max_retry_s)
        self.uploads = Uploader(store, self.ledger, self.view, settings, interval_s=self.interval_s)

    # ---------------------------------------------------------------- the tick

    def tick(self) -> float | None:
        try:
            return self._tick()
        except Wait as wait:
            log.debug("course.wait", seconds=round(wait.seconds, 1), why=redact(str(wait)))
            return wait.seconds

    def _tick(self) -> float | None:
        if self.ledger.intent() or self.store.list({Stage.SUBMITTING}):
            self.uploads.settle()
        delays = [d for exp in self.store.list({Stage.EVALUATING}) if (d := self._follow(exp)) is not None]
        blocking = [
            d for d, exp in delays if self.clock() - (self._posted_at(exp.id) or 0) < self.eval_timeout_s
        ]
        if blocking:
            return min(blocking)
        self._refresh_rank()
        self._relook_lost()
        ready = self.store.list({Stage.READY})
        if not ready and not scoring.deadline_ahead(self.settings, self.clock()):
            if not scoring.explored_worse(self.store, self.ledger):
                return min((d for d, _ in delays), default=None)
        return self._next(ready)  # with nothing ready too, before a deadline or after an exploration:
        # the best graded may go back

    def _refresh_rank(self) -> None:
        """Ranks move as other teams submit: now and then re-read our row for the live submission."""
        if self.clock() - self.ledger.board_at() < self.leaderboard_every_s:
            return
        live = self.ledger.live_row()
        if live is None:
            return
        self.ledger.touch_board()
        row = self.view.leaderboard_row()
        if row is not None and row.rank != live["rank"]:
            self.ledger.update_submission(live["id"], rank=row.rank, leaderboard_score=row.score)
            self.store.update(live["exp_id"], server_rank=row.rank)
            self.store.event(live["exp_id"], "leaderboard", f"rank {live['rank']} → {row.rank}")

    # ---------------------------------------------------------------- follow the grading

    def _follow(self, exp: Experiment) -> tuple[float, Experiment] | None:
        """``(delay, exp)`` while its attempt is still pending; ``None`` once it is settled."""
        sub = self.ledger.latest_submission(exp.id) or {}
        sub_id, since = sub.get("id"), sub.get("posted_at")
        attempts = self.view.attempts(newer_than=since)
        mine = self._ours(attempts, exp, sub, exp.server_attempt)
        if mine is None:
            return self._missing(exp, sub_id, attempts)
        self.ledger.found(sub_id)
        if sub.get("recorded_at") is None and mine.submitted_at is not None:
            self.ledger.update_submission(sub_id, recorded_at=mine.submitted_at.timestamp())
        if mine.state == "pending":
            newer = [a.attempt for a in attempts if a.attempt > mine.attempt]
            if newer:
                self.ledger.update_submission(sub_id, state="superseded", server_status=mine.status)
                why = f"attempt #{mine.attempt} superseded by attempt #{max(newer)} before it was graded"
                self.store.move(exp.id, Stage.EVALUATING, Stage.DONE, why)
                return None
            if not known_word(mine.status) and sub.get("server_status") != mine.status:
                self.store.event(
                    exp.id,
                    "submission",
                    f"the server says {mine.status!r} for attempt #{mine.attempt}: not a final word kdq "
                    "knows, so not graded yet (a known word or a score ends it)",
                )
            self.ledger.update_submission(sub_id, server_status=mine.status, model_size=mine.size_mb)
            return self.view.status_wait(), exp
        self.ledger.update_submission(
            sub_id, state=mine.state, server_status=mine.status, score=mine.score, model_size=mine.size_mb
        )
        if mine.state == "failed":
            error = f"the course server graded attempt #{mine.attempt}: {mine.status}"
            self.store.move(
                exp.id, Stage.EVALUATING, Stage.FAILED, f"server: {mine.status}"[:500], error=error
            )
            return None
        row = self.view.leaderboard_row()
        score = (
            mine.score if mine.score is not None else (row.score if row else None)
        )  # a status without score
        rank = f", rank {row.rank}" if row and row.rank is not None else ""
        self.store.move(
            exp.id,
            Stage.EVALUATING,
            Stage.DONE,
            f"graded: attempt #{mine.attempt} score {score}{rank}",
            server_score=score,
            server_rank=row.rank if row else None,
        )
        self.store.supersede_ranks(exp.id)  # the newest graded upload is the live one
        if row is not None:
            self.ledger.update_submission(sub_id, rank=row.rank, leaderboard_score=row.score)
        return None

    def _ours(
        self, attempts: list[Attempt], exp: Experiment, sub: dict, number: int | None
    ) -> Attempt | None:
        """Submission ``sub``'s attempt on the list: its number, size and time (``matching.is_ours``)."""
        since, size = sub.get("posted_at"), file_bytes(Path(exp.artifacts or "") / runfolder.MODEL)
        restarted = self.ledger.restarted_since(since)
        kw = {
            "size_bytes": size,
            "recorded_at": sub.get("recorded_at"),
            "since": since,
            "restarted": restarted,
        }
        return next(
            (a for a in attempts if matching.is_ours(a, number=number, tol_s=self.uploads.tol_s, **kw)), None
        )

    def _missing(
        self, exp: Experiment, sub_id: int | None, attempts: list[Attempt]
    ) -> tuple[float, Experiment] | None:
        """Our attempt is not on a list fetched after the upload. Absent from one read (an empty or
        renumbered list) is not loss: only a full window plus the grace without it is."""
        gone_s = self.ledger.missing_for(sub_id)
        if gone_s < self.interval_s + self.uploads.grace_s:
            return self.view.status_wait(), exp
        shown = ", ".join(f"#{a.attempt}" for a in attempts) or "none"
        why = (
            f"attempt #{exp.server_attempt} is no longer on the server's status list ({gone_s / 60:.0f} min "
            f"without it; it shows {shown}: the server restarted without its state?); no grade was "
            "recorded (kdq records it if it comes back graded); `kdq server status` shows what the server has"
        )
        log.warning("course.attempt_lost", exp=exp.id, attempt=exp.server_attempt, shown=shown)
        self.ledger.update_submission(sub_id, state="lost", message=why[:500])
        self.ledger.found(sub_id)
        self.store.move(exp.id, Stage.EVALUATING, Stage.DONE, why[:500])
        return None

    def _relook_lost(self) -> None:
        """An attempt declared lost that comes back graded (the list was away longer than a window):
        its grade is recorded after all. Looked for until the grading timeout has passed."""
        lost = self.ledger.recently_lost(self.clock() - self.eval_timeout_s)
        if not lost:
            return
        try:
            attempts = self.view.attempts()
        except Wait:
            return
        for sub in lost:
            exp = self.store.get(sub["exp_id"])
            mine = self._ours(attempts, exp, sub, sub["attempt"])
            if mine is None or mine.state != "successful":
                continue
            fields = {"server_status": mine.status, "score": mine.score, "model_size": mine.size_mb}
            self.ledger.update_submission(sub["id"], state="successful", **fields)
            self.store.update(exp.id, server_score=mine.score)
            why = f"attempt #{mine.attempt} is back on the server's status list, graded: score {mine.score}"
            self.store.event(exp.id, "submission", why)

    # ---------------------------------------------------------------- what to submit next

    def _next(self, ready: list[Experiment]) -> float | None:
        attempts = self.view.attempts()
        ours = self.ledger.our_attempts()
        live = live_submission(attempts, ours)
        if live is not None and live.exp_id is None:
            live = live_submission(attempts, ours, outside_f1=self._outside_f1())
        if live is not None and live.state == "pending":
            sent = next(
                (a.submitted_at for a in attempts if a.attempt == live.attempt and a.submitted_at), None
            )
            if sent is not None and self.clock() - sent.timestamp() > self.eval_timeout_s:
                live = replace(live, state="successful")  # never graded: judge candidates against it anyway
        p = plan(
            scoring.candidates(self.store, ready),
            scoring.live_details(self.store, self.ledger, live, self.client.team),
            now=self.clock(),
            last_submit_at=self.ledger.last_submit_at(attempts),
            interval_s=self.interval_s,
            blocked_until=self.ledger.blocked_until(),
            **scoring.inputs(self.store, self.ledger, self.settings, self.interval_s),
        )
        for exp_id, kind, why in p.finish:
            self.store.move(exp_id, Stage.READY, Stage.SKIPPED if kind == "skipped" else Stage.DONE, why)
            if kind == "skipped":
                log.info("course.skipped", exp=exp_id, why=why)
                self.ledger.note_decision(f"experiment {exp_id} {why}")
        if p.restore is not None:  # the best graded model goes back up, as `kdq submit ID`
            log.info("course.restore", exp=p.restore, why=p.reason)
            self.ledger.note_decision(p.reason)
            self.store.request_submit(p.restore)
            self.store.event(p.restore, "submit", p.reason)
            return 0.0
        if p.submit is not None:
            return self.uploads.submit(self.store.get(p.submit), attempts)
        if p.wait_s is not None:
            return p.wait_s
        remaining = self.store.list({Stage.READY})
        waiting_on_live = any(e.spec.submit.policy != "manual" or e.submit_requested for e in remaining)
        return self.idle_s if waiting_on_live or scoring.deadline_ahead(self.settings, self.clock()) else None

    def _outside_f1(self) -> float | None:
        latest = self.ledger.latest_board()
        if latest is None or self.clock() - latest[0] > 3600:
            row = self.view.leaderboard_row()
            return row.f1 if row else None
        team = (self.client.team or "").casefold()
        mine = [r for r in latest[1] if team and r["team"].casefold() == team]
        return mine[0]["f1"] if mine else None

    def _posted_at(self, exp_id: int) -> float | None:
        return (self.ledger.latest_submission(exp_id) or {}).get("posted_at")


def run_tick(
    settings,
    store: Store | None = None,
    client: CourseClient | None = None,
    *,
    force: bool = False,
    clock=time.time,
    monotonic=time.monotonic,
    **options: Any,
) -> float | None:
    """One tick with the store and client the settings name (the worker's entry point).

    Self-deduplicating: each tick writes when it wants the next one; a call that comes earlier than
    that (a second chain of rescheduled tasks, a periodic nudge) returns ``None`` at once and so ends
    its chain, while the chain that is due carries on. ``force`` ticks anyway. A tick that fails is
    logged, written down for ``kdq status`` and retried after ``retry_s``; if even that cannot be
    written (a full disk), the failure is raised, named (``describe_failure``), for the worker to retry.
    """
    from kdq.course.errors import describe_failure

    own_store, own_client = store is None, client is None
    store = store or Store.open(settings)
    try:
        ledger = Ledger(store, clock, monotonic)
        due = ledger.next_tick_at()
        now = clock()
        if not force and due is not None and now < due - 0.05:
            return None
        client = client or CourseClient.from_settings(
            settings, rate_limit_wait_max_s=0, read_attempts=2, backoff_s=0.5
        )
        scheduler = Scheduler(store, client, settings, clock=clock, monotonic=monotonic, **options)
        try:
            delay = scheduler.tick()
        except Exception as exc:  # a bug or a surprise: say so in `kdq status`, look again later
            what = describe_failure(exc, settings.db_path)
            log.error("course.scheduler_crashed", error=what)
            ledger.set_error(what)
            delay = scheduler.retry_s
        else:
            ledger.clear_error()
        ledger.set_next_tick(None if delay is None else now + delay)
        return delay
    finally:
        if own_client and client is not None:
            client.close()
        if own_store:
            store.close()
