"""The hostile night's scenarios that only fast tests covered, replayed against a real ``kdq worker``
and the stand-in: ``kdq.db`` locked past SQLite's busy timeout, ``kdq.db`` deleted under the worker,
``kdq server submit`` of a same-size model while kdq's own upload is unknown, the worker's wall clock
stepping forward and back, a status list renumbered or without status words for a while. Each ends
with one upload per decision and nothing lost."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest

from kdq.stages import Stage

from .conftest import spec_text
from .test_one_upload import SLOW, posts, wait_out_the_stall

pytestmark = pytest.mark.slow


def test_kdq_db_locked_past_the_busy_timeout_fails_nothing(overnight):
    """A `BEGIN EXCLUSIVE` (a `sqlite3` shell, a backup) held past SQLite's 5 s wait while two trainings
    are live: they wait, nothing fails, a `kdq enqueue` made meanwhile waits and queues, and each
    experiment is uploaded once."""
    from kdq import store as store_module

    h = overnight()
    ids = h.enqueue(2)
    (h.tmp / "late.toml").write_text(spec_text("late", seed=99))
    h.start_worker()
    h.wait_stage(ids[0], Stage.TRAINING, 120)
    other = sqlite3.connect(h.settings.db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        late = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from kdq.cli.main import app; app()",
                "enqueue",
                str(h.tmp / "late.toml"),
            ],
            env=h.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(2 * store_module.BUSY_TIMEOUT_S + 2)  # past SQLite's own wait, twice
    finally:
        other.execute("ROLLBACK")
        other.close()
    said, _ = late.communicate(timeout=120)
    assert late.returncode == 0 and "Traceback" not in said and "queued 3" in said, said
    h.wait_finished(300)
    assert not [e for e in h.exps() if e.stage is Stage.FAILED], h.report()
    h.check_delivered([*ids, 3])
    assert posts(h) == 3, h.report()


def test_kdq_db_deleted_under_the_worker_stops_it_and_uploads_nothing_twice(overnight, tiny_model):
    h = overnight(eval_delay_s=4)
    i = h.place(tiny_model, val_f1=0.6)
    h.start_worker()
    h.wait_stage(i, Stage.EVALUATING, 60)
    h.store.close()
    for suffix in ("", "-wal", "-shm"):
        h.settings.db_path.with_name(h.settings.db_path.name + suffix).unlink(missing_ok=True)
    assert h.worker.wait(60) is not None  # it noticed at its next heartbeat and stopped
    log = h.log.read_text()
    assert "was deleted or replaced while this worker ran: stopping" in log and "Traceback" not in log, log
    status = h.cli("status", ok=False)
    assert status.exit_code == 1 and "kdq worker --force" in " ".join(status.output.split()), status.output
    time.sleep(4)  # windows go by: nothing is uploaded again
    assert posts(h) == 1 and len(h.server.course.submissions) == 1


def test_kdq_server_submit_of_a_same_size_model_while_our_upload_is_unknown(overnight, tiny_model, tmp_path):
    """Our upload is read and recorded 8 s later (the client gave up at 4: unknown); meanwhile a teammate
    uploads another model of the same size with `kdq server submit`. kdq never takes theirs for its own:
    the experiment gets its own attempt's grade, its file is on the server once, theirs once."""
    import torch

    h = overnight(extra_env=SLOW)
    h.server.inject("stall", seconds=8, route="submit", when="read")
    theirs = tmp_path / "theirs.pt"
    model = torch.jit.load(str(tiny_model))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    torch.jit.save(model, str(theirs))
    i = h.place(tiny_model, val_f1=0.6)
    started = time.time()
    h.start_worker()
    h.wait_stage(i, Stage.SUBMITTING, 60)
    time.sleep(4.5)  # the client has given up: the upload is unknown
    h.cli("server", "submit", "--yes", theirs)
    wait_out_the_stall(h, started, 8)
    h.wait_stage(i, Stage.DONE, 120)
    exp, subs = h.get(i), h.server.course.submissions
    assert posts(h) == 2 and len(subs) == 2, h.report()
    ours = [
        s for s in subs if s.path.read_bytes() == (h.settings.root / exp.artifacts / "model.pt").read_bytes()
    ]
    assert len(ours) == 1 and [s for s in subs if s.path.read_bytes() == theirs.read_bytes()], h.report()
    assert exp.server_attempt == ours[0].attempt and exp.server_score == pytest.approx(ours[0].score), (
        h.report()
    )


def test_a_forward_step_of_the_wall_clock_during_an_unknown_upload_sends_it_once(overnight, tiny_model):
    """The worker's wall clock steps +2 h while its upload's answer is lost (the stand-in records it
    10 s after reading it; the client gives up at 4): the give-up deadline is not a wall-clock time."""
    h = overnight(extra_env=SLOW)
    clock = h.tmp / "clock"
    h.extra_env["KDQ_TEST_CLOCK"] = str(clock)
    h.server.inject("stall", seconds=10, route="submit", when="read")
    i = h.place(tiny_model, val_f1=0.6)
    started = time.time()
    h.start_worker()
    h.wait_stage(i, Stage.SUBMITTING, 60)
    time.sleep(5)
    clock.write_text("7200")
    wait_out_the_stall(h, started, 10)
    h.wait_stage(i, Stage.DONE, 120)
    time.sleep(4)  # windows go by: nothing is sent again
    h.check_delivered([i])
    assert posts(h) == 1, h.report()


def test_a_backward_step_of_the_wall_clock_does_not_stall_the_worker(overnight, tiny_model):
    """The worker's wall clock steps back an hour right after the first upload was accepted: the
    second model goes at the next window and the first one's grade is recorded, not an hour later."""
    h = overnight(eval_delay_s=2)
    clock = h.tmp / "clock"
    h.extra_env["KDQ_TEST_CLOCK"] = str(clock)
    first, second = h.place(tiny_model, val_f1=0.7), h.place(tiny_model, val_f1=0.6)
    h.start_worker()
    h.wait(lambda: h.server.course.submissions, 60, "the first upload")
    clock.write_text("-3600")
    h.wait(lambda: all(h.get(i).stage is Stage.DONE for i in (first, second)), 90, "both graded")
    h.check_delivered([first, second])
    assert posts(h) == 2, h.report()


@pytest.mark.parametrize("spoil", ["renumbered", "no-status"])
def test_a_list_renumbered_or_without_status_words_for_a_while_loses_no_grade(overnight, tiny_model, spoil):
    """While the attempt is graded the stand-in numbers its list from 101 (or drops every `status`
    field) for 5 s: not a loss, not a failure; the grade is recorded, one upload."""
    from kdq.course.fake_server.course import Outcome

    h = overnight(eval_delay_s=6)
    course = h.server.course
    real = course.status

    def spoiled(token):
        out = real(token)
        if out.code != 200:
            return out
        if spoil == "renumbered":
            return Outcome(200, [{**row, "attempt": row["attempt"] + 100} for row in out.body])
        return Outcome(200, [{k: v for k, v in row.items() if k != "status"} for row in out.body])

    i = h.place(tiny_model, val_f1=0.6)
    h.start_worker()
    h.wait_stage(i, Stage.EVALUATING, 60)
    course.status = spoiled
    time.sleep(5)
    course.status = real
    h.wait_stage(i, Stage.DONE, 120)
    h.check_delivered([i])
    assert posts(h) == 1
