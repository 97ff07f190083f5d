"""Each cache made once on Modal, before the experiments that need it launch.

Every training needs its dataset's pictures decoded (at ``data.decode_size``) and, with a teacher, the
teacher's embeddings of every view of them: the teacher cache. On the first night every run would make
both itself, and the GPU would bill for all of it, up to 8 times. So the worker has each made once,
while every experiment that needs it waits in ``queued`` (no container, no launch slot):

- the pictures by one call of the app's CPU-only ``decode`` function (jobs/decode.py);
- a teacher cache by one input of the training class that stops after the teacher phase
  (``python -m kdq.train --teacher-cache-only``), in a run folder of its own, ``runs/cache-<key>-<time>``.

``made_once`` keeps one lease per cache in the app's ``modal.Dict`` (``put(..., skip_if_exists=True)``:
the first writer wins, so a spawn whose reply was lost never makes a second call), with the id of the
call that makes it beside it, and reads that call: done, the cache is ready (said in the Dict for
every later look); ended with an error, every experiment that looks within ``FAILED_HOLD_S`` fails
with it, and the next look after that makes it again (a dataset uploaded again, a ``kdq retry``);
cancelled or expired, the next look makes it again. A lease whose call id was never recorded (the
worker died spawning it) is taken over after ``STALE_S``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from kdq.errors import PermanentError

STALE_S = 30 * 60
FAILED_HOLD_S = 10 * 60  # a failure is told to every experiment waiting for it, then tried again
CALL = ":call"  # beside a lease: the call making it
HEAD_ONLY = ("head", "l2", "members")  # fitted on the cached embeddings: the cache does not depend on them


def decode_key(spec: dict[str, Any], mark: dict[str, Any]) -> str:
    """The lease's key for a spec's (as JSON) pictures decoded from the dataset of ``mark``."""
    data = spec.get("data") or {}
    limit = data.get("limit_per_class") or "all"
    return f"decoded:{mark.get('fingerprint')}-{data.get('decode_size')}-{limit}"


def cache_key(spec: dict[str, Any], mark: dict[str, Any]) -> str | None:
    """The lease's key for the teacher cache a spec (as JSON) needs on a dataset (its mark on the
    Volume); ``None`` without a teacher."""
    teacher = dict(spec.get("teacher") or {})
    if teacher.get("kind", "siglip") == "none":
        return None
    body = {k: v for k, v in teacher.items() if k not in HEAD_ONLY}
    data = spec.get("data") or {}
    body |= {"data": mark.get("fingerprint"), "decode": data.get("decode_size")}
    body |= {"limit": data.get("limit_per_class")}
    return "cache:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]


def build_run_id(key: str, now: float) -> str:
    """The run folder of an input that builds teacher cache ``key``: one per try, as a run's lease
    (``lease:<run id>``, jobs/container.py) lets no second call train a run folder."""
    return f"cache-{key.split(':', 1)[1]}-{int(now * 1000)}"


def made_once(
    gateway, key: str, spawn: Callable[[], str], what: str, now: float, fix: str = "then `kdq retry`"
) -> str | None:
    """``None`` once cache ``key`` is made; otherwise why the experiment waits for ``what`` (the call
    that makes it), after making sure one call makes it (``spawn()`` starts one and returns its id).
    Raises ``PermanentError`` with the reason and ``fix`` when that call failed."""
    state = _state(gateway, key, now)
    if state.get("state") == "ready":
        return None
    if state.get("state") == "failed":
        raise PermanentError(f"{what} failed on Modal: {state.get('error')}. Fix it, {fix}")
    if state.get("state") != "building":  # none yet, or no call makes it any more: start one
        gateway.live_pop(key)
        gateway.live_pop(key + CALL)
        if gateway.live_put(key, {"state": "building", "at": now}, skip_if_exists=True):
            try:
                gateway.live_put(key + CALL, spawn())
            except BaseException:
                gateway.live_pop(key)  # no call makes it: the next look tries again
                raise
    return f"waiting for {what}, made once for every experiment that needs it"


def _state(gateway, key: str, now: float) -> dict[str, Any]:
    """The cache's state: ``ready``, ``building``, ``failed`` (with its ``error``, for
    ``FAILED_HOLD_S``), or ``{}`` when nothing makes it (any more)."""
    state = gateway.live_get(key) or {}
    since = now - float(state.get("at", 0))
    if state.get("state") == "failed":
        return state if since < FAILED_HOLD_S else {}
    if state.get("state") != "building":
        return state
    call_id = gateway.live_get(key + CALL)
    if not call_id:
        return {} if since > STALE_S else state  # the worker died between its lease and its spawn
    call = gateway.call_state(call_id)
    result = call.result or {}
    if call.state == "running":
        return state
    if call.state == "finished" and result.get("outcome") == "done":
        state = {"state": "ready", "call_id": call_id}
    elif call.state in ("finished", "failed"):
        error = result.get("error") or call.error or f"the call ended without its cache ({result})"
        state = {"state": "failed", "error": error, "call_id": call_id, "at": now}
    else:
        return {}  # cancelled or expired: make it again
    gateway.live_put(key, state)  # every later look, of every experiment, reads it at once
    return state
