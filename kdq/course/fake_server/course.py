"""The stand-in course server's state and rules, without HTTP: teams, rate limits, submissions,
background grading, the leaderboard. ``app.py`` puts HTTP in front of it.

Rules follow docs/getting-started.md: one accepted submission per team per ``submit_interval_s``, one
status call per ``status_interval_s``, uploads over ``max_size_mb`` refused, every attempt graded in
the background, an attempt left pending for good once a newer one exists (``abandon_superseded``),
the leaderboard showing each team's latest successful attempt.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from kdq import grader
from kdq.course.fake_server.evaluate import BrokenModel, Dataset, evaluate, load_dataset
from kdq.course.models import EASTERN
from kdq.log import get_logger

log = get_logger("kdq.fake_server")
TIME_FORMAT = "%b %d, %Y %I:%M:%S %p"


@dataclass
class Submission:
    team: str
    attempt: int
    filename: str
    path: Path
    size_mb: float
    submitted_at: datetime
    status: str = "pending"
    f1: float | None = None
    score: float | None = None

    def as_status(self) -> dict:
        return {
            "attempt": self.attempt,
            "status": self.status,
            "model_size": self.size_mb,
            "submitted_at": self.submitted_at.astimezone(EASTERN).strftime(TIME_FORMAT),
            "score": self.score,
        }


@dataclass
class Outcome:
    """What an HTTP layer should answer: a status code and a JSON body."""

    code: int
    body: dict | list


def wait_message(remaining_s: float, unit: str) -> str:
    if unit == "minutes":
        return f"Rate limit: wait {max(1, math.ceil(remaining_s / 60))} minutes"
    return f"Rate limit: wait {max(1, math.ceil(remaining_s))} seconds"


@dataclass
class FakeCourse:
    teams: dict[str, str]  # team name -> token
    data_dir: Path | None = None
    submit_interval_s: float = 900.0
    status_interval_s: float = 15.0
    max_size_mb: float = grader.MAX_MIB
    size_factor: float = 0.01  # score = 10 * macro-F1 - size_term(MB); the term's scale
    size_curve: Literal["linear", "capped"] = "linear"  # factor x MB, or factor x MB normalised between caps
    size_check: Literal["upload", "status"] = "upload"  # reject at upload (400) or accept and fail in status
    wording: Literal["alternate", "short", "long"] = "alternate"
    eval_delay_s: float = 0.0
    abandon_superseded: bool = True
    eval_threads: int = 1
    clock_ahead_s: float = 0.0  # the times it shows run this far ahead (a server not on Eastern time)
    clock: Callable[[], float] = time.time
    submissions: list[Submission] = field(default_factory=list)
    forgotten: list[Submission] = field(default_factory=list)  # lost in a restart without state (``forget``)
    requests: list[dict] = field(default_factory=list)  # every request to a course route, for assertions

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._last_submit: dict[str, float] = {}
        self._last_status: dict[str, float] = {}
        self._uploads = tempfile.TemporaryDirectory(prefix="kdq-fake-server-")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-grader")
        self._futures: list[Future] = []
        self._dataset: Dataset | None = None
        self._closing = threading.Event()

    # ---------------------------------------------------------------- identity and limits

    def team_of(self, token: str | None) -> str | None:
        if not token:
            return None
        return next((name for name, t in self.teams.items() if t == token), None)

    def add_team(self, name: str, token: str) -> None:
        with self._lock:
            self.teams[name] = token

    def _unit(self) -> str:
        # The real server speaks minutes; with a test interval under a minute that would lie.
        return "minutes" if self.submit_interval_s >= 60 else "seconds"

    def log_request(self, route: str, method: str, code: int) -> None:
        """Record a request as answered (a stalled answer is recorded once it is sent)."""
        with self._lock:
            self.requests.append({"route": route, "method": method, "code": code, "at": self.clock()})

    def count(self, route: str) -> int:
        """How many requests reached ``route`` (answered)."""
        with self._lock:
            return sum(1 for r in self.requests if r["route"] == route)

    # ---------------------------------------------------------------- the three endpoints

    def submit(self, token: str | None, filename: str | None, data: bytes | None) -> Outcome:
        if not token or filename is None or data is None:
            return Outcome(400, {"error": "Missing token or file"})
        team = self.team_of(token)
        if team is None:
            return Outcome(403, {"error": "Invalid token"})
        if not filename.endswith((".pt", ".pth")):
            return Outcome(400, {"error": "Only .pt or .pth files are allowed"})
        size_mb = len(data) / 1024 / 1024
        if size_mb > self.max_size_mb and self.size_check == "upload":
            return Outcome(400, {"error": f"File too large (>{self.max_size_mb:.1f} MB)"})
        with self._lock:
            now = self.clock()
            last = self._last_submit.get(team)
            if last is not None and now - last < self.submit_interval_s:
                return Outcome(
                    429, {"error": wait_message(self.submit_interval_s - (now - last), self._unit())}
                )
            self._last_submit[team] = now
            attempt = 1 + sum(1 for s in self.submissions if s.team == team)
            path = (
                Path(self._uploads.name) / f"{len(self.submissions) + len(self.forgotten):05d}-{attempt}.pt"
            )
            path.write_bytes(data)
            sub = Submission(
                team, attempt, filename, path, round(size_mb, 4), datetime.fromtimestamp(now, UTC)
            )
            self.submissions.append(sub)
            if size_mb > self.max_size_mb:
                sub.status = "rejected (file too large)"
            else:
                self._futures.append(self._pool.submit(self._grade, sub, self.clock() + self.eval_delay_s))
        log.info("fake_server.submitted", team=team, attempt=attempt, size_mb=sub.size_mb)
        return Outcome(200, self._receipt(sub))

    def _receipt(self, sub: Submission) -> dict:
        short = self.wording == "short" or (self.wording == "alternate" and sub.attempt % 2 == 1)
        if short:
            return {
                "message": f"Submission received for team '{sub.team}'. Attempt #{sub.attempt}.",
                "status": "pending",
                "attempt": sub.attempt,
            }
        return {
            "message": f"Submission received for team '{sub.team}'. This is attempt #{sub.attempt}, "
            "status pending, evaluation pending."
        }

    def status(self, token: str | None) -> Outcome:
        team = self.team_of(token)
        if team is None:
            return Outcome(403, {"error": "Invalid token"})
        with self._lock:
            now = self.clock()
            last = self._last_status.get(team)
            if last is not None and now - last < self.status_interval_s:
                return Outcome(429, {"error": wait_message(self.status_interval_s - (now - last), "seconds")})
            self._last_status[team] = now
            return Outcome(200, [self._shown(s) for s in self.submissions if s.team == team])

    def _shown(self, sub: Submission) -> dict:
        """A status row, its time ``clock_ahead_s`` ahead."""
        row = sub.as_status()
        if self.clock_ahead_s:
            ahead = sub.submitted_at + timedelta(seconds=self.clock_ahead_s)
            row["submitted_at"] = ahead.astimezone(EASTERN).strftime(TIME_FORMAT)
        return row

    def leaderboard_rows(self) -> list[Submission]:
        """Each team's latest successful attempt, best score first, the smaller model on a tie."""
        with self._lock:
            latest: dict[str, Submission] = {}
            for sub in self.submissions:
                if sub.status == "successful":
                    latest[sub.team] = sub
        return sorted(latest.values(), key=lambda s: (-(s.score or 0.0), s.size_mb))

    # ---------------------------------------------------------------- grading

    def dataset(self) -> Dataset:
        if self._dataset is None:
            if self.data_dir is None:
                raise ValueError("the stand-in server has no test images (start it with --data-dir)")
            self._dataset = load_dataset(self.data_dir)
        return self._dataset

    def _grade(self, sub: Submission, deadline: float) -> None:
        """Grade ``sub`` once the stand-in's clock reaches ``deadline`` (its upload plus ``eval_delay_s``):
        a test moves that clock, a loaded machine does not."""
        while not self._closing.wait(max(0.0, min(0.1, deadline - self.clock()))):
            if any(s is sub for s in self.forgotten):
                return  # lost in a restart: never graded
            if self.clock() >= deadline:
                break
        if self._closing.is_set():
            return
        with self._lock:
            if self.abandon_superseded and any(
                s.team == sub.team and s.attempt > sub.attempt for s in self.submissions
            ):
                return  # stays "pending" for good, as on the real server
        try:
            f1 = evaluate(sub.path, self.dataset(), threads=self.eval_threads)
        except BrokenModel:
            status, f1 = "broken file", None
        except Exception as exc:  # the real server reports a sentence with the exception in it
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            status, f1 = f"Evaluation failed: {type(exc).__name__}: {(lines or [''])[-1][:300]}", None
        else:
            status = "successful"
        with self._lock:
            sub.status, sub.f1 = status, f1
            sub.score = None if f1 is None else round(10 * f1 - self.size_term(sub.size_mb), 4)
        log.info(
            "fake_server.graded", team=sub.team, attempt=sub.attempt, status=status, f1=f1, score=sub.score
        )

    def size_term(self, size_mb: float) -> float:
        """The hidden size factor: linear in MB, or (as the previous homework's server did) the size
        min-max normalised between ``grader.SIZE_CAPS_MIB``, times ``size_factor``."""
        if self.size_curve == "linear":
            return self.size_factor * size_mb
        lo, hi = grader.SIZE_CAPS_MIB
        return self.size_factor * (min(max(size_mb, lo), hi) - lo) / (hi - lo)

    def wait_graded(self, timeout: float = 60.0) -> None:
        """Block until every queued grading has run (tests)."""
        deadline = time.monotonic() + timeout
        for future in list(self._futures):
            future.result(timeout=max(0.0, deadline - time.monotonic()))

    def forget(self) -> None:
        """A restart without state: every submission and clock gone, attempt numbers start again at #1
        (what was lost stays in ``forgotten``, for tests to count every upload that ever arrived)."""
        with self._lock:
            self.forgotten.extend(self.submissions)
            self.submissions.clear()
            self._last_submit.clear()
            self._last_status.clear()
        log.info("fake_server.forgot", lost=len(self.forgotten))

    def reset_limits(self) -> None:
        with self._lock:
            self._last_submit.clear()
            self._last_status.clear()

    def close(self) -> None:
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._uploads.cleanup()
