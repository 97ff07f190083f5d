"""The worker module: a queue per home built on demand, nothing made at import, nudges to the right home."""

from __future__ import annotations

import subprocess
import sys

from kdq.settings import Settings


def test_importing_the_worker_module_makes_no_file(tmp_path):
    home = tmp_path / "home"
    code = "import kdq.worker, jobs.worker"
    subprocess.run(
        [sys.executable, "-c", code], env={"KDQ_HOME": str(home), "PATH": ""}, check=True, cwd=tmp_path
    )
    assert list(tmp_path.iterdir()) == []  # neither the home nor anything in the working directory


def test_one_queue_per_home_and_nudges_land_in_it(tmp_path, monkeypatch):
    from kdq import worker

    monkeypatch.setenv("KDQ_HOME", str(tmp_path / "a"))
    a = Settings()
    monkeypatch.setenv("KDQ_HOME", str(tmp_path / "b"))
    b = Settings()
    assert worker.queue(a) is worker.queue(a) and worker.queue(a) is not worker.queue(b)
    worker.nudge([7, 8], b, scheduler=True)
    assert worker.queue(b).huey.pending_count() == 2 and worker.queue(a).huey.pending_count() == 0
    names = sorted(t.name for t in worker.queue(b).huey.pending())
    assert names == ["look", "submissions"]  # many ids: one message, the worker fans out
    huey = worker.queue(b).huey
    looked = next(t for t in huey.pending() if t.name == "look")
    huey.storage.flush_queue()
    huey.execute(looked)
    assert sorted((t.name, t.args) for t in huey.pending()) == [("advance", (7,)), ("advance", (8,))]
    worker.nudge([9], b)
    assert [t.args for t in huey.pending()][-1] == (9,)


def test_a_database_that_cannot_be_written_is_one_log_line_and_a_later_look(settings, monkeypatch):
    """A read-only home (or a kdq.db deleted under the worker): the task logs one line naming the file
    and looks again later; no raw traceback from the task queue, nothing failed."""
    import sqlite3

    import pytest
    from huey.exceptions import RetryTask

    from kdq import worker
    from kdq.store import Store

    said = []
    monkeypatch.setattr(worker.log, "error", lambda *a, **k: said.append(k.get("error", a[0])))

    def readonly(*args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(Store, "open", readonly)
    q = worker.queue(settings)
    with pytest.raises(RetryTask):
        worker._advance(q, 1)
    [line] = said
    assert str(settings.db_path) in line and "cannot be written" in line
