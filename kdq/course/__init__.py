"""The course grading server (UVA CS 4774 HW3): a client, its result types, and a stand-in server.

    client.py       CourseClient: ping, submit, status, leaderboard (httpx + tenacity)
    answers.py      the server's answers read (JSON or not), each status code as its error
    errors.py       Unreachable, RateLimited, Rejected, ServerError, UnexpectedResponse
    models.py       Attempt, SubmitReceipt, Leaderboard, Ping and the readers of loose JSON
    leaderboard.py  the leaderboard page's table, columns found by header text
    policy.py       what to submit when (pure)
    ledger.py       everything kdq writes down about the server: submissions, snapshots, course.* keys
    matching.py     which attempt is which upload: number, size, recorded time (pure)
    sealed.py       the read-only copy of a validated model, named by its sha256, that an upload sends
    server_view.py  the scheduler's reads of the server, trouble turned into waits
    upload.py       one upload, from the intent to an attempt number (never two)
    scheduler.py    the tick: ledger -> policy -> act -> ledger (the worker's task)
    status.py       the course server's lines in ``kdq status``
    fake_server/    FakeServer: a stand-in on a loopback port, with grading and faults

docs/getting-started.md says what is known about the real server and what kdq does not assume.
"""

from kdq.course.errors import (
    CourseError,
    RateLimited,
    Rejected,
    ServerError,
    UnexpectedResponse,
    Unreachable,
)
from kdq.course.models import Attempt, Leaderboard, LeaderboardRow, Ping, SubmitReceipt

__all__ = [
    "Attempt",
    "CourseClient",
    "CourseError",
    "Leaderboard",
    "LeaderboardRow",
    "Ping",
    "RateLimited",
    "Rejected",
    "ServerError",
    "SubmitReceipt",
    "Unreachable",
    "UnexpectedResponse",
]


def __getattr__(name: str):
    """``CourseClient`` (httpx, tenacity) is imported when asked for: ``kdq status`` never makes one."""
    if name == "CourseClient":
        from kdq.course.client import CourseClient

        return CourseClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
