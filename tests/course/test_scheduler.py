"""The submission scheduler end to end against the stand-in server, with short windows."""

from __future__ import annotations

import shutil
import time

import pytest

from kdq import runfolder
from kdq.course import CourseClient
from kdq.course.fake_server import FakeServer
from kdq.course.scheduler import INTENT, Scheduler
from kdq.spec import ExperimentSpec
from kdq.stages import Stage

PATH = [Stage.LAUNCHING, Stage.TRAINING, Stage.FETCHING, Stage.VALIDATING, Stage.READY]


def make_ready(store, tmp_path, model, val_f1, policy="if_better", name=None):
    """An experiment in ``ready`` with a verified model, as the worker leaves it."""
    [i] = store.add(
        [(None, ExperimentSpec(name=name or f"e{val_f1}", submit={"policy": policy}))], force=True
    )
    folder = tmp_path / "artifacts" / str(i)
    folder.mkdir(parents=True)
    shutil.copy(model, folder / runfolder.MODEL)
    stage = Stage.QUEUED
    for nxt in PATH:
        fields = (
            {"artifacts": str(folder), "val_f1": val_f1, "metrics": {"val_f1": val_f1}}
            if nxt is Stage.READY
            else {}
        )
        assert store.move(i, stage, nxt, **fields)
        stage = nxt
    return i


@pytest.fixture
def srv(dataset_dir, token):
    with FakeServer(
        teams={"Team Rocket": token}, data_dir=dataset_dir, submit_interval_s=1.0, status_interval_s=0.2
    ) as s:
        yield s


@pytest.fixture
def sched(srv, store, settings, token):
    settings.submit_interval_s, settings.status_interval_s = 1.0, 0.2
    with CourseClient(
        srv.url,
        token,
        "Team Rocket",
        backoff_s=0.01,
        max_backoff_s=0.05,
        connect_timeout_s=1,
        request_timeout_s=5,
        rate_limit_wait_max_s=0,
        read_attempts=2,
    ) as client:
        yield Scheduler(store, client, settings, retry_s=0.2, max_retry_s=1.0, idle_s=0.3)


def drive(sched, done, timeout=60.0, during=None):
    """Tick until ``done()``, sleeping as the scheduler asks (capped), calling ``during(tick_no)``."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        delay = sched.tick()
        n += 1
        if during:
            during(n)
        if done():
            return n
        time.sleep(min(delay if delay is not None else 0.2, 0.3))
    raise AssertionError(f"not done after {timeout} s: {[(e.id, str(e.stage)) for e in sched.store.list()]}")


def stages(store, ids):
    return [store.get(i).stage for i in ids]


def test_five_ready_models_go_one_per_window_best_first(sched, store, srv, tmp_path, models):
    f1s = [0.5, 0.9, 0.7, 0.6, 0.8]
    ids = [make_ready(store, tmp_path, models["perfect"], f, "always") for f in f1s]
    drive(sched, lambda: all(s is Stage.DONE for s in stages(store, ids)))
    subs = srv.course.submissions
    assert len(subs) == 5  # never a duplicate
    by_attempt = {store.get(i).server_attempt: store.get(i).val_f1 for i in ids}
    assert [by_attempt[a] for a in range(1, 6)] == sorted(f1s, reverse=True)
    gaps = [(b.submitted_at - a.submitted_at).total_seconds() for a, b in zip(subs, subs[1:])]
    assert min(gaps) >= 1.0
    for i in ids:
        exp = store.get(i)
        assert exp.server_score == pytest.approx(10 - 0.01 * subs[0].size_mb, abs=1e-3)
        # only the live submission (the last) holds a place on the leaderboard; the superseded show none
        assert exp.server_rank == (1 if exp.server_attempt == 5 else None), (exp.id, exp.server_attempt)
    rows = list(store.db.query("select state, attempt, score, rank from submissions order by attempt"))
    assert [r["state"] for r in rows] == ["successful"] * 5 and [r["attempt"] for r in rows] == [
        1,
        2,
        3,
        4,
        5,
    ]


def test_if_better_submits_only_what_beats_the_live_submission(sched, store, srv, tmp_path, models):
    ids = [make_ready(store, tmp_path, models["perfect"], f) for f in (0.5, 0.9, 0.7)]
    drive(sched, lambda: all(s in (Stage.DONE, Stage.SKIPPED) for s in stages(store, ids)))
    assert stages(store, ids) == [Stage.SKIPPED, Stage.DONE, Stage.SKIPPED]
    assert len(srv.course.submissions) == 1
    assert "vs expected 9.000 (no holdout) of the live submission" in store.events(ids[0])[-1]["message"]
    later = make_ready(store, tmp_path, models["perfect"], 0.95)  # a better one later still goes
    drive(sched, lambda: store.get(later).stage is Stage.DONE)
    assert len(srv.course.submissions) == 2


def test_server_down_then_up_nothing_fails_and_submissions_resume(sched, store, srv, tmp_path, models):
    ids = [make_ready(store, tmp_path, models["perfect"], f, "always") for f in (0.9, 0.8, 0.7)]

    def outage(n):
        if store.get(ids[0]).stage is Stage.DONE and n < 1000 and not getattr(outage, "done", False):
            outage.done = True
            srv.go_down(2.0)

    drive(sched, lambda: all(s is Stage.DONE for s in stages(store, ids)), during=outage)
    assert outage.done and len(srv.course.submissions) == 3
    assert srv.course.submissions[0].team == "Team Rocket"
    dump = "\n".join(store.db.conn.iterdump())
    assert "submission-status/***" in dump or "/submission-status/" not in dump
    assert sched.client._token not in dump
    server = store.get_meta_json("course.server")
    assert server["reachable"] is True
    assert all(e["kind"] != "stage" or e["stage"] != "failed" for i in ids for e in store.events(i))


def test_a_lost_answer_is_reconciled_never_resent(sched, store, srv, tmp_path, models, token):
    ids = [make_ready(store, tmp_path, models["perfect"], f, "always") for f in (0.9, 0.8)]
    srv.inject("error", status=502, route="submit", when="after")  # recorded, but the answer is lost
    srv.inject("garbage", body="truncated", route="submit", when="after")
    drive(sched, lambda: all(s is Stage.DONE for s in stages(store, ids)))
    assert len(srv.course.submissions) == 2 and srv.course.count("submit") == 2  # not one POST more
    assert sorted(store.get(i).server_attempt for i in ids) == [1, 2]
    assert any("went through" in e["message"] for e in store.events(ids[0]))
    assert token not in "\n".join(store.db.conn.iterdump())  # nothing stored carries the token


def test_crash_after_the_post_is_adopted_and_crash_before_it_is_resent_once(
    sched, store, srv, tmp_path, models
):
    [i] = [make_ready(store, tmp_path, models["perfect"], 0.9, "always")]
    real_submit = sched.client.submit

    def crash_after(path):
        real_submit(path)
        raise SystemExit("worker killed")

    sched.client.submit = crash_after
    with pytest.raises(SystemExit):
        sched.tick()
    assert store.get(i).stage is Stage.SUBMITTING and store.get_meta_json(INTENT)["exp_id"] == i
    sched.client.submit = real_submit
    drive(sched, lambda: store.get(i).stage is Stage.DONE)
    assert len(srv.course.submissions) == 1 and store.get(i).server_attempt == 1

    [j] = [make_ready(store, tmp_path, models["perfect"], 0.8, "always")]

    def crash_before(path):
        raise SystemExit("worker killed before sending")

    sched.client.submit = crash_before
    for _ in range(100):  # until the window opens and the doomed POST is attempted
        try:
            time.sleep(min(sched.tick() or 0.2, 0.3))
        except SystemExit:
            break
    assert store.get(j).stage is Stage.SUBMITTING
    sched.client.submit = real_submit
    drive(sched, lambda: store.get(j).stage is Stage.DONE)
    assert len(srv.course.submissions) == 2 and store.get(j).server_attempt == 2


def test_a_429_reschedules_to_the_time_the_server_named(sched, store, srv, tmp_path, models):
    i = make_ready(store, tmp_path, models["perfect"], 0.9, "always")
    srv.inject("rate_limit", wait_s=1, unit="seconds", route="submit")
    delay = sched.tick()  # the window is free, the POST meets the 429: back to ready until the named time
    assert store.get(i).stage is Stage.READY and 1.0 <= delay <= 3.0
    assert "rate limited" in store.events(i)[-1]["message"]
    assert store.get_meta_json("course.blocked_until") is not None
    drive(sched, lambda: store.get(i).stage is Stage.DONE)
    assert len(srv.course.submissions) == 1


def test_a_failed_grading_keeps_the_server_text(sched, store, srv, tmp_path, models):
    i = make_ready(store, tmp_path, models["broken"], 0.9, "always")
    drive(sched, lambda: store.get(i).stage is Stage.FAILED)
    assert store.get(i).error.endswith(": broken file")


def test_submissions_made_outside_kdq_count_for_the_window(sched, store, srv, tmp_path, models, token):
    with CourseClient(srv.url, token) as other:
        other.submit(models["const0"])
    i = make_ready(store, tmp_path, models["perfect"], 0.9, "always")
    delay = sched.tick()
    assert store.get(i).stage is Stage.READY and delay is not None and delay > 0.5
    drive(sched, lambda: store.get(i).stage is Stage.DONE)
    assert store.get(i).server_attempt == 2


def test_a_pending_attempt_overtaken_by_a_newer_one_is_superseded(
    dataset_dir, store, settings, token, tmp_path, models
):
    settings.submit_interval_s, settings.status_interval_s = 0.0, 0.1
    with (
        FakeServer(
            teams={"Team Rocket": token},
            data_dir=dataset_dir,
            submit_interval_s=0,
            status_interval_s=0,
            eval_delay_s=1.0,
        ) as srv,
        CourseClient(srv.url, token, "Team Rocket") as client,
    ):
        sched = Scheduler(store, client, settings, retry_s=0.2, idle_s=0.2)
        i = make_ready(store, tmp_path, models["perfect"], 0.9, "always")
        drive(sched, lambda: store.get(i).stage is Stage.EVALUATING)
        client.submit(models["const0"])  # someone submits by hand meanwhile
        drive(sched, lambda: store.get(i).stage is Stage.DONE)
        assert "superseded by attempt #2" in store.events(i)[-1]["message"]
        [row] = store.db.query("select state from submissions where exp_id = ?", [i])
        assert row["state"] == "superseded"


def test_manual_waits_for_kdq_submit(sched, store, srv, tmp_path, models):
    i = make_ready(store, tmp_path, models["perfect"], 0.9, "manual")
    assert sched.tick() is None and store.get(i).stage is Stage.READY
    store.request_submit(i)
    drive(sched, lambda: store.get(i).stage is Stage.DONE)
    assert store.get(i).submit_requested is False


def test_status_header_lines_tell_the_story(sched, store, srv, tmp_path, models, settings):
    from kdq.course.status import header_lines

    assert header_lines(store, interval_s=1.0) == ["course server: not contacted yet"]
    i = make_ready(store, tmp_path, models["perfect"], 0.9, "always")
    drive(sched, lambda: store.get(i).stage is Stage.DONE)
    lines = header_lines(store, interval_s=900.0)
    assert "reachable" in lines[0]
    assert f"attempt #1 = {i} e0.9 (successful, score" in lines[1] and "rank 1" in lines[1]
    assert "next window: in 15m" in lines[1]
    srv.go_down()
    make_ready(store, tmp_path, models["perfect"], 0.8, "always")
    time.sleep(0.25)  # past the status throttle
    assert sched.tick() is not None  # idle no more: it looks, finds nobody, and says when to look again
    assert "[red]unreachable[/red]" in header_lines(store, interval_s=900.0)[0]


def test_an_outside_upload_during_a_lost_answer_is_not_taken_for_ours(
    sched, store, srv, tmp_path, models, token
):
    i = make_ready(store, tmp_path, models["perfect"], 0.9, "always")

    theirs = tmp_path / "theirs.pt"
    theirs.write_bytes(b"\0" * 300_000)  # another model: another size

    def lost(path):  # our upload never arrives, but someone else's does meanwhile
        with CourseClient(srv.url, token) as other:
            other.submit(theirs)
        raise SystemExit("worker killed")

    real_submit, sched.client.submit = sched.client.submit, lost
    with pytest.raises(SystemExit):
        sched.tick()
    sched.client.submit = real_submit
    drive(sched, lambda: store.get(i).stage is Stage.DONE)
    assert store.get(i).server_attempt == 2 and len(srv.course.submissions) == 2


def test_default_waits_follow_the_window(store, settings):
    settings.submit_interval_s, settings.status_interval_s = 900.0, 15.0
    real = Scheduler(store, None, settings)
    assert (real.retry_s, real.max_retry_s, real.idle_s, real.eval_timeout_s) == (60.0, 900.0, 60.0, 3600.0)
    settings.submit_interval_s, settings.status_interval_s = 4.0, 0.5
    demo = Scheduler(store, None, settings)
    assert (demo.retry_s, demo.max_retry_s, demo.idle_s) == (1.0, 4.0, 1.0)


def test_worker_killed_mid_upload_is_reconciled_by_the_next_one(
    srv, store, settings, tmp_path, models, token
):
    """A real process is SIGKILLed while its POST hangs after the server recorded it; the next adopts it."""
    import os
    import signal
    import subprocess
    import sys

    i = make_ready(store, tmp_path, models["perfect"], 0.9, "always")
    srv.inject("stall", seconds=30, route="submit", when="after")
    env = {
        **os.environ,
        "KDQ_HOME": str(settings.root),
        "KDQ_SERVER_URL": srv.url,
        "KDQ_TOKEN": token,
        "KDQ_TEAM": "Team Rocket",
        "KDQ_SUBMIT_INTERVAL_S": "1",
        "KDQ_STATUS_INTERVAL_S": "0.2",
    }
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from kdq.settings import Settings\n"
            "from kdq.course.scheduler import run_tick\nrun_tick(Settings())",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not srv.course.submissions and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert srv.course.submissions, "the child never uploaded"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert store.get(i).stage is Stage.SUBMITTING
    srv.clear_faults()
    settings.submit_interval_s, settings.status_interval_s = 1.0, 0.2
    with CourseClient(srv.url, token, "Team Rocket") as client:
        sched = Scheduler(store, client, settings, retry_s=0.2, idle_s=0.3)
        drive(sched, lambda: store.get(i).stage is Stage.DONE)
    assert len(srv.course.submissions) == 1 and store.get(i).server_attempt == 1


def test_rank_is_refreshed_when_other_teams_overtake(sched, store, srv, tmp_path, models):
    i = make_ready(store, tmp_path, models["const0"], 0.9, "always")
    drive(sched, lambda: store.get(i).stage is Stage.DONE)
    assert store.get(i).server_rank == 1
    rival = "5" * 32
    srv.course.add_team("Rivals", rival)
    with CourseClient(srv.url, rival) as other:
        other.submit(models["perfect"])
    srv.course.wait_graded()
    assert sched.tick() is None and store.get(i).server_rank == 1  # not yet: once per leaderboard_every_s
    sched.leaderboard_every_s = 0
    sched.tick()
    assert store.get(i).server_rank == 2
    assert store.events(i)[-1]["message"] == "rank 1 → 2"


def test_a_refused_upload_fails_with_the_servers_words(make_server, store, settings, tmp_path, models, token):
    srv = make_server(max_size_mb=0.0001)
    settings.submit_interval_s, settings.status_interval_s = 0.0, 0.0
    with CourseClient(srv.url, token, "Team Rocket", max_upload_mb=100) as client:
        sched = Scheduler(store, client, settings, retry_s=0.2)
        i = make_ready(store, tmp_path, models["perfect"], 0.9, "always")
        drive(sched, lambda: store.get(i).stage is Stage.FAILED)
        assert store.get(i).error == "the course server refused the upload: File too large (>0.0 MB)"
        j = make_ready(store, tmp_path, models["perfect"], 0.8, "always")
        (tmp_path / "artifacts" / str(j) / runfolder.MODEL).unlink()
        drive(sched, lambda: store.get(j).stage is Stage.FAILED)
        assert store.get(j).error.startswith("not uploaded: ") and "no such file" in store.get(j).error
    assert srv.course.submissions == []


def test_run_tick_ends_redundant_chains(store, settings, dataset_dir, tmp_path, models, token):
    """The scheduler and the stand-in share one clock that the test moves: the count of uploads is
    the chains' doing, never the machine's speed against a real-time window."""
    from kdq.course.ledger import Ledger
    from kdq.course.scheduler import NEXT_TICK, run_tick

    now, mono, moved = time.time(), time.monotonic(), [0.0]
    server = FakeServer(
        teams={"Team Rocket": token},
        data_dir=dataset_dir,
        submit_interval_s=900.0,
        status_interval_s=0.0,
        clock=lambda: now + moved[0],
    )
    settings.submit_interval_s, settings.status_interval_s = 900.0, 0.0
    settings.token, settings.team = token, "Team Rocket"

    def at(t):
        moved[0] = t
        return {"clock": lambda: now + t, "monotonic": lambda: mono + t}

    with server as srv:
        settings.server_url = srv.url
        with CourseClient(srv.url, token) as other:
            other.submit(models["const0"])  # the window is closed for 15 minutes
        make_ready(store, tmp_path, models["perfect"], 0.9, "always")
        first = run_tick(settings, store, **at(0))
        assert first is not None and first > 800  # waiting for the window
        assert Ledger(store, lambda: now, lambda: mono).next_tick_at() == pytest.approx(now + first)
        assert store.get_meta_json(NEXT_TICK)["when"] == pytest.approx(now + first)
        assert run_tick(settings, store, **at(60)) is None  # a second chain: ends here
        assert run_tick(settings, store, **at(60), force=True) is not None  # a nudge still ticks
        assert len(srv.course.submissions) == 1  # neither uploaded: the window is still closed
        assert run_tick(settings, store, **at(first)) is not None  # the chain that is due goes on
        assert len(srv.course.submissions) == 2  # and uploads, once


def test_a_live_submission_never_graded_stops_blocking_if_better(
    dataset_dir, store, settings, token, tmp_path, models
):
    settings.submit_interval_s, settings.status_interval_s = 0.0, 0.0
    with (
        FakeServer(
            teams={"Team Rocket": token},
            data_dir=dataset_dir,
            submit_interval_s=0,
            status_interval_s=0,
            eval_delay_s=3600,
        ) as srv,
        CourseClient(srv.url, token, "Team Rocket") as client,
    ):
        sched = Scheduler(store, client, settings, retry_s=0.2, idle_s=0.2, eval_timeout_s=1.0)
        first = make_ready(store, tmp_path, models["perfect"], 0.9)
        drive(sched, lambda: store.get(first).stage is Stage.EVALUATING)
        worse = make_ready(store, tmp_path, models["perfect"], 0.8)
        assert sched.tick() is not None and store.get(worse).stage is Stage.READY  # the live one may yet fail
        time.sleep(1.2)  # the grader never answers
        drive(sched, lambda: store.get(worse).stage is Stage.SKIPPED)
        assert len(srv.course.submissions) == 1


def test_a_crashing_tick_is_reported_and_retried(store, settings, srv, tmp_path, models, token, monkeypatch):
    from kdq.course import scheduler as scheduler_module
    from kdq.course.status import header_lines

    settings.submit_interval_s, settings.status_interval_s = 1.0, 0.0
    settings.token, settings.team, settings.server_url = token, "Team Rocket", srv.url
    i = make_ready(store, tmp_path, models["perfect"], 0.9, "always")

    def boom(self, ready):
        raise ZeroDivisionError(f"bug near {token}")

    monkeypatch.setattr(scheduler_module.Scheduler, "_next", boom)
    delay = scheduler_module.run_tick(settings, store)
    assert delay == 1.0 and store.get(i).stage is Stage.READY
    [line] = [x for x in header_lines(store, interval_s=1.0) if "crashed" in x]
    assert "ZeroDivisionError: bug near ***" in line and token not in line
    monkeypatch.undo()
    time.sleep(1.1)
    assert scheduler_module.run_tick(settings, store) is not None
    assert not any("crashed" in x for x in header_lines(store, interval_s=1.0))


def test_score_comes_from_the_leaderboard_when_the_status_has_none(
    sched, store, srv, tmp_path, models, monkeypatch
):
    from kdq.course.fake_server.course import Submission

    original = Submission.as_status
    monkeypatch.setattr(
        Submission, "as_status", lambda self: {k: v for k, v in original(self).items() if k != "score"}
    )
    i = make_ready(store, tmp_path, models["perfect"], 0.9, "always")
    drive(sched, lambda: store.get(i).stage is Stage.DONE)
    assert store.get(i).server_score == pytest.approx(srv.course.submissions[0].score, abs=1e-4)


def test_explore_tries_a_model_within_the_noise_then_puts_the_best_graded_back(
    sched, store, srv, tmp_path, models, settings
):
    from kdq.course import scoring

    good = make_ready(store, tmp_path, models["perfect"], 0.95, "explore")
    drive(sched, lambda: store.get(good).stage is Stage.DONE)
    close = make_ready(store, tmp_path, models["const0"], 0.96, "explore")  # upper bound 10: worth a try
    store.update(close, metrics={"holdout_f1": 0.96, "holdout_f1_ci": [0.92, 1.0]})
    drive(sched, lambda: len(srv.course.submissions) == 3 and store.get(good).stage is Stage.DONE)
    assert [s.attempt for s in srv.course.submissions] == [1, 2, 3]
    assert store.get(close).server_attempt == 2 and store.get(good).server_attempt == 3  # put back
    assert srv.course.submissions[2].score == srv.course.submissions[0].score  # the best graded counts
    assert any("end of the night" in e["message"] for e in store.events(good))
    shown = scoring.header_lines(store, settings, time.time())
    assert any("policy" in x and "end of the night" in x and f"experiment {good}" in x for x in shown)
