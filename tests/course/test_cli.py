"""``kdq server ...`` against an in-process stand-in, and ``kdq fake-server`` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import structlog
from typer.testing import CliRunner

from kdq.cli.main import app

runner = CliRunner()


@pytest.fixture
def env(server, token, home, monkeypatch):
    monkeypatch.setenv("KDQ_SERVER_URL", server.url)
    monkeypatch.setenv("KDQ_TOKEN", token)
    monkeypatch.setenv("KDQ_TEAM", "Team Rocket")
    return server


def run(*args: str):
    result = runner.invoke(app, list(args))
    structlog.reset_defaults()  # the CLI pointed logging at the runner's stream, closed now
    return result, result.stdout + (result.stderr or "")


def test_ping_submit_status_leaderboard_json(env, token, models):
    result, out = run("server", "ping", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["reachable"] is True
    result, out = run("server", "submit", str(models["perfect"]), "--json", "--yes")
    assert result.exit_code == 0, out
    assert json.loads(result.stdout)["attempt"] == 1
    env.course.wait_graded()
    result, out = run("server", "status", "--json")
    [row] = json.loads(result.stdout)
    assert (row["attempt"], row["status"], row["state"]) == (1, "successful", "successful")
    result, out = run("server", "leaderboard", "--json")
    assert json.loads(result.stdout)["ours"]["rank"] == 1
    assert token not in out


def test_tables_and_errors(env, token, models, store):
    run("server", "submit", str(models["broken"]), "--yes")
    env.course.wait_graded()
    from kdq.spec import ExperimentSpec

    [i] = store.add([(None, ExperimentSpec(name="mine"))])
    store.db["submissions"].insert({"exp_id": i, "state": "failed", "attempt": 1})
    result, out = run("server", "status")
    assert result.exit_code == 0 and "broken file" in out and f"{i} mine" in out
    result, out = run("server", "leaderboard")
    assert "not on the leaderboard yet" in out
    env.inject("rate_limit", wait_s=300, route="submit")
    result, out = run("server", "submit", str(models["perfect"]), "--yes")
    assert result.exit_code == 3 and "Rate limit: wait 5 minutes" in out and "300" in out
    env.go_down()
    result, out = run("server", "ping")
    assert result.exit_code == 4 and "kdq fake-server" in out  # 4: unreachable (a loopback stand-in)
    result, out = run("server", "status")
    assert result.exit_code == 4 and "cannot connect" in out
    assert token not in out


def test_fake_server_command_runs_and_stops(dataset_dir, tmp_path, token):
    teams = tmp_path / "teams.json"
    teams.write_text(json.dumps({"Team Rocket": token}))
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "kdq"),
            "fake-server",
            "--port",
            "0",
            "--teams-file",
            str(teams),
            "--data-dir",
            str(dataset_dir),
            "--status-interval-s",
            "0",
            "--fault",
            "error:1,route=status,status=502",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "KDQ_LOG_JSON": "true"},
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if "stand-in course server on " in line:
                url = line.split(" on ", 1)[1].split()[0]
        assert url, "the stand-in never said where it listens"
        assert httpx.get(f"{url}/submission-status/{token}").status_code == 502  # the --fault
        assert httpx.get(f"{url}/submission-status/{token}").json() == []
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert token not in out
