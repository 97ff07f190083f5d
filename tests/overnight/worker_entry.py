"""``kdq worker``, with optional pauses inside steps, so a test can kill it at a chosen moment.

    KDQ_TEST_PAUSE='{"fetching": 4}' KDQ_TEST_MARKS=/tmp/marks python tests/overnight/worker_entry.py
    KDQ_TEST_DISK_FULL_S=6 python tests/overnight/worker_entry.py   # the disk fills as the first upload ends
    KDQ_TEST_CLOCK=/tmp/offset python tests/overnight/worker_entry.py   # time.time() + the file's seconds

Each paused step does its real work first (the launch, the copy, the verification), then touches
``$KDQ_TEST_MARKS/<stage>`` and sleeps: a signal sent once the mark exists lands after the side
effect and before the stage change is written, the worst moment for a crash. Nothing else changes:
the rest is the real ``kdq worker`` entry point. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path


def _pausing(stage: str, seconds: float, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        marks = Path(os.environ["KDQ_TEST_MARKS"])
        marks.mkdir(parents=True, exist_ok=True)
        (marks / stage).write_text(str(os.getpid()))
        time.sleep(seconds)
        return result

    return wrapper


def install(pauses: dict[str, float]) -> None:
    from kdq import verify
    from kdq.backends.local import LocalBackend

    if "launching" in pauses:
        LocalBackend.launch = _pausing("launching", pauses["launching"], LocalBackend.launch)
    if "fetching" in pauses:
        LocalBackend.fetch = _pausing("fetching", pauses["fetching"], LocalBackend.fetch)
    if (
        "validating" in pauses
    ):  # kdq.steps imports verify_file inside the step, so the module attribute is what runs
        verify.verify_file = _pausing("validating", pauses["validating"], verify.verify_file)


WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN", "CREATE")


def disk_full_after_first_upload(seconds: float) -> None:
    """From the moment the first upload's answer arrives, for ``seconds``, every SQLite write of this
    process (kdq.db and Huey's queue.db alike) fails as on a full disk."""
    import sqlite3

    from kdq.course.client import CourseClient

    full_until: list[float] = []

    def check(sql: str) -> None:
        if full_until and time.time() < full_until[0] and sql.lstrip().upper().startswith(WRITES):
            raise sqlite3.OperationalError("database or disk is full")

    class Cursor(sqlite3.Cursor):
        def execute(self, sql, *args):
            check(sql)
            return super().execute(sql, *args)

        def executemany(self, sql, *args):
            check(sql)
            return super().executemany(sql, *args)

    class Connection(sqlite3.Connection):
        def cursor(self, factory=Cursor):
            return super().cursor(factory)

        def execute(self, sql, *args):
            check(sql)
            return super().execute(sql, *args)

        def executemany(self, sql, *args):
            check(sql)
            return super().executemany(sql, *args)

    real_connect, real_submit = sqlite3.connect, CourseClient.submit
    sqlite3.connect = lambda *a, **k: real_connect(*a, **{**k, "factory": Connection})

    def submit(self, path):
        try:
            return real_submit(self, path)
        finally:
            if not full_until:
                full_until.append(time.time() + seconds)

    CourseClient.submit = submit


def shift_the_clock(path: str) -> None:
    """``time.time()`` of this process plus the seconds written in ``path`` (read again every 0.2 s): the
    wall clock steps as NTP or a resume from suspend steps it; ``time.monotonic`` is untouched. Set
    before anything imports ``time.time`` by name."""
    real, state = time.time, {"at": float("-inf"), "offset": 0.0}

    def shifted() -> float:
        now = time.monotonic()
        if now - state["at"] > 0.2:
            state["at"] = now
            try:
                state["offset"] = float(Path(path).read_text() or 0)
            except (OSError, ValueError):
                pass
        return real() + state["offset"]

    time.time = shifted


if __name__ == "__main__":
    if os.environ.get("KDQ_TEST_CLOCK"):
        shift_the_clock(os.environ["KDQ_TEST_CLOCK"])
    install(json.loads(os.environ.get("KDQ_TEST_PAUSE") or "{}"))
    if os.environ.get("KDQ_TEST_DISK_FULL_S"):
        disk_full_after_first_upload(float(os.environ["KDQ_TEST_DISK_FULL_S"]))
    from kdq.cli.main import app

    app(["worker", "--log-json", "--verbose"])  # Huey's own lines too: the harness waits for its start line
