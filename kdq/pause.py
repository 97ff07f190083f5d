"""The queue's pause for a login this machine lacks, as the VPN pauses submissions: the experiments that
need it wait where they are (none fails), ``kdq status`` and the worker log say so in one line, and the
first launch that works again ends it. Kept in the store's meta table: ``{key: {"message", "since"}}``.
"""

from __future__ import annotations

import time

META = "paused"
LOGINS = {"modal": "Modal", "huggingface": "Hugging Face"}


def active(store) -> dict[str, dict]:
    return store.get_meta_json(META) or {}


def record(store, key: str, message: str) -> bool:
    """Pause for ``key``; True when this starts the pause (say it then, not at every look)."""
    paused = active(store)
    if key in paused:
        return False
    store.set_meta(META, {**paused, key: {"message": message, "since": time.time()}})
    return True


def clear(store, keys) -> list[str]:
    """End the pauses for ``keys`` (a launch that needed them worked); the ones ended."""
    paused = active(store)
    ended = [k for k in keys if k in paused]
    if ended:
        store.set_meta(META, {k: v for k, v in paused.items() if k not in ended})
    return ended


def probe_due(store, keys, every_s: float, now: float | None = None) -> bool:
    """Whether an experiment that needs the paused logins ``keys`` may try its launch now: one try per
    ``every_s`` for each login (the try that ends the pause, as `kdq doctor` does), the others wait
    quietly in line. True when none of ``keys`` is paused."""
    paused = active(store)
    held = [k for k in keys if k in paused]
    now = time.time() if now is None else now
    if not held:
        return True
    if any(now - paused[k].get("tried", paused[k]["since"]) < every_s for k in held):
        return False
    store.set_meta(META, {**paused, **{k: {**paused[k], "tried": now} for k in held}})
    return True


def needs(exp) -> set[str]:
    """The logins an experiment's launch needs."""
    from kdq import hf

    spec = exp.spec
    keys = {"modal"} if spec.backend.kind == "modal" else set()
    return keys | {"huggingface"} if hf.on_the_hub(spec.teacher) else keys


def lines(store, now: float | None = None) -> list[str]:
    """``kdq status``: one line per pause (plain text)."""
    now = time.time() if now is None else now
    return [
        f"paused ({LOGINS.get(k, k)}, {(now - v['since']) / 60:.0f}m): {v['message']}; the experiments that "
        "need it wait, and go on once `kdq doctor` passes"
        for k, v in active(store).items()
    ]
