"""``kdq worker``, with optional pauses inside steps, so a test can kill it at a chosen moment.

    KDQ_TEST_PAUSE='{"fetching": 4}' KDQ_TEST_MARKS=/tmp/marks python tests/overnight/worker_entry.py

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


if __name__ == "__main__":
    install(json.loads(os.environ.get("KDQ_TEST_PAUSE") or "{}"))
    from kdq.cli.main import app

    app(["worker", "--log-json"])
