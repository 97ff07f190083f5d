"""Hugging Face access: finding the token, checking it against a local stand-in of the Hub's
auth-check endpoint (the real huggingface_hub client parses its answers), syncing the Modal secret."""

from __future__ import annotations

import pytest
from hf_hub import BUSY, GATED, GOOD, INVALID, serve

from kdq import hf
from kdq.errors import PermanentError, TransientError
from kdq.log import redact


@pytest.fixture(scope="module")
def hub():
    with serve() as h:
        yield h.url


def test_a_token_that_can_read_passes(hub):
    hf.check_access(GOOD, hf.TEACHER, endpoint=hub)


def test_terms_not_accepted_names_the_page_to_visit(hub):
    with pytest.raises(PermanentError) as info:
        hf.check_access(GATED, hf.TEACHER, endpoint=hub)
    assert "https://huggingface.co/google/medsiglip-448" in str(info.value) and "terms" in str(info.value)
    assert GATED not in str(info.value)


def test_an_invalid_token_says_how_to_log_in(hub):
    with pytest.raises(PermanentError, match="hf auth login") as info:
        hf.check_access(INVALID, hf.TEACHER, endpoint=hub)
    assert INVALID not in str(info.value)


def test_a_busy_hub_or_no_network_is_transient(hub):
    with pytest.raises(TransientError):
        hf.check_access(BUSY, hf.TEACHER, endpoint=hub)
    with pytest.raises(TransientError, match="could not reach"):
        hf.check_access(GOOD, hf.TEACHER, endpoint="http://127.0.0.1:9")  # nothing listens on port 9


def test_the_token_comes_from_hf_token_or_the_saved_login(settings, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: GOOD)
    assert hf.find_token(settings) == GOOD  # what `hf auth login` saved
    assert redact(f"token={GOOD}") == "token=***"  # registered for redaction at once
    monkeypatch.setenv("HF_TOKEN", GATED)
    from kdq.settings import Settings

    assert hf.find_token(Settings()) == GATED  # HF_TOKEN wins
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(PermanentError, match="no Hugging Face token found.*hf auth login"):
        hf.ensure_access(Settings())


class SecretStore:
    """The gateway's secret calls, over a dict that stands for the secrets on Modal."""

    def __init__(self):
        self.puts: list[tuple[str, dict]] = []
        self.on_modal: dict[str, dict] = {}

    def put_secret(self, name, values):
        self.puts.append((name, values))
        self.on_modal[name] = {**self.on_modal.get(name, {}), **values}

    def has_secret(self, name, keys):
        return name in self.on_modal and all(k in self.on_modal[name] for k in keys)


def test_the_modal_secret_is_written_once_per_token_and_the_token_is_not_stored(settings):
    gw = SecretStore()
    assert hf.sync_secret(settings, gw, GOOD) is True
    assert hf.sync_secret(settings, gw, GOOD) is False  # unchanged: no call to Modal
    assert hf.sync_secret(settings, gw, GATED) is True  # a new token replaces it
    assert gw.puts == [("kdq-hf", {"HF_TOKEN": GOOD}), ("kdq-hf", {"HF_TOKEN": GATED})]
    db = settings.db_path.read_bytes() + (
        settings.db_path.with_suffix(".db-wal").read_bytes()
        if settings.db_path.with_suffix(".db-wal").exists()
        else b""
    )
    assert GOOD.encode() not in db and GATED.encode() not in db


def test_ensure_access_checks_before_it_syncs(home, hub, monkeypatch):
    from kdq.settings import Settings

    gw = SecretStore()
    monkeypatch.setenv("HF_TOKEN", GATED)
    with pytest.raises(PermanentError, match="terms"):
        hf.ensure_access(Settings(), gateway=gw, endpoint=hub)
    assert gw.puts == []  # a token that cannot read the teacher is not shipped
    monkeypatch.setenv("HF_TOKEN", GOOD)
    assert hf.ensure_access(Settings(), gateway=gw, endpoint=hub) == GOOD
    assert gw.puts == [("kdq-hf", {"HF_TOKEN": GOOD})]


def test_a_secret_deleted_on_modal_or_another_workspace_is_written_again(settings):
    gw = SecretStore()
    assert hf.sync_secret(settings, gw, GOOD) is True
    del gw.on_modal["kdq-hf"]  # `modal secret delete`, or the token now points at another workspace
    assert hf.sync_secret(settings, gw, GOOD) is True
    gw.on_modal["kdq-hf"] = {"KDQ_SECRET": "kdq-hf"}  # there, but without the token
    assert hf.sync_secret(settings, gw, GOOD) is True
    assert hf.sync_secret(settings, gw, GOOD) is False  # there with HF_TOKEN, this token: nothing to do
    assert hf.sync_secret(settings, gw, GOOD, force=True) is True
    assert len(gw.puts) == 4


def test_a_hub_that_never_answers_is_unreachable_after_the_bound_not_a_hang(monkeypatch):
    """huggingface_hub's own client has no timeout: a network that drops packets would hang enqueue."""
    import socket

    monkeypatch.setattr(hf, "HUB_TIMEOUT_S", 0.5)
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(TransientError, match="could not reach huggingface.co.*TimeoutError"):
            hf.check_access(GOOD, hf.TEACHER, endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}")


def test_verdicts_ask_once_per_repo_and_keep_each_answer(monkeypatch):
    with serve() as hub:
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", GATED)
        from kdq.settings import Settings

        found = hf.verdicts(Settings(), ["google/medsiglip-448", "org/other", "google/medsiglip-448"])
    assert list(found) == ["google/medsiglip-448", "org/other"] and len(hub.calls) == 2
    assert all(isinstance(v, PermanentError) and "terms" in str(v) for v in found.values())
