"""The course grading server (UVA CS 4774 HW3): a client, its result types, and a stand-in server.

    client.py       CourseClient: ping, submit, status, leaderboard (httpx + tenacity)
    errors.py       Unreachable, RateLimited, Rejected, ServerError, UnexpectedResponse
    models.py       Attempt, SubmitReceipt, Leaderboard, Ping and the readers of loose JSON
    leaderboard.py  the leaderboard page's table, columns found by header text
    policy.py       what to submit when (pure)
    scheduler.py    the policy's I/O: intents, reconciling, following grading (the worker's task)
    status.py       the course server's lines in ``kdq status``
    fake_server/    FakeServer: a stand-in on a loopback port, with grading and faults

See COURSE_SERVER.md for what is known about the real server and what is uncertain.
"""

from kdq.course.client import CourseClient
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
