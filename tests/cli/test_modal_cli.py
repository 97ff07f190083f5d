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
