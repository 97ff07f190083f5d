"""Logging: one line per stage change in the worker, Huey's chatter only with -v, secrets never written."""

import logging

import pytest
import structlog
from structlog.testing import capture_logs
from typer.testing import CliRunner

from kdq import log as kdqlog
from kdq.stages import Stage


@pytest.fixture
def restore_logging():
    saved, handlers = structlog.get_config(), logging.getLogger().handlers[:]
    levels = {name: logging.getLogger(name).level for name in kdqlog.QUIET}
    yield
    structlog.configure(**saved)
    logging.getLogger().handlers[:] = handlers
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_the_stage_line_says_what_happened():
    line = kdqlog.stage_line(
        7,
        "long-d",
        Stage.TRAINING,
        Stage.FETCHING,
        "training finished",
        {"epoch": 60, "epochs": 60, "best_f1": 0.812},
    )
    assert line == "7 long-d: training → fetching (training finished, epoch 60/60, val F1 0.81)"
    assert kdqlog.stage_line(3, "x", Stage.QUEUED, Stage.LAUNCHING) == "3 x: queued → launching"


def test_every_move_is_one_log_line(store, restore_logging):
    from kdq.spec import ExperimentSpec

    kdqlog.configure(json=True)  # the worker's level (a CLI command before this one may have set WARNING)
    [exp_id] = store.add([(None, ExperimentSpec(name="long-d"))])
    with capture_logs() as logs:
        assert store.move(exp_id, Stage.QUEUED, Stage.LAUNCHING, "run e1-a1")
        assert not store.move(exp_id, Stage.QUEUED, Stage.LAUNCHING)  # lost the race: nothing said
    assert [entry["event"] for entry in logs] == [f"{exp_id} long-d: queued → launching (run e1-a1)"]


def test_huey_and_httpx_stay_at_warning_unless_verbose(restore_logging):
    kdqlog.configure(json=True)
    assert logging.getLogger("huey").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    kdqlog.configure(json=True, verbose=True)
    assert logging.getLogger("huey").getEffectiveLevel() == logging.INFO


def test_a_cli_command_does_not_echo_its_own_stage_change(settings, hw3, tmp_path, restore_logging):
    from kdq.cli.main import app

    (tmp_path / "one.toml").write_text("[train]\nepochs = 3\n")
    runner = CliRunner()
    assert runner.invoke(app, ["enqueue", str(tmp_path / "one.toml")]).exit_code == 0
    r = runner.invoke(app, ["cancel", "1"])
    assert r.stdout.strip() == "1: cancelled" and "→" not in r.stderr, r.stderr


def test_a_full_disk_under_huey_is_one_line_not_a_traceback_per_poll(restore_logging, capsys):
    """Issue 12, 10: Huey's consumer logs a traceback at every poll while SQLite cannot write."""
    import sqlite3

    kdqlog.configure(json=False)
    consumer = logging.getLogger("huey.consumer")
    for _ in range(50):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError:
            consumer.exception("Error reading from queue")
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "Error reading from queue" in line]
    assert len(lines) == 1 and "disk full (ENOSPC)" in lines[0], err[-2000:]
    try:
        raise ValueError("something else")
    except ValueError:
        consumer.exception("Unhandled error during execution")
    assert "Traceback" in capsys.readouterr().err  # other trouble keeps its traceback
