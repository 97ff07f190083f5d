"""Hugging Face without effort: find the token the user already has, check it can read the teacher,
and hand it to the Modal container through a Modal secret.

    find_token(settings)              HF_TOKEN / KDQ_HF_TOKEN, else the token `hf auth login` saved
    check_access(token, repo)         raises PermanentError (what to do) or TransientError (network)
    verdicts(settings, repos)         check_access for each repo, one call each: what enqueue asks
    sync_secret(settings, gateway, t) writes {"HF_TOKEN": t} into settings.modal_secret unless it is there
    ensure_access(settings, repo)     all three, before the first Modal launch that needs the teacher
    before_local_training(settings, r) a denial fails a local launch at once; no network is no verdict

The token is registered for redaction at once and never logged, stored or put in a message; the
store only keeps a short hash of it, to know whether the Modal secret is current.
"""

from __future__ import annotations

import hashlib
import threading
import time

from kdq.errors import CredentialError, PermanentError, TransientError
from kdq.log import add_secret, get_logger

log = get_logger("kdq.hf")
TEACHER = "google/medsiglip-448"
SECRET_META = "hf_secret"
LOGIN = "run `hf auth login` (or put HF_TOKEN=... in .env)"
RETRY = "the paused experiments go on by themselves"
HUB_TIMEOUT_S = 10.0  # huggingface_hub's own client waits forever on a network that drops packets


def is_stand_in(model: str) -> bool:
    """kdq's randomly initialised teachers (``tiny``, ``tiny-*``, ``random-*``): nothing on the Hub."""
    return model == "tiny" or model.startswith(("tiny-", "random-"))


def on_the_hub(teacher) -> bool:
    """A teacher (``spec.teacher``) fetched from the Hub: one there is, neither a stand-in nor a folder of
    this machine."""
    from pathlib import Path

    model = teacher.model
    return teacher.kind != "none" and not is_stand_in(model) and not Path(model).expanduser().is_dir()


def find_token(settings) -> str | None:
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    if token:
        add_secret(token)
    return token or None


def token_tag(token: str) -> str:
    """A short hash that tells tokens apart without revealing them."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def repo_page(repo: str) -> str:
    return f"https://huggingface.co/{repo}"


def check_access(token: str | None, repo: str = TEACHER, *, endpoint: str | None = None, then: str = RETRY):
    """Whether ``token`` (``None``: no token) can read ``repo``; every failure says what to do, ending with
    ``then``. ``endpoint``: a stand-in Hub (default: ``HF_ENDPOINT``, as huggingface_hub reads it)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    def denied(message: str) -> PermanentError:  # without a token, every denial means: log in first
        return CredentialError("huggingface", message if token else _no_token(repo, then))

    try:
        _bounded(lambda: HfApi(endpoint=endpoint).auth_check(repo, token=token or False))
    except GatedRepoError:
        raise denied(
            f"your Hugging Face account has not accepted the terms of {repo}: open {repo_page(repo)}, "
            f"accept them (approval is usually immediate), then {then}"
        ) from None
    except RepositoryNotFoundError:
        raise denied(
            f"the Hugging Face token cannot see {repo}: it may be invalid or expired. Create a read token "
            f"at https://huggingface.co/settings/tokens, {LOGIN}, accept the terms at {repo_page(repo)}, "
            f"then {then}"
        ) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise denied(
                f"Hugging Face rejected the token (401): {LOGIN} with a valid read token, then {then}"
            ) from None
        if status is not None and status < 500 and status != 429:
            raise PermanentError(
                f"Hugging Face answered {status} for {repo}: check the model id, then {then}"
            ) from None
        raise TransientError(f"Hugging Face is busy or down ({status}) checking access to {repo}") from None
    except Exception as exc:  # noqa: BLE001 — connection refused, DNS, timeouts: the network
        raise TransientError(
            f"could not reach huggingface.co to check access to {repo} ({type(exc).__name__})"
        ) from None


def _no_token(repo: str, then: str) -> str:
    return f"no Hugging Face token found: {LOGIN}, accept the terms at {repo_page(repo)}, then {then}"


def _bounded(call) -> None:
    """``call()`` in a daemon thread, at most ``HUB_TIMEOUT_S``: its exception, or TimeoutError."""
    outcome: list = []

    def target():
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 — handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(HUB_TIMEOUT_S)
    if not outcome:
        raise TimeoutError(f"no answer in {HUB_TIMEOUT_S:.0f} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]


def verdicts(settings, repos, *, then: str = RETRY) -> dict[str, Exception | None]:
    """For each repo (once each, whatever the repeats): ``None`` (this user can read it), a
    ``PermanentError`` (denied, or no token: what to do) or a ``TransientError`` (the Hub unreachable)."""
    token = find_token(settings)
    found: dict[str, Exception | None] = {}
    for repo in dict.fromkeys(repos):
        try:
            check_access(token, repo, then=then)
            found[repo] = None
        except (PermanentError, TransientError) as exc:
            found[repo] = exc
    return found


def sync_secret(settings, gateway, token: str, *, force: bool = False) -> bool:
    """Put the token into the Modal secret unless the database remembers writing this very token there
    and the secret is still on Modal with its ``HF_TOKEN`` (it may have been deleted, or the workspace
    changed). ``force``: write it anyway."""
    from kdq.store import Store

    tag = token_tag(token)
    with Store.open(settings) as store:
        seen = store.get_meta_json(SECRET_META) or {}
    current = seen.get("tag") == tag and seen.get("name") == settings.modal_secret
    if not force and current and gateway.has_secret(settings.modal_secret, ["HF_TOKEN"]):
        return False
    gateway.put_secret(settings.modal_secret, {"HF_TOKEN": token})
    with Store.open(settings) as store:
        store.set_meta(SECRET_META, {"tag": tag, "name": settings.modal_secret, "at": time.time()})
    log.info("stored the Hugging Face token in the Modal secret", secret=settings.modal_secret)
    return True


def ensure_access(
    settings, repo: str = TEACHER, *, gateway=None, endpoint: str | None = None, force: bool = False
) -> str:
    """Find the token, check it reads ``repo``, sync the Modal secret (when a gateway is given)."""
    token = find_token(settings)
    if not token:
        raise CredentialError("huggingface", _no_token(repo, RETRY))
    check_access(token, repo, endpoint=endpoint)
    if gateway is not None:
        sync_secret(settings, gateway, token, force=force)
    return token


def before_local_training(settings, repo: str) -> None:
    """A local launch whose teacher is on the Hub: a denial, or no token for a gated teacher, is a
    ``PermanentError`` now, before a training process starts. The Hub unreachable is not: the weights
    may be in this machine's cache, and the training says so itself if they are not."""
    try:
        check_access(find_token(settings), repo)
    except TransientError as exc:
        log.warning("could not check Hugging Face access; launching anyway", teacher=repo, error=str(exc))
