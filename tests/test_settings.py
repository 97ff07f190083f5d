"""Settings: bad ``KDQ_*`` values are one line naming the variable; the home is found upwards, like git."""

import json
import os
import secrets

import pytest
from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.settings import Settings, SettingsError, get_settings

runner = CliRunner()


def one_line_error(r, *words):
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        ("KDQ_SERVER_URL", "http://[::1", ["KDQ_SERVER_URL", "not a URL"]),
        ("KDQ_SERVER_URL", "hadi.cs.virginia.edu:9000", ["KDQ_SERVER_URL", "http://"]),
        ("KDQ_SUBMIT_INTERVAL_S", "soon", ["KDQ_SUBMIT_INTERVAL_S", "'soon'", "number"]),
        ("KDQ_WORKER_THREADS", "0", ["KDQ_WORKER_THREADS", "greater than or equal to 1"]),
        ("KDQ_STATUS_INTERVAL_S", "inf", ["KDQ_STATUS_INTERVAL_S", "'inf'", "finite"]),
        ("KDQ_SUBMIT_INTERVAL_S", "1e300", ["KDQ_SUBMIT_INTERVAL_S", "less than or equal to 86400"]),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(home, monkeypatch, var, value, words):
    monkeypatch.setenv(var, value)
    one_line_error(runner.invoke(app, ["status"]), *words)
    one_line_error(runner.invoke(app, ["enqueue", "x.toml"]), *words)


def test_kdq_home_that_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").write_text("not a folder")
    monkeypatch.setenv("KDQ_HOME", str(tmp_path / "state"))
    one_line_error(runner.invoke(app, ["status"]), "KDQ_HOME", "is a file")


def test_a_token_is_never_echoed_in_a_settings_error(home, monkeypatch):
    token = secrets.token_hex(16)  # made at run time: no token-shaped string in the repository
    monkeypatch.setenv("KDQ_TOKEN", token)
    monkeypatch.setenv("KDQ_HEARTBEAT_S", "-1")
    with pytest.raises(SettingsError) as exc:
        get_settings()
    assert "KDQ_HEARTBEAT_S" in str(exc.value) and token[:16] not in str(exc.value)


def test_the_home_is_found_from_a_subfolder_and_its_env_file_read(tmp_path, monkeypatch):
    monkeypatch.delenv("KDQ_HOME")
    (tmp_path / ".kdq").mkdir()
    (tmp_path / ".env").write_text("KDQ_TEAM=from-dotenv\n")
    deep = tmp_path / "configs" / "deep"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    s = Settings()
    assert s.root == (tmp_path / ".kdq").resolve() and s.team == "from-dotenv"
    monkeypatch.setenv("KDQ_HOME", str(tmp_path / "elsewhere"))
    assert Settings().root == (tmp_path / "elsewhere").resolve()  # KDQ_HOME wins


def test_read_only_commands_create_nothing_and_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("KDQ_HOME")
    empty = tmp_path / "nowhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for args in (["status"], ["results"], ["show", "1"], ["cancel", "1"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 1, (args, r.output)
        assert "no kdq state here" in r.stderr and str(empty) in r.stderr, r.stderr
    assert os.listdir(empty) == []


def test_status_json_with_no_state_still_gives_scripts_an_object(tmp_path, monkeypatch):
    monkeypatch.delenv("KDQ_HOME")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["status", "--json"])
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["state"] is None and data["worker_alive"] is False and data["experiments"] == []
    assert str(tmp_path) in data["where"]
    assert os.listdir(tmp_path) == []
