"""``kdq modal deploy`` / ``kdq modal secret`` through typer's CliRunner, with the real SDK offline (named
``test_modal_cli`` because tests/backends/test_modal.py has the plain name)."""

from __future__ import annotations

import logging

import modal.config
import pytest
import structlog
from typer.testing import CliRunner

from kdq.cli.main import app

pytestmark = pytest.mark.skipif(
    bool(modal.config.config.get("token_id")), reason="this machine has Modal credentials"
)


@pytest.fixture(autouse=True)
def restore_logging():
    """The CLI configures logging onto CliRunner's stderr, which closes after the call: put it back."""
    saved, handlers = structlog.get_config(), logging.getLogger().handlers[:]
    yield
    structlog.configure(**saved)
    logging.getLogger().handlers[:] = handlers


def test_deploy_without_credentials_says_what_to_run(settings):
    result = CliRunner().invoke(app, ["modal", "deploy"])
    assert result.exit_code == 1
    assert "modal token new" in result.output and "Traceback" not in result.output


def test_secret_without_a_hugging_face_token_says_what_to_run(settings, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    result = CliRunner().invoke(app, ["modal", "secret"])
    assert result.exit_code == 1 and "hf auth login" in result.output


class Secrets:
    def __init__(self, settings):
        self.puts = []

    def put_secret(self, name, values, overwrite=True):
        self.puts.append(name)

    def has_secret(self, name, keys):
        return True  # the secret looks current: only `kdq modal secret`'s own promise makes it write


def test_secret_always_writes_the_token(settings, monkeypatch):
    from kdq import hf
    from kdq.backends import modal_gateway

    made = []
    monkeypatch.setenv("HF_TOKEN", "hf_" + "cli" * 10)
    monkeypatch.setattr(hf, "check_access", lambda token, repo, endpoint=None: None)
    monkeypatch.setattr(modal_gateway, "ModalGateway", lambda s: made.append(Secrets(s)) or made[-1])
    for _ in range(2):
        result = CliRunner().invoke(app, ["modal", "secret"])
        assert result.exit_code == 0, result.output
    assert [gw.puts for gw in made] == [["kdq-hf"], ["kdq-hf"]]  # the second run writes too
