"""The course ledger: everything kdq writes down about the course server, in one place.

    submissions         one row per upload kdq started (its state, attempt number, file hash, times)
    leaderboard         snapshots of the leaderboard page
    meta "course.*"     the open upload intent, the server's last answer, the cached status list,
                        our last upload, a named rate-limit wait, the scheduler's last crash, its next tick

The scheduler reads the ledger, asks the pure policy, acts, and writes the ledger; ``kdq status``
reads it without a network call. No other module holds SQL about these tables or keys.
"""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

from kdq.course.models import Attempt, Leaderboard, LeaderboardRow
from kdq.course.policy import next_slot
from kdq.log import redact
from kdq.store import Store

INTENT = "course.intent"  # the upload in flight: written before the POST, cleared once its outcome is known
LAST_SUBMIT = "course.last_submit_at"
BLOCKED_UNTIL = "course.blocked_until"  # a 429 named a wait
SERVER = "course.server"  # reachable?, when, the last answer, consecutive failures
STATUS = "course.status"  # the last status list (attempts, their first-seen clamped times), when fetched
BOARD_AT = "course.leaderboard_at"
NEXT_TICK = "course.next_tick_at"
ERROR = "course.error"  # the last tick that failed, until one succeeds
SIZE_FACTOR = "course.size_factor"  # the size factor last fitted from a snapshot (kdq status reads it)
MISSING = "course.missing"  # submission id → when its attempt was first missing from the status list
OUTSIDE = "course.outside"  # uploads made with `kdq server submit`: never taken for the queue's own
DECISION = "course.decision"  # the policy's last skip or restore, with its numbers (kdq status)


def _seen_key(a: Attempt) -> str:
    return f"{a.attempt}|{a.submitted_at_text}"


@cache
def boot_id() -> str:
    """This boot of this machine (Linux), so a monotonic time is compared only with one of the same boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class Ledger:
    def __init__(self, store: Store, clock=time.time, monotonic=time.monotonic) -> None:
        self.store, self.clock, self.monotonic = store, clock, monotonic

    # ------------------------------------------------------------ meta keys

    def _get(self, key: str) -> Any:
        return self.store.get_meta_json(key)

    def intent(self) -> dict | None:
        return self._get(INTENT) or None

    def set_intent(self, intent: dict) -> None:
        """The upload about to start; stamped with the monotonic clock, so the time it has been unknown
        is measured by a clock that NTP and suspend do not step (``elapsed``)."""
        self.store.set_meta(INTENT, {**self.stamp(), **intent})

    def stamp(self) -> dict:
        """Now, on both clocks: ``elapsed`` measures from it."""
        return {"at": self.clock(), "mono": self.monotonic(), "boot": boot_id()}

    def elapsed(self, stamp: dict) -> float:
        """Seconds since ``stamp``: by the monotonic clock on the machine and boot that wrote it, else
        (a reboot, an intent from an older kdq) by the wall clock."""
        if stamp.get("mono") is not None and stamp.get("boot") == boot_id():
            return self.monotonic() - stamp["mono"]
        return self.clock() - stamp["at"]

    def missing_for(self, sub_id: int | None) -> float:
        """Seconds the attempt of submission ``sub_id`` has been missing from the status list (0 at the
        first read without it): one read without it is not loss."""
        marks = self._get(MISSING) or {}
        if str(sub_id) not in marks:
            self.store.set_meta(MISSING, {**marks, str(sub_id): self.stamp()})
            return 0.0
        return self.elapsed(marks[str(sub_id)])

    def found(self, sub_id: int | None) -> None:
        marks = self._get(MISSING) or {}
        if marks.pop(str(sub_id), None) is not None:
            self.store.set_meta(MISSING, marks)

    def note_outside(self, attempt: int | None, size: int | None = None) -> None:
        """An upload made outside the queue (``kdq server submit``): its attempt is never one of ours."""
        rows = [*(self._get(OUTSIDE) or [])[-20:], {"attempt": attempt, "size": size, "at": self.clock()}]
        self.store.set_meta(OUTSIDE, rows)

    def outside_since(self, at: float) -> set[int]:
        """The attempt numbers of outside uploads noted after ``at`` (older numbers may be reused by a
        server that restarted)."""
        return {r["attempt"] for r in self._get(OUTSIDE) or [] if r["attempt"] and r["at"] >= at}

    def clear_intent(self) -> None:
        self.store.set_meta(INTENT, "")

    def server(self) -> dict:
        return self._get(SERVER) or {}

    def record_server(self, reachable: bool, detail: str) -> int:
        """The server's last answer, for ``kdq status``; the count of consecutive failures."""
        failures = 0 if reachable else self.server().get("failures", 0) + 1
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

    def status_cache(self) -> dict:
        return self._get(STATUS) or {}

    def status_called(self, at: float) -> None:
        """A status call is starting: a failed call counts for the throttle too."""
        self.store.set_meta(STATUS, {**self.status_cache(), "called_at": at})

    def save_status(self, attempts: list[Attempt], at: float, restarted: bool = False) -> None:
        """The list just read; ``restarted``: it cannot be the previous one grown (remembered)."""
        cache = self.status_cache()
        restarted_at = at if restarted else cache.get("restarted_at")
        rows = [a.model_dump(mode="json") for a in attempts]
        seen = {_seen_key(a): cache.get("seen", {}).get(_seen_key(a)) or self.stamp() for a in attempts}
        self.store.set_meta(
            STATUS, {"ts": at, "called_at": at, "attempts": rows, "restarted_at": restarted_at, "seen": seen}
        )

    def restarted_since(self, at: float | None) -> bool:
        """Whether the server's attempt list restarted after ``at``."""
        restarted_at = self.status_cache().get("restarted_at")
        return restarted_at is not None and (at is None or restarted_at > at)

    def cached_attempts(self) -> list[Attempt]:
        return [Attempt.model_validate(a) for a in self.status_cache().get("attempts", [])]

    def last_submit_at(self, attempts: list[Attempt] | None = None) -> float | None:
        """The last upload the server knows of, ours or anyone's (``attempts``: default the cached list).
        A server time in the future (our clock stepped back) is ours, or now."""
        attempts = self.cached_attempts() if attempts is None else attempts
        now, seen = self.clock(), self.status_cache().get("seen", {})

        def when(a: Attempt) -> float:  # a server time "in the future": when kdq first saw it
            t = a.submitted_at.timestamp()
            stamp = seen.get(_seen_key(a))
            return t if t <= now else min(now, self._on_today(stamp)) if stamp else now

        server_last = max((when(a) for a in attempts if a.submitted_at), default=None)
        ours = self._instant(LAST_SUBMIT)
        return max((t for t in (server_last, ours) if t is not None), default=None)

    def note_submit(self, at: float) -> None:
        ours = self._instant(LAST_SUBMIT)
        if ours is None or at > ours:
            self._put_instant(LAST_SUBMIT, at)

    def blocked_until(self) -> float | None:
        return self._instant(BLOCKED_UNTIL)

    def block_until(self, at: float) -> None:
        self._put_instant(BLOCKED_UNTIL, at)

    def _put_instant(self, key: str, at: float | None) -> None:
        """An instant (a wall-clock time), kept with a stamp of both clocks (``_instant``)."""
        self.store.set_meta(key, None if at is None else {**self.stamp(), "when": at})

    def _instant(self, key: str) -> float | None:
        """The instant kept under ``key`` on today's wall clock: moved by the time elapsed since it was
        written (monotonic), so a step of the wall clock since moves it too. A bare number: as it is."""
        value = self._get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, dict):
            return float(value)
        return self._on_today(value)

    def _on_today(self, stamp: dict) -> float:
        return self.clock() - self.elapsed(stamp) + (stamp.get("when", stamp["at"]) - stamp["at"])

    def next_window(self, interval_s: float, attempts: list[Attempt] | None = None) -> float:
        """The earliest time the next upload may start: the one place this is worked out."""
        return next_slot(self.last_submit_at(attempts), interval_s, self.blocked_until())

    def board_at(self) -> float:
        return self._get(BOARD_AT) or 0

    def touch_board(self) -> None:
        self.store.set_meta(BOARD_AT, self.clock())

    def next_tick_at(self) -> float | None:
        return self._instant(NEXT_TICK)

    def set_next_tick(self, at: float | None) -> None:
        self._put_instant(NEXT_TICK, at)

    def error(self) -> dict | None:
        return self._get(ERROR) or None

    def set_error(self, message: str) -> None:
        self.store.set_meta(ERROR, {"ts": self.clock(), "error": redact(message)[:500]})

    def recovered(self, message: str) -> None:
        """A failure that could not be written down while it lasted (a full disk), once it is over."""
        now = self.clock()
        self.store.set_meta(ERROR, {"ts": now, "error": redact(message)[:500], "recovered_at": now})

    def clear_error(self) -> None:
        """A tick succeeded: the failure is over (one that recovered stays shown for a while)."""
        error = self.error()
        if error and "recovered_at" not in error:
            self.store.set_meta(ERROR, "")

    def decision(self) -> dict | None:
        return self._get(DECISION) or None

    def note_decision(self, text: str) -> None:
        """A skip or a restore, with the numbers that made it (``kdq status`` shows the last one)."""
        self.store.set_meta(DECISION, {"ts": self.clock(), "text": text[:500]})

    # ------------------------------------------------------------ submissions

    def open_submission(self, exp_id: int, **fields: Any) -> int:
        now = self.clock()
        row = {"exp_id": exp_id, "state": "posting", "created_at": now, "updated_at": now, **fields}
        with self.store.transaction() as db:
            return db["submissions"].insert(row).last_pk

    def update_submission(self, sub_id: int | None, **fields: Any) -> None:
        if sub_id is None:
            return
        with self.store.transaction() as db:
            db["submissions"].update(sub_id, {**fields, "updated_at": self.clock()})

    def latest_submission(self, exp_id: int) -> dict | None:
        rows = list(
            self.store.query("select * from submissions where exp_id = ? order by id desc limit 1", [exp_id])
        )
        return rows[0] if rows else None

    def submissions_of(self, exp_id: int) -> list[dict]:
        return list(self.store.query("select * from submissions where exp_id = ? order by id", [exp_id]))

    def max_attempt(self) -> int:
        rows = list(self.store.query("select max(attempt) m from submissions where state != 'lost'"))
        return rows[0]["m"] or 0

    def recently_lost(self, since: float) -> list[dict]:
        """Our submissions declared lost after ``since`` (an attempt may yet come back graded)."""
        sql = (
            "select id, exp_id, attempt, recorded_at, posted_at from submissions "
            "where state = 'lost' and attempt is not null and updated_at >= ?"
        )
        return list(self.store.query(sql, [since]))

    def our_attempts(self) -> dict[int, tuple[int, float | None]]:
        """Attempt number → (experiment id, its validation F1), for the attempts kdq made and still trusts."""
        return {
            r["attempt"]: (r["exp_id"], r["val_f1"])
            for r in self.store.query(
                "select s.attempt, s.exp_id, e.val_f1 from submissions s join experiments e "
                "on e.id = s.exp_id where s.attempt is not null and s.state != 'lost' order by s.id"
            )
        }

    def attempt_names(self) -> dict[int, str]:
        """Attempt number → "ID name" (``kdq server status``)."""
        rows = self.store.query(
            "select s.attempt, e.id, e.name from submissions s join experiments e "
            "on e.id = s.exp_id where s.attempt is not null and s.state != 'lost' order by s.id"
        )
        return {r["attempt"]: f"{r['id']} {r['name']}" for r in rows}

    def sent_times(self) -> dict[int, float]:
        """Attempt number → when kdq sent that upload (this machine's clock)."""
        sql = (
            "select attempt, created_at from submissions "
            "where attempt is not null and created_at is not null and state != 'lost'"
        )
        return {r["attempt"]: r["created_at"] for r in self.store.query(sql)}

    def live_row(self) -> dict | None:
        """Our latest graded submission."""
        rows = list(
            self.store.query(
                "select id, exp_id, rank from submissions where state = 'successful' "
                "order by attempt desc limit 1"
            )
        )
        return rows[0] if rows else None

    def graded(self) -> list[dict]:
        """Our submissions the server graded successfully, oldest first (calibration, the deadline)."""
        return list(
            self.store.query(
                "select exp_id, attempt, score, model_size, posted_at from submissions "
                "where state = 'successful' order by attempt"
            )
        )

    def last_numbered(self) -> dict | None:
        """Our latest submission that has an attempt number, with its experiment's name."""
        rows = list(
            self.store.query(
                "select s.exp_id, s.attempt, s.state, s.score, s.rank, s.server_status, e.name "
                "from submissions s "
                "join experiments e on e.id = s.exp_id where s.attempt is not null "
                "order by s.id desc limit 1"
            )
        )
        return rows[0] if rows else None

    # ------------------------------------------------------------ leaderboard snapshots

    def save_board(self, board: Leaderboard, ours: LeaderboardRow | None) -> None:
        now = self.clock()
        self.store.set_meta(BOARD_AT, now)
        with self.store.transaction() as db:
            db["leaderboard"].insert(
                {
                    "ts": now,
                    "rows": json.dumps([r.model_dump(mode="json") for r in board.rows]),
                    "own_rank": ours.rank if ours else None,
                    "own_score": ours.score if ours else None,
                }
            )

    def size_factor_fit(self) -> dict | None:
        return self._get(SIZE_FACTOR) or None

    def save_size_factor_fit(self, fit: dict) -> None:
        self.store.set_meta(SIZE_FACTOR, fit)

    def latest_board(self) -> tuple[float, list[dict]] | None:
        rows = list(self.store.query("select rows, ts from leaderboard order by id desc limit 1"))
        return (rows[0]["ts"], json.loads(rows[0]["rows"])) if rows else None
