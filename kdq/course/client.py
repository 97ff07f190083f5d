"""The course-server client: ``ping``, ``submit``, ``status``, ``leaderboard``.

Every call returns a typed result or raises one of ``kdq.course.errors``; nothing else escapes
(no httpx exception, no JSON error, no KeyError). Reads retry through tenacity (with backoff, and after
a 429 for as long as the server asks when that is short); a submit is retried only when the
connection was never made, because a second POST of a request that reached the server could
double-submit and burn the 15-minute window.

The token travels as a form field and inside the status URL's path. It is registered with
``kdq.log`` for redaction, masked in every message this module builds, never part of ``repr``, and
the ``httpx`` loggers (which print request URLs) pass through a redacting filter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from kdq import grader
from kdq.course.answers import decode, parse_wait_s, snippet
from kdq.course.errors import CourseError, RateLimited, Rejected, ServerError, UnexpectedResponse, Unreachable
from kdq.course.leaderboard import parse_leaderboard, rediscover
from kdq.course.models import Attempt, Leaderboard, Ping, SubmitReceipt
from kdq.log import MASK, add_secret, get_logger, redact

log = get_logger("kdq.course")

ALLOWED_SUFFIXES = (".pt", ".pth")
DISCOVERY_PAGES = ("/", "/homework/3", "/instructions-hw3")  # pages that link to the leaderboard
OTHER_PORT = {8000: 9000, 9000: 8000}  # the homework pages say 8000, older notes 9000


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if (clean := redact(message := record.getMessage())) != message:
            record.msg, record.args = clean, ()
        return True


for _name in ("httpx", "httpcore"):
    if not any(isinstance(f, _RedactFilter) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_RedactFilter())


class CourseClient:
    def __init__(
        self,
        base_url: str,
        token: SecretStr | str | None = None,
        team: str | None = None,
        *,
        submit_path: str = "/submit",
        status_path: str = "/submission-status/{token}",
        leaderboard_path: str = "/leaderboard3",
        ping_path: str = "/",
        connect_timeout_s: float = 5.0,
        request_timeout_s: float = 60.0,
        submit_interval_s: float = 900.0,
        status_interval_s: float = 15.0,
        read_attempts: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 15.0,
        rate_limit_wait_max_s: float = 20.0,
        max_upload_mb: float = grader.MAX_MIB,
    ) -> None:
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._token = secret or None
        add_secret(self._token)
        self.base_url = base_url.rstrip("/")
        self.team = team
        self.paths = {
            "submit": submit_path,
            "status": status_path,
            "leaderboard": leaderboard_path,
            "ping": ping_path,
        }
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.submit_interval_s = submit_interval_s
        self.status_interval_s = status_interval_s
        self.read_attempts = max(1, read_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.rate_limit_wait_max_s = rate_limit_wait_max_s
        self.max_upload_mb = max_upload_mb
        self._http = httpx.Client(
            timeout=httpx.Timeout(request_timeout_s, connect=connect_timeout_s),
            follow_redirects=True,
            headers={"User-Agent": "kdq course client"},
        )

    @classmethod
    def from_settings(cls, settings, **overrides: Any) -> CourseClient:
        kwargs: dict[str, Any] = dict(
            token=settings.token,
            team=settings.team,
            submit_path=settings.submit_path,
            status_path=settings.status_path,
            leaderboard_path=settings.leaderboard_path,
            connect_timeout_s=settings.connect_timeout_s,
            request_timeout_s=settings.request_timeout_s,
            submit_interval_s=settings.submit_interval_s,
            status_interval_s=settings.status_interval_s,
        )
        kwargs.update(overrides)
        return cls(settings.server_url, **kwargs)

    # ------------------------------------------------------------------ plumbing

    def __enter__(self) -> CourseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        token = MASK if self._token else None
        return f"CourseClient(base_url={self.base_url!r}, team={self.team!r}, token={token!r})"

    def _redact(self, text: str) -> str:
        text = redact(text)
        return text.replace(self._token, MASK) if self._token else text

    def url(self, name: str, *, secret: bool = False) -> str:
        """The URL of an endpoint; the token is shown as ``***`` unless ``secret`` (only for sending)."""
        path = self.paths[name]
        if "{token}" in path:
            token = quote(self._require_token(), safe="") if secret else MASK
            path = path.replace("{token}", token)
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def _require_token(self) -> str:
        if not self._token:
            raise Rejected(
                "no course token: set KDQ_TOKEN (32 hex characters, from the course's registration page)"
            )
        return self._token

    def _send(
        self, method: str, name: str, *, timeout: httpx.Timeout | None = None, **kwargs: Any
    ) -> httpx.Response:
        url, shown = self.url(name, secret=True), self.url(name)
        started = time.monotonic()
        try:
            response = self._http.request(method, url, timeout=timeout or self._http.timeout, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Unreachable(
                f"cannot connect to {shown} ({type(exc).__name__}: {self._redact(str(exc)) or 'no detail'}). "
                + Unreachable.hint(shown),
                maybe_sent=False,
            ) from None
        except httpx.TimeoutException as exc:
            raise Unreachable(
                f"{method} {shown}: no answer in time ({type(exc).__name__}; read timeout "
                f"{self.request_timeout_s:g}s, KDQ_REQUEST_TIMEOUT_S)",
                maybe_sent=True,
            ) from None
        except httpx.HTTPError as exc:
            raise Unreachable(
                f"{method} {shown}: the connection broke "
                f"({type(exc).__name__}: {self._redact(str(exc)) or 'no detail'})",
                maybe_sent=True,
            ) from None
        log.debug(
            "course.http",
            method=method,
            url=shown,
            status=response.status_code,
            elapsed_s=round(time.monotonic() - started, 3),
        )
        return response

    def _decode(self, response: httpx.Response, what: str, *, fallback_wait_s: float) -> Any:
        return decode(response, what, fallback_wait_s=fallback_wait_s, clean=self._redact, url=self.url(what))

    def _retrying(self, attempts: int, retryable: Callable[[BaseException], bool]) -> Retrying:
        backoff = wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)

        def wait(state) -> float:
            exc = state.outcome.exception()
            if isinstance(exc, RateLimited):
                return exc.wait_s
            return backoff(state)

        def before_sleep(state) -> None:
            exc = state.outcome.exception()
            log.warning(
                "course.retry",
                attempt=state.attempt_number,
                error=f"{type(exc).__name__}: {exc}",
                wait_s=round(state.upcoming_sleep, 2),
            )

        return Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait,
            retry=retry_if_exception(retryable),
            reraise=True,
            before_sleep=before_sleep,
        )

    def _read_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, RateLimited):
            return exc.wait_s <= self.rate_limit_wait_max_s
        if isinstance(exc, UnexpectedResponse):
            return exc.status_code != 404
        return isinstance(exc, (Unreachable, ServerError))

    # ------------------------------------------------------------------ the four calls

    def ping(self) -> Ping:
        """Is the server there at all? Any HTTP answer counts; one try with short timeouts, never raises."""
        url = self.url("ping")
        short = httpx.Timeout(self.connect_timeout_s * 2, connect=self.connect_timeout_s)
        started = time.monotonic()
        try:
            response = self._send("GET", "ping", timeout=short)
        except Unreachable as exc:
            return Ping(reachable=False, url=url, detail=exc.message + self._other_port_hint(short))
        return Ping(
            reachable=True,
            url=url,
            status_code=response.status_code,
            elapsed_s=round(time.monotonic() - started, 3),
            detail=f"HTTP {response.status_code}",
        )

    def _other_port_hint(self, timeout: httpx.Timeout) -> str:
        """The course pages name port 8000, older notes 9000: if the other one answers, say so."""
        parsed = httpx.URL(self.base_url)
        other = OTHER_PORT.get(parsed.port or 0)
        if other is None:
            return ""
        alternative = str(parsed.copy_with(port=other)).rstrip("/")
        try:
            self._http.get(alternative + self.paths["ping"], timeout=timeout)
        except httpx.HTTPError:
            return ""
        return f" The server does answer on port {other}: set KDQ_SERVER_URL={alternative}"

    def status(self) -> list[Attempt]:
        """Every attempt of our team, oldest first."""
        self._require_token()

        def call() -> list[Attempt]:
            response = self._send("GET", "status")
            body = self._decode(response, "status", fallback_wait_s=self.status_interval_s)
            if isinstance(body, dict):  # tolerate {"submissions": [...]} and the like
                body = next((v for v in body.values() if isinstance(v, list)), body)
            if not isinstance(body, list):
                raise UnexpectedResponse(
                    f"status: expected a JSON list of attempts, got {snippet(str(body))!r}",
                    status_code=response.status_code,
                )
            attempts = [
                Attempt.from_raw(item, i + 1) for i, item in enumerate(body) if isinstance(item, dict)
            ]
            if len(attempts) < len(body):
                log.warning(
                    "course.status.skipped", count=len(body) - len(attempts), reason="not a JSON object"
                )
            return sorted(attempts, key=lambda a: a.attempt)

        return self._retrying(self.read_attempts, self._read_retryable)(call)

    def leaderboard(self) -> Leaderboard:
        def call() -> Leaderboard:
            response = self._send("GET", "leaderboard")
            if response.status_code == 200 and response.text.strip():
                return parse_leaderboard(response.text)
            self._decode(response, "leaderboard", fallback_wait_s=self.status_interval_s)
            raise UnexpectedResponse(
                f"leaderboard: HTTP {response.status_code} with an empty page",
                status_code=response.status_code,
            )

        try:
            return self._retrying(self.read_attempts, self._read_retryable)(call)
        except UnexpectedResponse as exc:
            if exc.status_code != 404 or not self._rediscover_leaderboard():
                raise
        return self._retrying(self.read_attempts, self._read_retryable)(call)

    def _rediscover_leaderboard(self) -> bool:
        """The leaderboard path moved (404): follow the course pages' links to it, as a person would."""
        found = rediscover(self._http, self.base_url, self.paths["leaderboard"], DISCOVERY_PAGES)
        if found:
            self.paths["leaderboard"] = found
        return found is not None

    def check_upload(self, path: str | Path) -> Path:
        """The pre-checks the server would make, done here so a doomed upload is never sent."""
        path = Path(path)
        if not path.is_file():
            raise Rejected(f"{path}: no such file")
        if not path.name.endswith(ALLOWED_SUFFIXES):
            raise Rejected(f"{path}: the server accepts only files ending in .pt or .pth; rename it")
        size_mb = grader.size_mib(path)
        if not grader.fits(size_mb, self.max_upload_mb):
            raise Rejected(
                f"{path}: {size_mb:.2f} MB is over the {self.max_upload_mb} MB limit; export a smaller model"
            )
        return path

    def submit(self, path: str | Path) -> SubmitReceipt:
        """Upload a model once. Retried only if the connection was never made (``maybe_sent`` False)."""
        token = self._require_token()
        path = self.check_upload(path)

        def call() -> SubmitReceipt:
            with path.open("rb") as fh:
                response = self._send(
                    "POST",
                    "submit",
                    data={"token": token},
                    files={"file": (path.name, fh, "application/octet-stream")},
                )
            body = self._decode(response, "submit", fallback_wait_s=self.submit_interval_s)
            if not isinstance(body, dict):
                raise UnexpectedResponse(
                    f"submit: HTTP {response.status_code} with JSON that is not an object: "
                    f"{snippet(str(body))!r}",
                    status_code=response.status_code,
                )
            receipt = SubmitReceipt.from_raw(body)
            log.info(
                "course.submitted",
                file=path.name,
                attempt=receipt.attempt,
                message=self._redact(receipt.message),
            )
            return receipt

        never_sent = lambda exc: isinstance(exc, Unreachable) and not exc.maybe_sent  # noqa: E731
        return self._retrying(2, never_sent)(call)


__all__ = ["CourseClient", "CourseError", "parse_wait_s"]
