"""Typed results of the course server, and the pure functions that read its loose JSON into them.

The server's answers are loosely shaped (fields may be missing, numbers may be strings or "N/A",
two wordings of the same message exist), so every reader here is forgiving about form and strict
about meaning: the attempt number comes from the ``attempt`` field or from ``attempt #N`` in any
wording; a status text is kept verbatim; a time is US Eastern text turned into an aware UTC datetime.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

EASTERN = ZoneInfo("America/New_York")
TIME_FORMATS = ("%b %d, %Y %I:%M:%S %p", "%B %d, %Y %I:%M:%S %p", "%b %d, %Y %H:%M:%S", "%Y-%m-%d %H:%M:%S")
ATTEMPT_RE = re.compile(r"attempt\s*#\s*(\d+)", re.IGNORECASE)
TEAM_RE = re.compile(r"team\s+'([^']*)'", re.IGNORECASE)

# The two documented good values, plus in-progress words a server might plausibly use instead of
# "pending". Only a known final word (or a score) ends an attempt: a word kdq does not know ("evaluation
# pending", "in queue", none at all) is "not final yet", since taking it for a failure loses the grade.
PENDING_WORDS = ("pending", "queued", "evaluating", "processing", "running", "in progress", "waiting")
SUCCESS_WORDS = ("successful", "success", "succeeded", "completed", "evaluated", "done")
# The failures the course's server writes: `broken file`, `rejected (file too large)`, `internal cache
# error`, `eval failed with error: ...`; and the words any error text carries.
FAILURE_MARKS = ("broken", "reject", "error", "fail", "invalid", "too large", "exception", "traceback")

State = Literal["pending", "successful", "failed"]


class Result(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())


def as_number(value: Any) -> float | None:
    """A float, or ``None`` for null, "N/A", "", "pending" and anything else that is not a finite number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().rstrip("%").replace(",", "")
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def as_int(value: Any) -> int | None:
    number = as_number(value)
    return int(number) if number is not None and number == int(number) else None


def parse_attempt_number(message: str | None, field: Any = None) -> int | None:
    """The attempt number: the ``attempt`` field when it is a number, else ``attempt #N`` in the text."""
    number = as_int(field)
    if number is not None:
        return number
    match = ATTEMPT_RE.search(message or "")
    return int(match.group(1)) if match else None


def parse_eastern(text: Any) -> datetime | None:
    """``"Nov 12, 2025 10:46:41 AM"`` (US Eastern) as an aware UTC datetime; ``None`` if unreadable."""
    if not isinstance(text, str) or not text.strip():
        return None
    clean = " ".join(text.split())
    for fmt in TIME_FORMATS:
        try:
            naive = datetime.strptime(clean, fmt)
        except ValueError:
            continue
        return naive.replace(tzinfo=EASTERN).astimezone(UTC)
    return None


def _words(status: str) -> str:
    return " ".join(status.lower().split())


def classify(status: str, score: float | None = None) -> State:
    """A known success word, or a score with any word but a failure's: successful; a failure's words:
    failed; anything else (pending, and every word kdq does not know): not final yet."""
    word = _words(status)
    if word in SUCCESS_WORDS:
        return "successful"
    if any(mark in word for mark in FAILURE_MARKS):
        return "failed"
    return "successful" if score is not None else "pending"


def known_word(status: str) -> bool:
    """Whether ``status`` is a word kdq knows (else a pending state is only "not final yet")."""
    word = _words(status)
    return word in SUCCESS_WORDS or word.startswith(PENDING_WORDS) or any(m in word for m in FAILURE_MARKS)


class Attempt(Result):
    """One row of the status list."""

    attempt: int
    status: str = Field(description="The server's text, verbatim.")
    size_mb: float | None = Field(None, description="model_size, MiB, known from upload on.")
    submitted_at: datetime | None = Field(None, description="Aware UTC; None if missing or unreadable.")
    submitted_at_text: str | None = None
    score: float | None = None
    raw: dict[str, Any] = Field(default_factory=dict)

    @property
    def state(self) -> State:
        return classify(self.status, self.score)

    @property
    def terminal(self) -> bool:
        return self.state != "pending"

    @classmethod
    def from_raw(cls, item: dict[str, Any], position: int) -> Attempt:
        """One status object; ``position`` (1-based) stands in for a missing ``attempt`` field."""
        number = as_int(item.get("attempt"))
        when = item.get("submitted_at")
        status = item.get("status")
        return cls(
            attempt=number if number is not None else position,
            status="" if status is None else str(status),
            size_mb=as_number(item.get("model_size", item.get("size"))),
            submitted_at=parse_eastern(when),
            submitted_at_text=when if isinstance(when, str) else None,
            score=as_number(item.get("score")),
            raw=item,
        )


class SubmitReceipt(Result):
    """The server's answer to an accepted upload."""

    attempt: int | None = Field(None, description="None when neither the field nor the message named it.")
    status: str | None = None
    message: str = ""
    team: str | None = None

    @classmethod
    def from_raw(cls, body: dict[str, Any]) -> SubmitReceipt:
        message = str(body.get("message") or "")
        team = TEAM_RE.search(message)
        status = body.get("status")
        return cls(
            attempt=parse_attempt_number(message, body.get("attempt")),
            status=None if status is None else str(status),
            message=message,
            team=team.group(1) if team else None,
        )


class Ping(Result):
    reachable: bool
    url: str
    status_code: int | None = None
    elapsed_s: float | None = None
    detail: str = ""


class LeaderboardRow(Result):
    rank: int | None = None
    team: str
    score: float | None = None
    f1: float | None = None
    size_mb: float | None = None
    cells: dict[str, str] = Field(default_factory=dict, description="Every column, by header text.")


class Leaderboard(Result):
    columns: list[str]
    rows: list[LeaderboardRow]

    def find(self, team: str | None) -> LeaderboardRow | None:
        """Our row: the team name compared without case and surrounding space."""
        if not team:
            return None
        want = " ".join(team.split()).casefold()
        for row in self.rows:
            if " ".join(row.team.split()).casefold() == want:
                return row
        return None
