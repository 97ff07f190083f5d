"""Reading the course server's answers: JSON or not, and each status code as its ``CourseError``.

The server answers JSON, but a proxy in front of it may answer an HTML page, an empty or truncated
body; each of those is reported with the start of what came back (tags removed, secrets masked).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx

from kdq.course.errors import RateLimited, Rejected, ServerError, UnexpectedResponse
from kdq.log import redact

WAIT_RE = re.compile(
    r"(\d+(?:\.\d+)?)\s*(seconds?|secs?|s\b|minutes?|mins?|m\b|hours?|hrs?|h\b)", re.IGNORECASE
)
UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wait_s(text: str, retry_after: str | None = None) -> float | None:
    """Seconds to wait from ``"Rate limit: wait 12 minutes"``, ``"wait 9 seconds"`` or a Retry-After."""
    match = WAIT_RE.search(text or "")
    if match:
        return float(match.group(1)) * UNIT_S[match.group(2)[0].lower()]
    try:
        return float(retry_after) if retry_after is not None else None
    except ValueError:
        return None


def snippet(text: str, limit: int = 200) -> str:
    """The start of a body, tags and runs of space removed, for an error message."""
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    flat = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    if title and title.group(1).strip():
        flat = f"page titled {' '.join(title.group(1).split())!r}: {flat}"
    return redact(flat[:limit] + ("..." if len(flat) > limit else ""))


def read_json(text: str) -> tuple[Any, str | None]:
    """``(body, None)`` or ``(None, what is wrong with it)``."""
    stripped = text.strip()
    if not stripped:
        return None, "an empty body"
    if stripped.startswith("<"):
        return None, f"an HTML page instead of JSON ({snippet(text)})"
    try:
        return json.loads(stripped), None
    except json.JSONDecodeError as exc:
        kind = "truncated JSON" if stripped[0] in "[{" else "a body that is not JSON"
        return None, f"{kind} ({exc.msg} at character {exc.pos}: {snippet(text, 80)!r})"


def decode(
    response: httpx.Response, what: str, *, fallback_wait_s: float, clean: Callable[[str], str], url: str
) -> Any:
    """The JSON body of a 2xx answer; any other answer raised as the matching ``CourseError``."""
    code = response.status_code
    text = response.text
    body, problem = read_json(text)
    said = ""
    if isinstance(body, dict):
        said = str(body.get("error") or body.get("message") or body.get("detail") or "")
    said = clean(said or (snippet(text) if problem else str(body)))
    if code == 429:
        wait_s = parse_wait_s(said, response.headers.get("retry-after"))
        raise RateLimited(f"{what}: rate limited: {said}", wait_s if wait_s is not None else fallback_wait_s)
    if 200 <= code < 300:
        if problem:
            raise UnexpectedResponse(f"{what}: HTTP {code} with {problem}", status_code=code, maybe_sent=True)
        return body
    if code >= 500:
        raise ServerError(
            f"{what}: server error HTTP {code}: {said or problem}", status_code=code, maybe_sent=True
        )
    if code == 404:
        raise UnexpectedResponse(
            f"{what}: HTTP 404 at {url}: the path may have moved; the homework page links to the "
            "current ones (settings KDQ_SUBMIT_PATH, KDQ_STATUS_PATH, KDQ_LEADERBOARD_PATH, KDQ_SERVER_URL)",
            status_code=code,
            maybe_sent=False,
        )
    if 400 <= code < 500 and isinstance(body, dict) and said:
        raise Rejected(said, status_code=code)
    if code == 413:  # a proxy's limit, in its own words (often an HTML page)
        raise Rejected(f"File too large for the server's proxy (HTTP 413): {said}", status_code=code)
    raise UnexpectedResponse(
        f"{what}: HTTP {code} with {problem or 'body ' + said}",
        status_code=code,
        maybe_sent=code >= 300 and not 400 <= code < 500,
    )
