"""The course grading server (UVA CS 4774 HW3): a client, its result types, and a stand-in server.

See COURSE_SERVER.md for what is known about the real server and what is uncertain.
"""

from kdq.course.client import CourseClient
from kdq.course.errors import (
    CourseError,
    RateLimited,
    Rejected,
    ServerError,
    Unreachable,
    UnexpectedResponse,
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
