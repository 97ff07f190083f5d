"""The submission scheduler: the I/O around ``policy.plan``. One ``tick`` does what is due and says
how long until the next one; the worker calls it from one Huey task at a time (a task lock), e.g.

    delay = scheduler.run_tick(settings)      # seconds until it wants to run again; None: idle

What a tick does, in order:
1. **Reconcile an unfinished submission.** Before every POST the intent is written to the database
   (``meta["course.intent"]``: experiment, the highest attempt number the server showed, the time).
   If a tick finds an intent still open (a crash, or an answer that may have been lost), it reads the
   status list: a new attempt number means the upload went through and is adopted; none means it
   did not, and the experiment goes back to ``ready``. A submit is never resent blindly.
2. **Follow the submission being graded** (``evaluating``), one status call per status interval:
   ``successful`` records score, size, attempt, then rank and score from the leaderboard (our row
   by ``KDQ_TEAM``) → ``done``; any other text → ``failed`` with the server's text verbatim; still
   pending while a newer attempt exists → ``done``, marked superseded.
3. **Submit the next model** when ``policy.plan`` says so: the window counts from the last
   submission, ours or the server's ``submitted_at`` (submissions made outside kdq count); a 429
   moves the window to the time the server named; an unreachable server is retried with backoff and
   nothing fails.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kdq import runfolder
from kdq.course.client import CourseClient
from kdq.course.errors import CourseError, RateLimited, Rejected, ServerError, UnexpectedResponse, Unreachable
from kdq.course.models import Attempt, LeaderboardRow
from kdq.course.policy import Candidate, live_submission, plan
from kdq.experiment import Experiment
from kdq.log import get_logger, redact
from kdq.stages import Stage
from kdq.store import Store

log = get_logger("kdq.course.scheduler")

INTENT, LAST_SUBMIT, BLOCKED_UNTIL, SERVER, STATUS, BOARD_AT, NEXT_TICK = (
    "course.intent",
    "course.last_submit_at",
    "course.blocked_until",
    "course.server",
    "course.status",
    "course.leaderboard_at",
    "course.next_tick_at",
)
ERROR = "course.error"  # the last tick that crashed, until one succeeds


class _Wait(Exception):
    """Stop this tick; look again in ``seconds``."""

    def __init__(self, seconds: float, why: str) -> None:
        super().__init__(why)
        self.seconds = seconds


class Scheduler:
    def __init__(
        self,
        store: Store,
        client: CourseClient,
        settings,
        *,
        clock=time.time,
        retry_s: float | None = None,
        max_retry_s: float | None = None,
        eval_timeout_s: float | None = None,
        idle_s: float | None = None,
    ) -> None:
        """Waits default to the server's own pace: with the real 15-minute window an unreachable server
        is retried after 1, 2, 4... minutes up to 15, a graded-never attempt stops blocking after an hour
        and a pending live submission is looked at every minute; a stand-in with short windows (the
        demo) gets proportionally shorter waits."""
        self.store, self.client, self.settings, self.clock = store, client, settings, clock
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

    # ---------------------------------------------------------------- the tick

    def tick(self) -> float | None:
        try:
            return self._tick()
        except _Wait as wait:
            log.debug("course.wait", seconds=round(wait.seconds, 1), why=redact(str(wait)))
            return wait.seconds

    def _tick(self) -> float | None:
        if self.store.get_meta_json(INTENT) or self.store.list({Stage.SUBMITTING}):
            self._reconcile()
        delays = [d for exp in self.store.list({Stage.EVALUATING}) if (d := self._follow(exp)) is not None]
        blocking = [
            d for d, exp in delays if self.clock() - (self._posted_at(exp.id) or 0) < self.eval_timeout_s
        ]
        if blocking:
            return min(blocking)
        self._refresh_rank()
        ready = self.store.list({Stage.READY})
        if not ready:
            return min((d for d, _ in delays), default=None)
        return self._next(ready)

    def _refresh_rank(self) -> None:
        """Ranks move as other teams submit: now and then re-read our row for the live submission."""
        if self.clock() - (self.store.get_meta_json(BOARD_AT) or 0) < self.leaderboard_every_s:
            return
        live = list(
            self.store.db.query(
                "select id, exp_id, rank from submissions where state = 'successful' order by attempt desc limit 1"
            )
        )
        if not live:
            return
        self.store.set_meta(BOARD_AT, self.clock())
        row = self._leaderboard_row()
        if row is not None and row.rank != live[0]["rank"]:
            self._update_sub(live[0]["id"], rank=row.rank, leaderboard_score=row.score)
            self.store.update(live[0]["exp_id"], server_rank=row.rank)
            self.store.event(live[0]["exp_id"], "leaderboard", f"rank {live[0]['rank']} → {row.rank}")

    # ---------------------------------------------------------------- server calls

    def _call(self, what: str, fn):
        """A read; trouble becomes a ``_Wait`` and is written down for ``kdq status``."""
        try:
            result = fn()
        except RateLimited as exc:
            self._server(True, f"{what}: {exc}")
            raise _Wait(exc.wait_s + 1, str(exc)) from None
        except Unreachable as exc:
            failures = self._server(False, str(exc))
            raise _Wait(min(self.retry_s * 2 ** (failures - 1), self.max_retry_s), str(exc)) from None
        except Rejected as exc:  # e.g. Invalid token: nothing to do until the user fixes the settings
            reachable = exc.status_code is not None or (self.store.get_meta_json(SERVER) or {}).get(
                "reachable", False
            )
            self._server(
                reachable, f"{what} refused: {exc}; fix KDQ_TOKEN / KDQ_SERVER_URL and restart the worker"
            )
            raise _Wait(self.max_retry_s, str(exc)) from None
        except (ServerError, UnexpectedResponse) as exc:
            self._server(True, str(exc))
            raise _Wait(self.retry_s, str(exc)) from None
        self._server(True, "ok")
        return result

    def _server(self, reachable: bool, detail: str) -> int:
        old = self.store.get_meta_json(SERVER) or {}
        failures = 0 if reachable else old.get("failures", 0) + 1
        self.store.set_meta(
            SERVER,
            {
                "reachable": reachable,
                "ts": self.clock(),
                "detail": redact(detail)[:500],
                "failures": failures,
            },
        )
        return failures

    def _attempts(self, newer_than: float | None = None) -> list[Attempt]:
        """The status list, from the cache while the status throttle is closed.

        ``newer_than``: only a list fetched after this time will do (reconciling a submission).
        """
        cache = self.store.get_meta_json(STATUS) or {}
        now = self.clock()
        since_call = now - cache.get("called_at", float("-inf"))
        fetched_at = cache.get("ts", float("-inf"))
        if (
            "attempts" in cache
            and (newer_than is None or fetched_at > newer_than)
            and now - fetched_at < self.status_interval_s
        ):
            return [Attempt.model_validate(a) for a in cache["attempts"]]
        if since_call < self.status_interval_s:
            raise _Wait(self.status_interval_s - since_call + 0.01, "status throttle")
        self.store.set_meta(STATUS, {**cache, "called_at": now})  # a failed call counts for the throttle too
        attempts = self._call("status", self.client.status)
        self.store.set_meta(
            STATUS, {"ts": now, "called_at": now, "attempts": [a.model_dump(mode="json") for a in attempts]}
        )
        return attempts

    def _status_wait(self) -> float:
        cache = self.store.get_meta_json(STATUS) or {}
        return max(0.01, cache.get("called_at", 0) + self.status_interval_s - self.clock() + 0.01)

    # ---------------------------------------------------------------- 1. reconcile

    def _reconcile(self) -> None:
        intent = self.store.get_meta_json(INTENT)
        if intent is None:  # SUBMITTING without an intent: only by hand; assume the worst (it may have gone)
            exp = self.store.list({Stage.SUBMITTING})[0]
            intent = {
                "exp_id": exp.id,
                "sub_id": None,
                "baseline": self._known_max_attempt(),
                "at": exp.updated_at,
            }
        exp = self.store.get(intent["exp_id"])
        if exp.stage is not Stage.SUBMITTING:  # the POST never happened, or its outcome is already recorded
            if exp.stage is Stage.READY:
                self._update_sub(intent.get("sub_id"), state="not_sent", message="stopped before the upload")
            self.store.set_meta(INTENT, "")
            return
        attempts = self._attempts(newer_than=intent["at"])
        size = _file_bytes(exp)
        # New attempts of another size were made by someone else (model_size is set at upload).
        new = [a for a in attempts if a.attempt > intent["baseline"] and _same_size(a.size_mb, size)]
        if new:
            first = min(new, key=lambda a: a.attempt)
            self._accepted(
                exp,
                intent,
                first.attempt,
                "reconciled with the status list",
                at=first.submitted_at.timestamp() if first.submitted_at else intent["at"],
                note="the answer was lost, but the status list shows it went through",
            )
        else:
            self._update_sub(
                intent.get("sub_id"), state="not_sent", message="the upload never reached the server"
            )
            self.store.move(
                exp.id,
                Stage.SUBMITTING,
                Stage.READY,
                "the upload did not reach the server; it will be submitted at the next free window",
            )
            self.store.set_meta(INTENT, "")

    def _known_max_attempt(self) -> int:
        rows = list(self.store.db.query("select max(attempt) m from submissions"))
        return rows[0]["m"] or 0

    # ---------------------------------------------------------------- 2. follow

    def _follow(self, exp: Experiment) -> tuple[float, Experiment] | None:
        """``(delay, exp)`` while its attempt is still pending; ``None`` once it is settled."""
        attempts = self._attempts()
        mine = next((a for a in attempts if a.attempt == exp.server_attempt), None)
        sub_id = self._sub_id(exp.id)
        if mine is None or mine.state == "pending":
            newer = [a.attempt for a in attempts if mine is not None and a.attempt > mine.attempt]
            if newer:
                self._update_sub(sub_id, state="superseded", server_status=mine.status)
                self.store.move(
                    exp.id,
                    Stage.EVALUATING,
                    Stage.DONE,
                    f"attempt #{mine.attempt} superseded by attempt #{max(newer)} before it was graded",
                )
                return None
            if mine is not None:
                self._update_sub(sub_id, server_status=mine.status, model_size=mine.size_mb)
            return self._status_wait(), exp
        self._update_sub(
            sub_id, state=mine.state, server_status=mine.status, score=mine.score, model_size=mine.size_mb
        )
        if mine.state == "failed":
            self.store.move(
                exp.id,
                Stage.EVALUATING,
                Stage.FAILED,
                f"server: {mine.status}"[:500],
                error=f"the course server graded attempt #{mine.attempt}: {mine.status}",
            )
            return None
        row = self._leaderboard_row()
        score = (
            mine.score if mine.score is not None else (row.score if row else None)
        )  # a status without score
        self.store.move(
            exp.id,
            Stage.EVALUATING,
            Stage.DONE,
            f"graded: attempt #{mine.attempt} score {score}"
            + (f", rank {row.rank}" if row and row.rank is not None else ""),
            server_score=score,
            server_rank=row.rank if row else None,
        )
        if row is not None:
            self._update_sub(sub_id, rank=row.rank, leaderboard_score=row.score)
        return None

    def _leaderboard_row(self) -> LeaderboardRow | None:
        """Our row, with a snapshot saved; ``None`` (logged) if the page cannot be had now."""
        try:
            board = self.client.leaderboard()
        except CourseError as exc:
            log.warning("course.leaderboard_unavailable", error=str(exc))
            return None
        ours = board.find(self.client.team)
        self.store.set_meta(BOARD_AT, self.clock())
        self.store.db["leaderboard"].insert(
            {
                "ts": self.clock(),
                "rows": json.dumps([r.model_dump(mode="json") for r in board.rows]),
                "own_rank": ours.rank if ours else None,
                "own_score": ours.score if ours else None,
            }
        )
        if ours is None:
            log.warning("course.team_not_on_leaderboard", team=self.client.team)
        return ours

    # ---------------------------------------------------------------- 3. submit

    def _next(self, ready: list[Experiment]) -> float | None:
        attempts = self._attempts()
        ours = {
            r["attempt"]: (r["exp_id"], r["val_f1"])
            for r in self.store.db.query(
                "select s.attempt, s.exp_id, e.val_f1 from submissions s join experiments e on e.id = s.exp_id "
                "where s.attempt is not null"
            )
        }
        live = live_submission(attempts, ours)
        if live is not None and live.exp_id is None:
            live = live_submission(attempts, ours, outside_f1=self._outside_f1())
        if live is not None and live.state == "pending":
            sent = next(
                (a.submitted_at for a in attempts if a.attempt == live.attempt and a.submitted_at), None
            )
            if sent is not None and self.clock() - sent.timestamp() > self.eval_timeout_s:
                live = replace(live, state="successful")  # never graded: judge candidates against it anyway
        server_last = max((a.submitted_at.timestamp() for a in attempts if a.submitted_at), default=None)
        ours_last = self.store.get_meta_json(LAST_SUBMIT)
        last = max((t for t in (server_last, ours_last) if t is not None), default=None)
        candidates = [
            Candidate(
                e.id, e.val_f1, e.spec.submit.policy, e.submit_requested, (e.metrics or {}).get("model_mb")
            )
            for e in ready
        ]
        p = plan(
            candidates,
            live,
            now=self.clock(),
            last_submit_at=last,
            interval_s=self.interval_s,
            blocked_until=self.store.get_meta_json(BLOCKED_UNTIL),
        )
        for exp_id, kind, why in p.finish:
            self.store.move(exp_id, Stage.READY, Stage.SKIPPED if kind == "skipped" else Stage.DONE, why)
        if p.submit is not None:
            return self._submit(self.store.get(p.submit), attempts)
        if p.wait_s is not None:
            return p.wait_s
        remaining = self.store.list({Stage.READY})
        waiting_on_live = any(e.spec.submit.policy != "manual" or e.submit_requested for e in remaining)
        return self.idle_s if waiting_on_live else None

    def _outside_f1(self) -> float | None:
        rows = list(self.store.db.query("select rows, ts from leaderboard order by id desc limit 1"))
        if not rows or self.clock() - rows[0]["ts"] > 3600:
            row = self._leaderboard_row()
            return row.f1 if row else None
        mine = [
            r
            for r in json.loads(rows[0]["rows"])
            if self.client.team and r["team"].casefold() == self.client.team.casefold()
        ]
        return mine[0]["f1"] if mine else None

    def _submit(self, exp: Experiment, attempts: list[Attempt]) -> float:
        path = Path(exp.artifacts or "") / runfolder.MODEL
        now = self.clock()
        baseline = max((a.attempt for a in attempts), default=0)
        sub_id = (
            self.store.db["submissions"]
            .insert({"exp_id": exp.id, "state": "posting", "created_at": now, "updated_at": now})
            .last_pk
        )
        # The intent is on disk before the POST, so a crash at any point after can be reconciled.
        intent = {"exp_id": exp.id, "sub_id": sub_id, "baseline": baseline, "at": now}
        self.store.set_meta(INTENT, intent)
        if not self.store.move(
            exp.id, Stage.READY, Stage.SUBMITTING, f"submitting {path.name} (after attempt #{baseline})"
        ):
            self._update_sub(sub_id, state="abandoned", message="the experiment changed before the upload")
            self.store.set_meta(INTENT, "")
            return 0.0
        log.info("course.submitting", exp=exp.id, file=str(path), baseline=baseline)
        try:
            receipt = self.client.submit(path)
        except RateLimited as exc:
            self.store.set_meta(BLOCKED_UNTIL, now + exc.wait_s)
            return self._put_back(exp, sub_id, "rate_limited", f"rate limited: {exc}", exc.wait_s + 1)
        except CourseError as exc:
            return self._submit_failed(exp, sub_id, exc)
        self.store.set_meta(LAST_SUBMIT, now)
        if (
            receipt.attempt is None
        ):  # accepted, but the number is not in the answer: the status list will tell
            self._update_sub(sub_id, state="unknown", message=receipt.message)
            return self._status_wait()
        self._accepted(exp, intent, receipt.attempt, receipt.message, at=now)
        return self._status_wait()

    def _submit_failed(self, exp: Experiment, sub_id: int, exc: CourseError) -> float:
        if isinstance(exc, Unreachable) and not exc.maybe_sent:
            failures = self._server(False, str(exc))
            return self._put_back(
                exp, sub_id, "not_sent", str(exc), min(self.retry_s * 2 ** (failures - 1), self.max_retry_s)
            )
        if isinstance(exc, Rejected):
            if exc.status_code in (401, 403) or "KDQ_TOKEN" in str(exc):  # our settings, not the model
                self._server(True, f"submit refused: {exc}; fix KDQ_TOKEN and restart the worker")
                return self._put_back(exp, sub_id, "refused", str(exc), self.max_retry_s)
            who = "the course server refused the upload" if exc.status_code else "not uploaded"
            self._update_sub(sub_id, state="rejected", server_status=exc.reason)
            self.store.move(
                exp.id,
                Stage.SUBMITTING,
                Stage.FAILED,
                f"{who}: {exc.reason}"[:500],
                error=f"{who}: {exc.reason}",
            )
            self.store.set_meta(INTENT, "")
            return 0.0
        # The upload may have gone through: keep the intent, the next tick reads the status list.
        self._server(not isinstance(exc, Unreachable), str(exc))
        self._update_sub(sub_id, state="unknown", message=str(exc))
        self.store.event(exp.id, "submission", f"outcome unknown ({exc}); checking the status list next")
        return self._status_wait()

    # ---------------------------------------------------------------- bookkeeping

    def _put_back(self, exp: Experiment, sub_id: int, state: str, message: str, delay: float) -> float:
        self._update_sub(sub_id, state=state, message=message)
        self.store.move(exp.id, Stage.SUBMITTING, Stage.READY, f"not submitted: {message}"[:500])
        self.store.set_meta(INTENT, "")
        return delay

    def _accepted(
        self, exp: Experiment, intent: dict, attempt: int, message: str, at: float, note: str = ""
    ) -> None:
        self._update_sub(
            intent.get("sub_id") or self._sub_id(exp.id),
            state="evaluating",
            attempt=attempt,
            posted_at=at,
            message=message,
        )
        self.store.move(
            exp.id,
            Stage.SUBMITTING,
            Stage.EVALUATING,
            f"submitted: attempt #{attempt}" + (f" ({note})" if note else ""),
            server_attempt=attempt,
            submit_requested=0,
        )
        self.store.set_meta(LAST_SUBMIT, max(at, self.store.get_meta_json(LAST_SUBMIT) or 0))
        self.store.set_meta(INTENT, "")
        log.info("course.accepted", exp=exp.id, attempt=attempt)

    def _sub_id(self, exp_id: int) -> int | None:
        rows = list(
            self.store.db.query(
                "select id from submissions where exp_id = ? order by id desc limit 1", [exp_id]
            )
        )
        return rows[0]["id"] if rows else None

    def _posted_at(self, exp_id: int) -> float | None:
        rows = list(
            self.store.db.query(
                "select posted_at from submissions where exp_id = ? order by id desc limit 1", [exp_id]
            )
        )
        return rows[0]["posted_at"] if rows else None

    def _update_sub(self, sub_id: int | None, **fields: Any) -> None:
        if sub_id is None:
            return
        with self.store.transaction() as db:
            db["submissions"].update(sub_id, {**fields, "updated_at": self.clock()})


def _file_bytes(exp: Experiment) -> int | None:
    try:
        return (Path(exp.artifacts or "") / runfolder.MODEL).stat().st_size
    except OSError:
        return None


def _same_size(size_mb: float | None, size_bytes: int | None) -> bool:
    """Could an attempt of ``size_mb`` be our file? Unknown sizes count as yes (MiB or MB, 2% slack)."""
    if size_mb is None or size_bytes is None:
        return True
    return any(abs(size_mb - size_bytes / unit) <= max(0.01, 0.02 * size_mb) for unit in (1024 * 1024, 1e6))


def run_tick(
    settings,
    store: Store | None = None,
    client: CourseClient | None = None,
    *,
    force: bool = False,
    clock=time.time,
    **options: Any,
) -> float | None:
    """One tick with the store and client the settings name (the worker's entry point).

    Self-deduplicating: each tick writes when it wants the next one; a call that comes earlier than
    that (a second chain of rescheduled tasks, a periodic nudge) returns ``None`` at once and so ends
    its chain, while the chain that is due carries on. ``force`` ticks anyway.
    """
    own_store, own_client = store is None, client is None
    store = store or Store.open(settings)
    try:
        due = store.get_meta_json(NEXT_TICK)
        now = clock()
        if not force and due is not None and now < due - 0.05:
            return None
        client = client or CourseClient.from_settings(
            settings, rate_limit_wait_max_s=0, read_attempts=2, backoff_s=0.5
        )
        scheduler = Scheduler(store, client, settings, clock=clock, **options)
        try:
            delay = scheduler.tick()
        except Exception as exc:  # a bug or a surprise: say so in `kdq status`, look again later
            log.exception("course.scheduler_crashed", error=redact(repr(exc)))
            store.set_meta(ERROR, {"ts": clock(), "error": redact(f"{type(exc).__name__}: {exc}")[:500]})
            delay = scheduler.retry_s
        else:
            if store.get_meta(ERROR):
                store.set_meta(ERROR, "")
        store.set_meta(NEXT_TICK, None if delay is None else now + delay)
        return delay
    finally:
        if own_client and client is not None:
            client.close()
        if own_store:
            store.close()
