"""The scheduler's reads of the course server, each written down in the ledger for ``kdq status``.

Trouble becomes a ``Wait`` (stop this tick, look again in so many seconds) and never an exception
the worker sees: a 429 waits as long as the server named, an unreachable server backs off, a refused
token waits for the user. The status list is read at most once per status interval (the server's
own throttle); the list is read against the previous one (``kdq.course.matching.read_list``).
"""

from __future__ import annotations

from kdq.course import matching
from kdq.course.client import CourseClient
from kdq.course.errors import CourseError, RateLimited, Rejected, ServerError, UnexpectedResponse, Unreachable
from kdq.course.ledger import Ledger
from kdq.course.models import Attempt, LeaderboardRow
from kdq.log import get_logger

log = get_logger("kdq.course.scheduler")


class Wait(Exception):
    """Stop this tick; look again in ``seconds``."""

    def __init__(self, seconds: float, why: str) -> None:
        super().__init__(why)
        self.seconds = seconds


class ServerView:
    def __init__(
        self,
        client: CourseClient,
        ledger: Ledger,
        status_interval_s: float,
        retry_s: float,
        max_retry_s: float,
    ) -> None:
        self.client, self.ledger, self.clock = client, ledger, ledger.clock
        self.status_interval_s, self.retry_s, self.max_retry_s = status_interval_s, retry_s, max_retry_s

    def call(self, what: str, fn):
        """A read; trouble becomes a ``Wait`` and is written down for ``kdq status``."""
        try:
            result = fn()
        except RateLimited as exc:
            self.ledger.record_server(True, f"{what}: {exc}")
            raise Wait(exc.wait_s + 1, str(exc)) from None
        except Unreachable as exc:
            failures = self.ledger.record_server(False, str(exc))
            raise Wait(self.backoff(failures), str(exc)) from None
        except Rejected as exc:  # e.g. Invalid token: nothing to do until the user fixes the settings
            reachable = exc.status_code is not None or self.ledger.server().get("reachable", False)
            fix = "fix KDQ_TOKEN / KDQ_SERVER_URL and restart the worker"
            self.ledger.record_server(reachable, f"{what} refused: {exc}; {fix}")
            raise Wait(self.max_retry_s, str(exc)) from None
        except (ServerError, UnexpectedResponse) as exc:
            self.ledger.record_server(True, str(exc))
            raise Wait(self.retry_s, str(exc)) from None
        self.ledger.record_server(True, "ok")
        return result

    def backoff(self, failures: int) -> float:
        return min(self.retry_s * 2 ** (failures - 1), self.max_retry_s)

    def attempts(self, newer_than: float | None = None) -> list[Attempt]:
        """The status list, from the cache while the throttle is closed (``newer_than``: only a list
        fetched after this time will do). Future times are clamped; a restarted list is reported."""
        cache = self.ledger.status_cache()
        now = self.clock()
        fetched_at = cache.get("ts", float("-inf"))
        fresh = 0 <= now - fetched_at < self.status_interval_s  # "in the future": the clock went back
        if "attempts" in cache and (newer_than is None or fetched_at > newer_than) and fresh:
            return self.ledger.cached_attempts()
        since_call = now - cache.get("called_at", float("-inf"))
        if 0 <= since_call < self.status_interval_s:
            raise Wait(self.status_interval_s - since_call + 0.01, "status throttle")
        self.ledger.status_called(now)
        raw = self.call("status", self.client.status)
        seen = matching.read_list(raw, self.ledger.cached_attempts(), now)
        self.ledger.save_status(seen.attempts, now, restarted=bool(seen.restarted))
        if seen.ahead_s > 1:
            note = (
                f"the server's times run {seen.ahead_s / 3600:.1f} h ahead of this machine (a server not "
                "on Eastern time?); kdq uses the local clock for them"
            )
            log.warning("course.clock_ahead", ahead_s=round(seen.ahead_s), note=note)
            self.ledger.record_server(True, note)
        if seen.restarted:
            note = f"the attempt list restarted ({seen.restarted}); attempts are matched by time and size"
            log.warning("course.list_restarted", note=note)
            self.ledger.record_server(True, note)
        return seen.attempts

    def status_wait(self) -> float:
        called = self.ledger.status_cache().get("called_at", 0)
        return max(0.01, min(self.status_interval_s, called + self.status_interval_s - self.clock()) + 0.01)

    def leaderboard_row(self) -> LeaderboardRow | None:
        """Our row, with a snapshot saved; ``None`` (logged) if the page cannot be had now."""
        try:
            board = self.client.leaderboard()
        except CourseError as exc:
            log.warning("course.leaderboard_unavailable", error=str(exc))
            return None
        ours = board.find(self.client.team)
        self.ledger.save_board(board, ours)
        if ours is None:
            log.warning("course.team_not_on_leaderboard", team=self.client.team)
        return ours
