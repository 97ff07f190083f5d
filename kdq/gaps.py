"""The night's gaps: when the queue waited for the outside world, kept for the night page.

    note(store, {"vpn": "course server unreachable: ..."}, now)   # the worker, once a minute
    add(store, "asleep", since, now, "the worker was asleep 2h10m")   # a gap found after the fact
    read(store)                                                   # [{kind, from, to, detail}], oldest first

Kinds: ``vpn`` (the course server unreachable), ``credentials`` (a login missing: kdq/pause.py),
``scheduler`` (the submission scheduler failing), ``asleep`` (a gap in the worker's own heartbeat).
An open gap has ``to = None``. Only the last ``KEEP`` are kept (the ``night.gaps`` meta key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdq.store import Store

META = "night.gaps"
KEEP = 200
KINDS = ("vpn", "credentials", "scheduler", "asleep")


def read(store: Store) -> list[dict]:
    return store.get_meta_json(META) or []


def note(store: Store, now_open: dict[str, str], now: float) -> None:
    """Open a gap for each kind in ``now_open`` (kind -> detail) not open yet; close the others."""
    gaps = read(store)
    open_kinds = {g["kind"] for g in gaps if g["to"] is None}
    changed = False
    for g in gaps:
        if g["to"] is None and g["kind"] not in now_open:
            g["to"], changed = now, True
    for kind, detail in now_open.items():
        if kind not in open_kinds:
            gaps.append({"kind": kind, "from": now, "to": None, "detail": detail[:200]})
            changed = True
    if changed:
        store.set_meta(META, gaps[-KEEP:])


def add(store: Store, kind: str, start: float, end: float, detail: str) -> None:
    store.set_meta(META, [*read(store), {"kind": kind, "from": start, "to": end, "detail": detail}][-KEEP:])
