"""The policy's inputs read from the ledger: size factor, calibration, grading delay, deadline, live."""

from datetime import UTC, datetime

import pytest

from kdq.course import scoring
from kdq.course.ledger import Ledger
from kdq.course.models import Leaderboard, LeaderboardRow
from kdq.course.policy import Live
from kdq.spec import ExperimentSpec
from kdq.stages import Stage
from tests.course import test_scheduler as stand_in

srv, sched = stand_in.srv, stand_in.sched  # the stand-in's fixtures, here under their names

PATH = [Stage.LAUNCHING, Stage.TRAINING, Stage.FETCHING, Stage.VALIDATING, Stage.READY]


def validated(store, metrics: dict) -> int:
    [i] = store.add([(None, ExperimentSpec(name=f"e{len(store.list())}"))], force=True)
    stage = Stage.QUEUED
    for nxt in PATH:
        fields = (
            {"artifacts": "/nowhere", "val_f1": metrics["val_f1"], "metrics": metrics}
            if nxt is Stage.READY
            else {}
        )
        assert store.move(i, stage, nxt, **fields)
        stage = nxt
    return i


def graded(store, ledger, exp_id: int, attempt: int, score: float, size: float, posted: float, done: float):
    store.move(exp_id, Stage.READY, Stage.SUBMITTING, "submitting")
    store.move(exp_id, Stage.SUBMITTING, Stage.EVALUATING, "submitted")
    sub = ledger.open_submission(exp_id)
    ledger.update_submission(
        sub, state="successful", attempt=attempt, score=score, model_size=size, posted_at=posted
    )
    store.db["events"].insert(
        {"exp_id": exp_id, "ts": done, "kind": "stage", "stage": "done", "message": "graded"}
    )
    store.move(exp_id, Stage.EVALUATING, Stage.DONE, "graded")


HOLDOUT = {"val_f1": 0.9, "holdout_f1": 0.80, "holdout_f1_ci": [0.78, 0.82], "model_mb": 13.0}


def test_expected_of_an_experiment_uses_the_holdout_and_says_no_holdout_otherwise(store, settings):
    factor, cal = scoring.outlook(store, settings)
    assert factor.assumed and not cal.active
    e = scoring.expected_of(store.get(validated(store, HOLDOUT)), factor, cal)
    assert e.text() == "7.500 [7.300, 7.700]"  # 8.0 - 0.5 for 13 MiB under the prior
    old = scoring.expected_of(store.get(validated(store, {"val_f1": 0.7, "model_mb": 1.0})), factor, cal)
    assert old.text() == "7.000 (no holdout)"


def test_the_size_factor_comes_from_the_latest_snapshot(store, settings):
    ledger = Ledger(store, clock=lambda: 500.0)
    rows = [
        LeaderboardRow(team=f"t{i}", f1=0.8, score=8.0 - 0.05 * s, size_mb=s)
        for i, s in enumerate(range(1, 9))
    ]
    ledger.save_board(Leaderboard(columns=[], rows=rows), None)
    factor = scoring.size_factor(ledger, settings)
    assert factor.method == "fitted (isotonic, 8 rows)" and factor.snapshot_at == 500.0
    assert factor(4.0) == pytest.approx(0.2)


def test_the_schedulers_fit_is_kept_so_kdq_status_does_not_fit_again(store, settings, monkeypatch):
    ledger = Ledger(store, clock=lambda: 500.0)
    rows = [
        LeaderboardRow(team=f"t{i}", f1=0.8, score=8.0 - 0.05 * s, size_mb=s)
        for i, s in enumerate(range(1, 9))
    ]
    ledger.save_board(Leaderboard(columns=[], rows=rows), None)
    fitted = scoring.inputs(store, ledger, settings, 900.0)["factor"]
    assert ledger.size_factor_fit()["snapshot_at"] == 500.0

    def no_fit(*args, **kw):
        raise AssertionError("fitted again")

    monkeypatch.setattr(scoring, "fit", no_fit)
    assert scoring.outlook(store, settings)[0] == fitted


def test_calibration_and_grading_delay_from_our_graded_submissions(store, settings):
    ledger = Ledger(store)
    a = validated(store, {"val_f1": 0.9, "holdout_f1": 0.80, "model_mb": 1.0})
    b = validated(store, {"val_f1": 0.9, "holdout_f1": 0.70, "model_mb": 1.0})
    graded(store, ledger, a, 1, 7.7, 1.0, posted=100.0, done=160.0)
    assert not scoring.calibration(store, ledger, scoring.size_factor(ledger, settings)).active
    graded(store, ledger, b, 2, 6.9, 1.0, posted=1000.0, done=1240.0)
    cal = scoring.calibration(store, ledger, scoring.size_factor(ledger, settings))
    assert cal.active and cal.pairs == ((0.80, pytest.approx(0.77)), (0.70, pytest.approx(0.69)))
    assert cal.offset == pytest.approx(-0.02)
    assert scoring.grading_delay(store, ledger) == 240.0
    assert [(g.exp_id, g.score) for g in scoring.graded(ledger)] == [(a, 7.7), (b, 6.9)]


def test_the_deadline_is_eastern_with_the_grading_delay_seen(store, settings, monkeypatch):
    ledger = Ledger(store)
    assert scoring.inputs(store, ledger, settings, 900.0)["deadline"] is None
    monkeypatch.setenv("KDQ_DEADLINE", "2026-12-05 23:59")
    from kdq.settings import Settings

    d = scoring.inputs(store, ledger, Settings(), 900.0)["deadline"]
    assert datetime.fromtimestamp(d.at, UTC) == datetime(2026, 12, 6, 4, 59, tzinfo=UTC)  # EST is UTC-5
    assert d.grading_s == 900.0  # nothing graded yet: assume a whole window


def test_best_known_leaves_out_a_model_never_to_be_submitted(store, settings):
    factor, cal = scoring.outlook(store, settings)
    validated(store, {"val_f1": 0.7, "model_mb": 1.0})
    assert scoring.best_known(store, factor, cal) == pytest.approx(7.0)
    [i] = store.add([(None, ExperimentSpec(name="never", submit={"policy": "never"}))], force=True)
    stage = Stage.QUEUED
    for nxt in PATH:
        assert store.move(
            i, stage, nxt, **({"metrics": {"val_f1": 0.9, "model_mb": 1.0}} if nxt is Stage.READY else {})
        )
        stage = nxt
    assert scoring.best_known(store, factor, cal) == pytest.approx(7.0)


def test_live_details_ours_and_outside(store, settings):
    ledger = Ledger(store)
    a = validated(store, HOLDOUT)
    graded(store, ledger, a, 3, 7.4, 13.0, posted=1.0, done=2.0)
    ours = scoring.live_details(store, ledger, Live(attempt=3, state="successful", exp_id=a), "Team Rocket")
    assert (ours.val_f1, ours.ci, ours.holdout, ours.size_mb, ours.score) == (
        0.80,
        (0.78, 0.82),
        True,
        13.0,
        7.4,
    )
    row = LeaderboardRow(team="Team  Rocket ", f1=0.81, score=7.95, size_mb=2.5)
    ledger.save_board(Leaderboard(columns=[], rows=[row]), row)
    outside = scoring.live_details(store, ledger, Live(attempt=4, state="successful"), "team rocket")
    assert (outside.score, outside.val_f1, outside.size_mb) == (7.95, 0.81, 2.5)


def test_status_lines_say_how_scores_are_expected_and_count_down_to_the_deadline(store, settings):
    assert scoring.header_lines(store, settings, now=0.0) == [
        "size factor assumed (KDQ_SIZE_FACTOR): 2 MiB 0.04, 10 MiB 0.38, 20 MiB 0.79",
        "calibration: no calibration yet (0 graded of 2 needed)",
    ]
    from kdq.settings import Settings

    deadline = datetime(2026, 12, 5, 23, 59)
    s = Settings(deadline=deadline, submit_interval_s=900.0)
    at = deadline.replace(tzinfo=s.deadline.tzinfo).timestamp()
    ledger = Ledger(store)
    a = validated(store, HOLDOUT)
    graded(store, ledger, a, 1, 7.4, 13.0, posted=1.0, done=301.0)
    assert scoring.header_lines(store, s, now=at - 3 * 3600)[2:] == [
        "deadline Dec 05 23:59 EST: in 3.0h; final windows in 1.6h",
        "best graded so far: experiment 1 (score 7.400)",
    ]
    assert "closing: no new model goes" in scoring.header_lines(store, s, now=at - 600)[2]
    assert scoring.header_lines(store, s, now=at + 1)[-1] == "deadline Dec 05 23:59 EST: passed"


def test_expected_score_in_status_results_and_show(store, settings, monkeypatch):
    import json

    import structlog
    from typer.testing import CliRunner

    from kdq.cli.main import app

    a = validated(store, HOLDOUT)
    b = validated(store, {"val_f1": 0.7, "model_mb": 1.0})
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, list(args))
        structlog.reset_defaults()
        assert result.exit_code == 0, result.output
        return result.stdout

    rows = {r["id"]: r for r in json.loads(run("results", "--json"))}
    assert rows[a]["expected_score"] == 7.5 and rows[b]["expected_score"] == 7.0
    status = {e["id"]: e for e in json.loads(run("status", "--json"))["experiments"]}
    assert (
        status[a]["expected_score"]["interval"] == [7.3, 7.7]
        and status[b]["expected_score"]["holdout"] is False
    )
    assert json.loads(run("show", str(a), "--json"))["expected_score"]["score"] == 7.5
    plain = run("status")
    assert (
        "7.500 [7.300, 7.700]" in plain and "7.000 (no holdout)" in plain and "size factor assumed" in plain
    )
    shown = " ".join(run("show", str(b)).split())
    assert (
        "expected score 7.000 = 10 x 0.7000 (expected server F1) - 0.000 (size factor) (no holdout" in shown
    )


def test_at_the_deadline_the_scheduler_puts_the_best_graded_model_back(
    store, settings, tmp_path, models, srv, sched
):
    """Against the stand-in: a worse model is live when the deadline closes; the best graded one is
    uploaded once more, and nothing after it."""
    from datetime import timedelta

    drive, make_ready = stand_in.drive, stand_in.make_ready
    best = make_ready(store, tmp_path, models["perfect"], 0.9, "always")
    worse = make_ready(store, tmp_path, models["const0"], 0.5, "always")
    drive(sched, lambda: all(store.get(i).stage is Stage.DONE for i in (best, worse)))
    assert [s.attempt for s in srv.course.submissions] == [1, 2] and store.get(worse).server_attempt == 2
    assert store.get(worse).server_score < store.get(best).server_score
    settings.deadline = datetime.now(UTC) + timedelta(seconds=30)  # inside the reserve: closing
    drive(sched, lambda: len(srv.course.submissions) == 3 and store.get(best).stage is Stage.DONE)
    assert srv.course.submissions[-1].size_mb == srv.course.submissions[0].size_mb  # the best file again
    assert any("putting it back" in e["message"] for e in store.events(best))
    for _ in range(5):
        sched.tick()
    assert len(srv.course.submissions) == 3 and store.get(best).server_attempt == 3
