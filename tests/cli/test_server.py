"""``kdq server ...``, ``kdq fake-server``: exit codes, the stored leaderboard off the VPN, manual uploads."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from kdq.cli import fake_server
from kdq.cli.main import app
from kdq.course.fake_server import FakeServer

runner = CliRunner()
DOWN = "http://127.0.0.1:9"  # nothing listens on the discard port


def test_unreachable_is_exit_code_4_for_ping_and_status(home, monkeypatch):
    monkeypatch.setenv("KDQ_SERVER_URL", DOWN)
    monkeypatch.setenv("KDQ_TOKEN", secrets.token_hex(16))
    for args in (["server", "ping"], ["server", "status"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 4, (args, r.output)
        assert "Traceback" not in r.output
        assert "is `kdq fake-server` running?" in r.output and "VPN" not in r.output  # 127.0.0.1: not the VPN


def test_a_short_command_logs_its_retries_for_people_even_when_piped(home, monkeypatch):
    """JSON log lines are for the worker's log file (or KDQ_LOG_JSON=1), not a user's piped command."""
    monkeypatch.setenv("KDQ_SERVER_URL", DOWN)
    monkeypatch.setenv("KDQ_TOKEN", secrets.token_hex(16))
    r = runner.invoke(app, ["server", "status"])
    retries = [line for line in r.stderr.splitlines() if "course.retry" in line]
    assert r.exit_code == 4 and retries, r.stderr
    assert not any(line.lstrip().startswith("{") for line in retries), r.stderr
    monkeypatch.setenv("KDQ_LOG_JSON", "1")
    r = runner.invoke(app, ["server", "status"])
    assert any(line.startswith("{") and "course.retry" in line for line in r.stderr.splitlines()), r.stderr


def test_the_leaderboard_off_the_vpn_is_the_last_stored_one_with_its_age(store, monkeypatch):
    from kdq.course.ledger import Ledger
    from kdq.course.models import Leaderboard, LeaderboardRow

    rows = [LeaderboardRow(rank=1, team="them", score=8.1), LeaderboardRow(rank=2, team="us", score=7.9)]
    Ledger(store, clock=lambda: __import__("time").time() - 600).save_board(
        Leaderboard(columns=["rank", "team", "score"], rows=rows), rows[1]
    )
    monkeypatch.setenv("KDQ_SERVER_URL", DOWN)
    monkeypatch.setenv("KDQ_TEAM", "us")
    r = runner.invoke(app, ["leaderboard"])
    assert r.exit_code == 0, r.output
    assert "unreachable" in r.stderr and "the last stored leaderboard, 10m old" in r.stderr
    table = [line.split("\t")[:3] for line in r.stdout.splitlines() if "\t" in line]
    assert table == [["rank", "team", "score"], ["1", "them", "8.1"], ["2", "us", "7.9"]]
    data = json.loads(runner.invoke(app, ["leaderboard", "--json"]).stdout)
    assert data["ours"]["rank"] == 2 and data["stored_at"] is not None


def test_the_leaderboard_with_nothing_stored_and_no_server_is_exit_4(home, monkeypatch):
    monkeypatch.setenv("KDQ_SERVER_URL", DOWN)
    assert runner.invoke(app, ["leaderboard"]).exit_code == 4


def test_a_manual_upload_asks_first(home, monkeypatch, tmp_path):
    token = secrets.token_hex(16)
    model = tmp_path / "model.pt"
    model.write_bytes(b"not really a model")
    with FakeServer(teams={"us": token}) as srv:
        monkeypatch.setenv("KDQ_SERVER_URL", srv.url)
        monkeypatch.setenv("KDQ_TOKEN", token)
        r = runner.invoke(app, ["server", "submit", str(model)], input="n\n")
        assert r.exit_code == 1 and "nothing was uploaded" in r.stderr
        r = runner.invoke(app, ["server", "submit", str(model), "--yes"])
        assert r.exit_code == 0, r.output
        assert "attempt #1" in r.stdout
    from kdq.course.ledger import Ledger
    from kdq.settings import Settings
    from kdq.store import Store

    with Store.open(Settings()) as store:  # recorded: kdq status counts the window from it
        assert abs(Ledger(store).last_submit_at([]) - time.time()) < 60
    r = runner.invoke(app, ["server", "submit", str(tmp_path / "missing.pt"), "--yes"])
    assert r.exit_code == 2 and "no such file" in r.stderr


def test_fake_server_on_a_busy_port_is_one_line(home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = runner.invoke(app, ["fake-server", "--port", str(port)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert (
        f"error: port {port} on 127.0.0.1 is not free" in r.stderr and "--port 0 picks a free one" in r.stderr
    )


@pytest.mark.parametrize("team, token", [("us:abc123", "abc123"), ("us", None)])
def test_fake_server_prints_the_export_line_for_its_team_and_limits(home, team, token):
    """--team NAME:TOKEN, or --team NAME alone (a new token is made up for it, as for the default team)."""
    assert fake_server.FAKE_PORT not in (8000, 9000)  # not one of the real server's ports
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDQ_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from kdq.cli.main import app; app()", "fake-server", "--port", "0",
         "--team", team, "--submit-interval-s", "5", "--status-interval-s", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(10)
    export = lines[1].split()
    assert export[0] == "export" and export[1].startswith("KDQ_SERVER_URL=http://127.0.0.1:")
    made_up = export[3].removeprefix("KDQ_TOKEN=")
    assert token or (len(made_up) == 32 and int(made_up, 16) >= 0)
    assert export[2:] == [
        "KDQ_TEAM=us",
        f"KDQ_TOKEN={token or made_up}",
        "KDQ_SUBMIT_INTERVAL_S=5",
        "KDQ_STATUS_INTERVAL_S=1",
    ]


@pytest.mark.parametrize("args", [["--version"], ["-V"]])
def test_version(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and r.stdout.startswith("kdq ")
