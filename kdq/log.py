"""Logging through structlog: console lines for people, JSON lines for files and pipes.

Every event passes ``redact``: any known secret (course token, Hugging Face token) is replaced by
``***`` wherever it appears, in any field, before anything is written.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_secrets: set[str] = set()
MASK = "***"


def add_secret(*values: str | None) -> None:
    """Register values that must never be written anywhere."""
    _secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def _redact_processor(_logger, _name, event_dict: dict) -> dict:
    return {k: _scrub(v) for k, v in event_dict.items()}


class _RedactingFilter(logging.Filter):
    """For stdlib loggers (huey, httpx): scrub the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = redact(record.getMessage())
            record.args = ()
        return True


class _DiskFullFilter(logging.Filter):
    """A full disk under a stdlib logger (Huey's consumer polls every second or two): one line naming
    it, without the traceback, and then nothing more for the same message for ``QUIET_FOR_S``."""

    QUIET_FOR_S = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        from kdq.errors import disk_full

        exc = record.exc_info[1] if record.exc_info else None
        full = disk_full(exc) if exc is not None else None
        if full is None:
            return True
        key, now = (record.name, str(record.msg)), time.monotonic()
        if now - self._last.get(key, -self.QUIET_FOR_S) < self.QUIET_FOR_S:
            return False
        self._last[key] = now
        record.msg, record.args = f"{record.getMessage()}: {full} (said once a minute)", ()
        record.exc_info = record.exc_text = None
        return True


def _stderr_logger(*_args):
    """Whatever ``sys.stderr`` is at the moment of writing (tests and CliRunner swap it)."""
    import structlog

    return structlog.PrintLogger(file=sys.stderr)


class _StderrHandler(logging.StreamHandler):
    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


QUIET = ("huey", "httpx", "httpcore", "wakepy")  # at WARNING unless verbose: their INFO lines drown kdq's own


def configure(
    json: bool | None = None, level: int = logging.INFO, settings=None, verbose: bool = False
) -> None:
    import structlog

    if settings is not None:
        add_secret(*settings.secrets())
    if json is None:
        json = not sys.stderr.isatty()
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    # JSON: ISO 8601 in UTC, for machines; on a terminal: this machine's clock, to the second, for people.
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True) if json else _local_time
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.addFilter(_DiskFullFilter())
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(level if verbose else max(level, logging.WARNING))


def _local_time(_logger, _name, event: dict) -> dict:
    import time

    event["timestamp"] = time.strftime("%H:%M:%S")
    return event


class _Logger:
    """A named structlog logger that imports structlog at its first use, not when a module is imported
    (``kdq status`` and ``kdq --help`` never log)."""

    def __init__(self, name: str | None) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        import structlog

        return getattr(structlog.get_logger(self._name), attr)


def get_logger(name: str | None = None):
    return _Logger(name)


def stage_line(exp_id: int, name: str, src, dst, message: str = "", progress: dict | None = None) -> str:
    """``7 long-d: training → fetching (training finished, epoch 60/60, val F1 0.81)`` (pure)."""
    details = [message] if message and message != f"{src} → {dst}" else []
    progress = progress or {}
    if "epoch" in progress:
        details.append(f"epoch {progress['epoch']}/{progress.get('epochs', '?')}")
    if progress.get("best_f1") is not None:
        details.append(f"val F1 {progress['best_f1']:.2f}")
    return f"{exp_id} {name}: {src} → {dst}" + (f" ({', '.join(details)})" if details else "")


def stage_changed(exp_id: int, name: str, src, dst, message: str = "", progress: dict | None = None) -> None:
    """The worker's one line per stage change (the CLI logs at WARNING, so its own moves stay quiet)."""
    get_logger("kdq.stages").info(redact(stage_line(exp_id, name, src, dst, message, progress)))
