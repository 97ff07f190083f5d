"""What the modal SDK's exceptions mean for the worker: wait and try again, fail the experiment, or log in.

``classify`` maps one exception; ``guarded`` applies it around a block of gateway calls.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager

from kdq.errors import CredentialError, PermanentError, TransientError

LOGIN = "run `modal token new` (or `modal setup`) on this machine"


def classify(exc: BaseException, *, live_run: bool) -> Exception | None:
    """What a gateway exception means for the worker; ``None``: not a Modal problem (a bug: let it rise).

    ``live_run``: a call may be running on Modal. Then even lost credentials only make us wait, because
    failing the experiment would abandon a paid run; before a launch they fail it with what to run.
    """
    import aiohttp  # the SDK downloads Volume blocks with it
    from modal import exception as me

    if isinstance(exc, (TransientError, PermanentError)):
        return exc
    name = type(exc).__name__
    if isinstance(exc, me.AuthError):
        if live_run:
            return TransientError(f"Modal refused the credentials: {LOGIN}; the run goes on. (Modal: {exc})")
        return CredentialError("modal", f"Modal has no valid credentials: {LOGIN} (Modal: {exc})")
    if isinstance(exc, me.ResourceExhaustedError):
        return TransientError(
            f"Modal refused for a workspace limit (ResourceExhaustedError: {exc}): too many containers or "
            "GPUs at once, or the plan's spending limit; trying again"
        )
    transient = (
        me.ConnectionError,
        me.TimeoutError,
        me.ServiceError,
        me.InternalError,
        builtins.ConnectionError,
        builtins.TimeoutError,
        aiohttp.ClientError,  # a Volume block download that failed after the SDK's own retries
        OSError,
    )
    if isinstance(exc, transient) and not isinstance(exc, FileNotFoundError):
        return TransientError(f"Modal is unreachable or busy ({name}: {exc}); trying again")
    if isinstance(exc, me.PermissionDeniedError):
        return PermanentError(
            f"Modal denied access ({exc}): check the workspace of your token (`modal profile current`)"
        )
    if isinstance(exc, me.NotFoundError):
        return PermanentError(f"Modal could not find it ({exc}): run `kdq modal deploy`, then `kdq retry`")
    if isinstance(exc, me.Error):
        return PermanentError(f"Modal error {name}: {exc}")
    return None


@contextmanager
def guarded(*, live_run: bool) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = classify(exc, live_run=live_run)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc
