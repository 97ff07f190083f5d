"""One error taxonomy for everything the course server can do to us.

    CourseError
    ├── Unreachable         no answer at all: no route, refused, timed out (off the university VPN?)
    ├── RateLimited         429: ``wait_s`` says when to come back
    ├── Rejected            the server (or our pre-check) said no: bad token, wrong extension, too large
    ├── ServerError         5xx
    └── UnexpectedResponse  an answer we cannot read: HTML, empty, truncated or malformed JSON, moved path

``maybe_sent`` is what a submitter must look at: ``False`` only when the request certainly never
reached the server (refused, no route, rejected before sending, or a definite 4xx answer). When it is
``True`` the submission may have gone through: reconcile with the status list, never resend blindly.

Every message passes ``kdq.log.redact`` so a token can never leak through an exception's text.
"""

from __future__ import annotations

from kdq.log import redact


class CourseError(Exception):
    maybe_sent: bool = True

    def __init__(self, message: str, *, status_code: int | None = None, maybe_sent: bool | None = None):
        self.message = redact(message)
        self.status_code = status_code
        if maybe_sent is not None:
            self.maybe_sent = maybe_sent
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code})"


VPN_HINT = "The course server answers only on the university network: is this machine on the UVA VPN?"
STAND_IN_HINT = "Nothing answers on this machine: is `kdq fake-server` running? (KDQ_SERVER_URL is loopback)"


class Unreachable(CourseError):
    """No HTTP answer. ``maybe_sent`` is False when the connection was never made."""

    @staticmethod
    def hint(url: str) -> str:
        """What to check when nothing answers at ``url``: the stand-in on a loopback address, else the VPN."""
        from urllib.parse import urlsplit

        loopback = (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")
        return STAND_IN_HINT if loopback else VPN_HINT


class RateLimited(CourseError):
    """429. ``wait_s`` is the wait the server named (or a fallback when it named none)."""

    maybe_sent = False

    def __init__(self, message: str, wait_s: float, *, status_code: int | None = 429):
        super().__init__(message, status_code=status_code, maybe_sent=False)
        self.wait_s = float(wait_s)


class Rejected(CourseError):
    """A definite no: ``reason`` is the server's text verbatim (or our pre-check's)."""

    maybe_sent = False

    def __init__(self, reason: str, *, status_code: int | None = None):
        super().__init__(reason, status_code=status_code, maybe_sent=False)
        self.reason = self.message


class ServerError(CourseError):
    """5xx: the server failed. For a submit the upload may or may not have been recorded."""


class UnexpectedResponse(CourseError):
    """An answer that is not in any documented shape."""


def describe_failure(exc: BaseException, db_path=None) -> str:
    """One line for a failure, a full disk named as such (ENOSPC and the path it could not write)."""
    import sqlite3

    from kdq.errors import disk_full

    if isinstance(exc, OSError | sqlite3.OperationalError) and (full := disk_full(exc, db_path)):
        return full
    return redact(f"{type(exc).__name__}: {exc}")
