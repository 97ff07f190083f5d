"""Each teacher cache is built once on Modal, by the first run that needs it.

On the first night every run with a teacher misses the cache: each would decode the pictures,
download the teacher and run the whole teacher pass, then commit gigabytes of identical files. So the
first launch that needs a (dataset, teacher, views) cache takes a lease on it in the app's
``modal.Dict`` (``put(..., skip_if_exists=True)``: first writer wins) and builds it as part of its
training; the container marks it ready once its training has passed the teacher phase (or gives the
lease back when it failed before that). Every other experiment that needs the same cache waits in
``queued`` with "waiting for the teacher cache" until it is ready (``ModalBackend.waits``), holding
no launch slot; a launch that meets the lease anyway (a race) waits in ``launching``. A lease whose run never
started (a worker that died) is taken over after ``STALE_S``; a cancelled run gives its lease back.

Before that, every run needs its dataset's pictures decoded (at ``data.decode_size``), CPU work a GPU
container would bill for. ``decoded`` makes sure one call of the app's CPU-only ``decode`` function
(jobs/decode.py) does it for every run of that (dataset, size), under a lease of its own, and keeps the
runs in ``queued`` until the Dict says the tensor is on the Volume; a decode that failed fails the run
that looks, with its reason (the next run to look starts a new decode).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from kdq.errors import PermanentError, TransientError

STALE_S = 45 * 60
DECODE_STALE_S = 30 * 60  # a decode lease whose call id was never recorded (the worker died spawning it)
CALL = ":call"  # beside a decode lease: the call doing it
HEAD_ONLY = ("head", "l2", "members")  # fitted on the cached embeddings: the cache does not depend on them


def cache_key(spec: dict[str, Any], mark: dict[str, Any]) -> str | None:
    """The lease's key for the teacher cache a spec (as JSON) needs on a dataset (its mark on the
    Volume); ``None`` without a teacher."""
    teacher = dict(spec.get("teacher") or {})
    if teacher.get("kind", "siglip") == "none":
        return None
    body = {k: v for k, v in teacher.items() if k not in HEAD_ONLY}
    body |= {"data": mark.get("fingerprint"), "decode": (spec.get("data") or {}).get("decode_size")}
    return "cache:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]


def wait_or_build(gateway, key: str, run_id: str, now: float) -> None:
    """Return when run ``run_id`` may start: its cache is ready, or this run builds it. Raises
    ``TransientError`` while another run builds it (the worker asks again later)."""
    state = gateway.live_get(key)
    if state and state.get("state") == "building" and now - float(state.get("at", 0)) > STALE_S:
        gateway.live_pop(key)
        state = None
    if state is None:
        if gateway.live_put(key, {"state": "building", "run": run_id, "at": now}, skip_if_exists=True):
            gateway.live_put(f"builds:{run_id}", key)  # so that a cancel gives the lease back
            return
        state = gateway.live_get(key) or {}
    if state.get("state") == "ready" or state.get("run") == run_id:
        return
    raise TransientError(waiting(state.get("run")))


def waiting(builder: str | None) -> str:
    return (
        f"waiting for the teacher cache, which run {builder} is building (each cache is built once, for "
        "every experiment that needs it)"
    )


def waits(gateway, run_id: str, spec: dict[str, Any], mark: dict[str, Any]) -> str | None:
    """Why run ``run_id`` of ``spec`` (as JSON) must wait before its launch: another run builds the
    teacher cache it needs on the dataset of ``mark``. ``None`` when the cache is ready, free (or its
    lease stale) or this run's, or the spec needs none: then it may launch."""
    key = cache_key(spec, mark)
    state = (gateway.live_get(key) if key else None) or {}
    if state.get("state") != "building" or state.get("run") == run_id:
        return None
    return None if time.time() - float(state.get("at", 0)) > STALE_S else waiting(state.get("run"))


# ---------------------------------------------------------------- the decoded pictures


def decode_key(spec: dict[str, Any], mark: dict[str, Any]) -> str:
    """The lease's key for a spec's (as JSON) pictures decoded from the dataset of ``mark``."""
    data = spec.get("data") or {}
    limit = data.get("limit_per_class") or "all"
    return f"decoded:{mark.get('fingerprint')}-{data.get('decode_size')}-{limit}"


def decoded(gateway, spawn, spec: dict[str, Any], mark: dict[str, Any], now: float) -> str | None:
    """``None`` once the pictures ``spec`` (as JSON) trains on are decoded on the Volume; otherwise why
    it waits, after making sure one decode call works on them (``spawn(key)`` starts one and returns
    its id). Raises ``PermanentError`` with the reason when the decode failed."""
    name, key = (spec.get("data") or {}).get("dataset"), decode_key(spec, mark)
    state = _decode_state(gateway, key, now)
    if state.get("state") == "ready":
        return None
    if state.get("state") != "building":  # failed, ended without a word, stale or never started
        gateway.live_pop(key)  # the next look starts again
        gateway.live_pop(key + CALL)
        if state.get("state") == "failed":
            raise PermanentError(
                f"the pictures of dataset {name!r} could not be decoded on Modal: {state.get('error')}. "
                f"Fix the dataset, upload it again (`kdq data upload PATH --name {name}`), then `kdq retry`"
            )
        if gateway.live_put(key, {"state": "building", "at": now}, skip_if_exists=True):
            try:
                gateway.live_put(key + CALL, spawn(key))
            except BaseException:
                gateway.live_pop(key)  # no call works on it: the next look tries again
                raise
    return (
        f"waiting for the pictures of dataset {name!r} to be decoded (once for every run, by the app's "
        "CPU-only decode function: no GPU bills meanwhile)"
    )


def _decode_state(gateway, key: str, now: float) -> dict[str, Any]:
    """The decode's state in the Dict (``ready``, ``failed`` with its ``error``, ``building``), or
    ``{}`` when no call works on it any more: it ended without a word (cancelled, expired) or its id
    was never recorded (the worker died spawning it) this long."""
    state = gateway.live_get(key) or {}
    if state.get("state") != "building":
        return state
    call_id = gateway.live_get(key + CALL)
    if not call_id:
        return {} if now - float(state.get("at", 0)) > DECODE_STALE_S else state
    call = gateway.call_state(call_id)
    if call.state == "running":
        return state
    state = gateway.live_get(key) or {}  # it ended: it said ready or failed before, or it died
    if state.get("state") != "building":
        return state
    return {"state": "failed", "error": call.error} if call.state == "failed" else {}


def release(gateway, run_id: str) -> None:
    """A cancelled run gives back the lease of a cache it was building, so the next launch builds it."""
    key = gateway.live_pop(f"builds:{run_id}")
    state = gateway.live_get(key) if key else None
    if state and state.get("state") == "building" and state.get("run") == run_id:
        gateway.live_pop(key)


def publish(live, key: str | None, run_id: str, progress: dict | None, outcome: str | None) -> bool:
    """In the container: mark the cache ready once this run's training is past the teacher phase (the
    cache is saved before the first epoch), or give the lease back when it ended before that. Returns
    whether there is nothing more to do."""
    if key is None:
        return True
    past_teacher = (progress or {}).get("epoch", 0) >= 1 or outcome == "done"
    if past_teacher:
        live.put(key, {"state": "ready", "run": run_id})
        return True
    state = live.get(key) or {}
    if outcome is not None and state.get("state") == "building" and state.get("run") == run_id:
        live.pop(key, None)  # failed before the cache was saved: the next launch builds it
    return outcome is not None
