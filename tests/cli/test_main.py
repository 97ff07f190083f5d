"""The command tree: every command is there, and the top-level shortcuts work."""

import json
import secrets

from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.course.fake_server import FakeServer

runner = CliRunner()


def test_every_command_has_help():
    for args in (
        ["--help"],
        ["demo", "--help"],
        ["enqueue", "--help"],
        ["status", "--help"],
        ["leaderboard", "--help"],
        ["data", "--help"],
        ["server", "--help"],
        ["modal", "--help"],
        ["fake-server", "--help"],
        ["doctor", "--help"],
        ["report", "--help"],
        ["compare", "--help"],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, (args, r.output)


def test_top_level_leaderboard_reads_the_server(settings, monkeypatch):
    token = secrets.token_hex(16)
    with FakeServer(teams={"us": token}) as srv:
        monkeypatch.setenv("KDQ_SERVER_URL", srv.url)
        monkeypatch.setenv("KDQ_TOKEN", token)
        monkeypatch.setenv("KDQ_TEAM", "us")
        r = runner.invoke(app, ["leaderboard", "--json"])
    assert r.exit_code == 0, r.output
    board = json.loads(r.stdout)
    assert board["rows"] == [] and board["ours"] is None
    assert token not in r.output


def test_a_database_from_a_newer_kdq_is_one_line_at_every_command(settings):
    from kdq.schema import SCHEMA_VERSION
    from kdq.store import Store

    with Store.open(settings) as s:
        s.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    for args in (["status"], ["show", "1"], ["results"], ["cancel", "1"], ["worker"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 1, (args, r.output)
        assert "Traceback" not in r.output, (args, r.output)
        [line] = r.stderr.strip().splitlines()
        assert "newer kdq" in line and "upgrade kdq" in line, (args, line)
