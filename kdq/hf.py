"""Hugging Face without effort: find the token the user already has, check it can read the teacher,
and hand it to the Modal container through a Modal secret.

    find_token(settings)              HF_TOKEN / KDQ_HF_TOKEN, else the token `hf auth login` saved
    check_access(token, repo)         raises PermanentError (what to do) or TransientError (network)
    sync_secret(settings, gateway, t) writes {"HF_TOKEN": t} into settings.modal_secret unless it is there
    ensure_access(settings, repo)     all three, before the first Modal launch that needs the teacher

The token is registered for redaction at once and never logged, stored or put in a message; the
store only keeps a short hash of it, to know whether the Modal secret is current.
"""

from __future__ import annotations

import hashlib
import time

from kdq.errors import PermanentError, TransientError
from kdq.log import add_secret, get_logger

log = get_logger("kdq.hf")
TEACHER = "google/medsiglip-448"
SECRET_META = "hf_secret"
LOGIN = "run `hf auth login` (or put HF_TOKEN=... in .env)"


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


def check_access(token: str, repo: str = TEACHER, *, endpoint: str | None = None) -> None:
    """Whether ``token`` can read ``repo``; every failure says what to do. ``endpoint``: a stand-in Hub."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi(endpoint=endpoint).auth_check(repo, token=token)
    except GatedRepoError:
        raise PermanentError(
            f"your Hugging Face account has not accepted the terms of {repo}: open {repo_page(repo)}, "
            "accept them (approval is usually immediate), then `kdq retry`"
        ) from None
    except RepositoryNotFoundError:
        raise PermanentError(
            f"the Hugging Face token cannot see {repo}: it may be invalid or expired. Create a read token "
            f"at https://huggingface.co/settings/tokens, {LOGIN}, accept the terms at {repo_page(repo)}, "
            "then `kdq retry`"
        ) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise PermanentError(
                f"Hugging Face rejected the token (401): {LOGIN} with a valid read token"
            ) from None
        if status is not None and status < 500 and status != 429:
            raise PermanentError(f"Hugging Face answered {status} for {repo}: check the model id") from None
        raise TransientError(f"Hugging Face is busy or down ({status}); trying again") from None
    except Exception as exc:  # noqa: BLE001 — connection refused, DNS, timeouts: the network
        raise TransientError(
            f"could not reach huggingface.co to check access to {repo} ({type(exc).__name__})"
        ) from None


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
        raise PermanentError(
            f"no Hugging Face token found: {LOGIN}, accept the terms at {repo_page(repo)}, then `kdq retry`"
        )
    check_access(token, repo, endpoint=endpoint)
    if gateway is not None:
        sync_secret(settings, gateway, token, force=force)
    return token
