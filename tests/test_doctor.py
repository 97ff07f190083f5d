"""``kdq doctor``: each check against local stand-ins, the runner's timeouts, the formatting, the CLI."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from modal import exception as me
from typer.testing import CliRunner

from kdq import doctor
from kdq.backends.modal import DEPLOY_META, code_fingerprint
from kdq.backends.modal_data import upload_dataset
from kdq.doctor import Check, Env


class Volume:
    """Just enough of the gateway for the doctor: ``check`` and ``read_file`` over a dict."""

    def __init__(self, error: Exception | None = None):
        self.error = error
        self.files: dict[str, bytes] = {}

    def check(self):
        if self.error:
            raise self.error

    def read_file(self, path):
        self.check()
        return self.files.get(path)

    def upload(self, items):
        for local, path in items:
            self.files[path] = local if isinstance(local, bytes) else local.read_bytes()


class Ok(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def server_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def course(url):
    from kdq.course.client import CourseClient

    return lambda: CourseClient(url, connect_timeout_s=1.0)


@pytest.fixture
def restore_logging():
    """The CLI configures logging onto CliRunner's stderr, which closes after the call: put it back."""
    import logging

    import structlog

    saved, handlers = structlog.get_config(), logging.getLogger().handlers[:]
    yield
    structlog.configure(**saved)
    logging.getLogger().handlers[:] = handlers


# ---------------------------------------------------------------- single checks


def test_modal_without_credentials_says_what_to_run(settings):
    env = Env(settings, gateway=Volume(me.AuthError("Token missing")), modal=True)
    check = doctor.check_modal(env)
    assert not check.ok and "modal token new" in check.fix
    down = doctor.check_modal(Env(settings, gateway=Volume(me.ConnectionError("no route")), modal=True))
    assert not down.ok and "unreachable" in down.detail


def test_modal_with_the_real_sdk_and_no_credentials(settings, monkeypatch):
    import modal.config

    if modal.config.config.get("token_id"):
        pytest.skip("this machine has Modal credentials")
    check = doctor.check_modal(
        Env(settings, modal=True)
    )  # the real ModalGateway: AuthError at once, no network
    assert not check.ok and "modal token new" in check.fix


def test_dataset_on_the_volume_matching_the_local_copy(settings, tmp_path):
    from kdq.synth import synth

    local = settings.datasets_dir / "hw3"
    synth(local, per_class=2, seed=0, size_range=(16, 20), balanced=True)
    vol = Volume()
    assert not doctor.check_dataset(Env(settings, gateway=vol, modal=True)).ok  # not uploaded yet
    assert "kdq data upload" in doctor.check_dataset(Env(settings, gateway=vol, modal=True)).fix
    upload_dataset(vol, local, "hw3")
    check = doctor.check_dataset(Env(settings, gateway=vol, modal=True))
    assert check.ok and "matches" in check.detail
    (local / "extra.jpg").write_bytes(b"x")
    assert not doctor.check_dataset(Env(settings, gateway=vol, modal=True)).ok  # the local copy changed


def test_app_deployed_and_current(settings, store):
    env = Env(settings, gateway=Volume(), modal=True)
    assert "kdq modal deploy" in doctor.check_deployed(env).fix
    store.set_meta(DEPLOY_META, {"fingerprint": "0" * 16, "app": "kdq", "at": time.time()})
    assert "changed" in doctor.check_deployed(env).detail
    store.set_meta(DEPLOY_META, {"fingerprint": code_fingerprint(settings), "app": "kdq", "at": time.time()})
    assert doctor.check_deployed(env).ok


def test_worker_alive_or_not(settings, store):
    env = Env(settings, gateway=Volume())
    assert "kdq worker" in doctor.check_worker(env).fix
    store.set_meta("worker", {"pid": 1, "host": "h", "started_at": 0, "ts": time.time()})
    assert doctor.check_worker(env).ok
    store.set_meta("worker", {"pid": 1, "host": "h", "started_at": 0, "ts": time.time() - 3600})
    assert not doctor.check_worker(env).ok


def test_course_server_reachable_or_vpn_hint(settings, server_url):
    assert doctor.check_course(Env(settings, gateway=Volume(), course_client=course(server_url))).ok
    down = doctor.check_course(Env(settings, gateway=Volume(), course_client=course("http://192.0.2.1:9")))
    assert not down.ok and "VPN" in down.fix


def test_disk(settings):
    assert doctor.check_disk(Env(settings, gateway=Volume())).name == "disk"


# ---------------------------------------------------------------- running and formatting


def test_checks_run_concurrently_and_a_hanging_one_times_out(settings):
    release = threading.Event()
    checks = {
        "fast": lambda env: Check("fast", True, "fine"),
        "hangs": lambda env: release.wait(60) and Check("hangs", True, "late"),
        "crashes": lambda env: 1 / 0,
    }
    results = doctor.run_checks(Env(settings, gateway=Volume()), checks, timeout_s=0.5)
    release.set()
    assert [c.name for c in results] == ["fast", "hangs", "crashes"]
    assert results[0].ok and "no answer within" in results[1].detail
    assert "ZeroDivisionError" in results[2].detail and not results[2].ok


def test_formatting_is_one_line_per_check_with_the_fix_under_failures():
    checks = [
        Check("modal", False, "no valid Modal credentials", "run `modal token new`"),
        Check("disk", True, "9 GB"),
    ]
    lines = doctor.format_lines(checks)
    assert lines[0].startswith("FAIL modal") and "→ run `modal token new`" in lines[0]
    assert lines[1].startswith("ok   disk") and "→" not in lines[1]
    assert doctor.to_json(checks) == {
        "ok": False,
        "checks": [
            {
                "name": "modal",
                "ok": False,
                "detail": "no valid Modal credentials",
                "fix": "run `modal token new`",
                "skipped": False,
            },
            {"name": "disk", "ok": True, "detail": "9 GB", "fix": None, "skipped": False},
        ],
    }


def test_secrets_never_reach_the_output(settings):
    from kdq.log import add_secret

    secret = "s3cr3t-" + "ab" * 8
    add_secret(secret)
    checks = {"leaky": lambda env: Check("leaky", False, f"token {secret} refused", f"replace {secret}")}
    [check] = doctor.run_checks(Env(settings, gateway=Volume()), checks)
    assert secret not in check.detail + check.fix


def test_the_cli_prints_json_and_fails_when_anything_fails(home, monkeypatch, restore_logging):
    import modal.config

    from kdq.cli.main import app

    if modal.config.config.get("token_id"):
        pytest.skip("this machine has Modal credentials")
    monkeypatch.setenv("KDQ_SERVER_URL", "http://127.0.0.1:9")
    result = CliRunner().invoke(app, ["doctor", "--json", "--timeout", "5", "--modal"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert set(by_name) == set(doctor.CHECKS)
    assert "modal token new" in by_name["modal"]["fix"]
    assert "kdq fake-server" in by_name["course server"]["fix"]  # 127.0.0.1: not the VPN
    assert by_name["disk"]["ok"] is True


# ---------------------------------------------------------------- the course token, a local set-up


def test_the_token_is_checked_where_the_user_is(settings, monkeypatch):
    import secrets

    from kdq.course.fake_server import FakeServer
    from kdq.settings import Settings

    good = secrets.token_hex(16)
    with FakeServer(teams={"us": good}, status_interval_s=0) as srv:
        monkeypatch.setenv("KDQ_SERVER_URL", srv.url)
        monkeypatch.setenv("KDQ_TEAM", "us")

        def token_check(token: str | None) -> Check:
            if token is None:
                monkeypatch.delenv("KDQ_TOKEN", raising=False)
            else:
                monkeypatch.setenv("KDQ_TOKEN", token)
            return doctor.check_token(Env(Settings(), gateway=Volume(), modal=False))

        assert "KDQ_TOKEN is not set" in token_check(None).detail
        short = token_check(good[:30])
        assert (
            not short.ok
            and "30 characters, not 32 hex digits" in short.detail
            and good[:30] not in short.detail
        )
        refused = token_check(secrets.token_hex(16))
        assert not refused.ok and "refused" in refused.detail
        found = token_check(f"  {good}\n")  # pasted with spaces and a newline: stripped
        assert found.ok and "'us' is not on the leaderboard yet" in found.detail, found
    assert not doctor.check_token(Env(Settings(), gateway=Volume(), modal=False)).ok  # the server is gone


def test_a_working_local_setup_passes_modal_is_skipped(settings, dataset, store):
    env = Env(settings, dataset="synth", gateway=Volume(me.AuthError("Token missing")))
    assert env.modal is False  # nothing queued for Modal
    for check in (doctor.check_modal, doctor.check_deployed):
        c = check(env)
        assert c.ok and c.skipped and "skipped" in c.detail
    assert doctor.check_dataset(env).ok
    assert not doctor.check_dataset(Env(settings, dataset="hw3", gateway=Volume(), modal=False)).ok
    from kdq.spec import ExperimentSpec

    store.add([(None, ExperimentSpec(name="remote", backend={"kind": "modal"}))])
    assert Env(settings, gateway=Volume()).modal is True
    assert not doctor.check_modal(Env(settings, gateway=Volume(me.AuthError("Token missing")))).ok


def test_a_refused_loopback_server_points_at_the_stand_in_not_the_vpn(settings):
    down = doctor.check_course(Env(settings, gateway=Volume(), course_client=course("http://127.0.0.1:9")))
    assert not down.ok and "kdq fake-server" in down.fix and "VPN" not in down.fix


def test_the_doctor_creates_no_state(settings):
    doctor.run_checks(Env(settings, gateway=Volume(), modal=False), timeout_s=5)
    assert not settings.root.exists()


def test_a_passing_doctor_ends_the_pause_of_its_login_and_nudges_the_waiting(settings, store, monkeypatch):
    from kdq import pause
    from kdq.cli import doctor as doctor_cli
    from kdq.cli.main import app
    from kdq.doctor import Check
    from kdq.spec import ExperimentSpec

    [i] = store.add([(None, ExperimentSpec(name="m", backend={"kind": "modal"}))])
    pause.record(store, "modal", "Modal has no valid credentials")
    pause.record(store, "huggingface", "no Hugging Face token")
    checks = [Check("modal", True, "credentials work"), Check("huggingface", False, "no token")]
    monkeypatch.setattr(doctor, "run_checks", lambda env, timeout_s: checks)
    nudged = []
    monkeypatch.setattr(doctor_cli, "nudge", lambda ids: nudged.append(ids), raising=False)
    r = CliRunner().invoke(app, ["doctor", "--no-modal"])
    assert r.exit_code == 1 and "the queue goes on" in r.stdout
    assert list(pause.active(store)) == ["huggingface"] and nudged == [[i]]
