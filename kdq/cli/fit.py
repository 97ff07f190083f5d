"""Fitting the status table to a terminal: one line per experiment, whatever the width and the height.

A name too long for its column keeps the part that tells it from its siblings: a sweep point's
parameters (``hinton[temperature=2.0,alpha=0.1]`` → ``…[T=2,a=0.1]``), a search trial's number. Optional
columns go before the name is crushed. On a short screen finished rows hide first, oldest first, then
queued ones; the live submission's row always stays.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

E = TypeVar("E")
ABBREV = {"temperature": "T", "alpha": "a", "beta": "b", "lr": "lr", "weight_decay": "wd", "epochs": "ep"}
OPTIONAL = ("teacher F1", "backend", "updated", "expected", "server")  # dropped in this order
NAME_MIN = 24  # the name column gets at least this much (or its longest name) before a column is dropped
GAP = 2  # what each column costs beside its text: rich's column separator and its right padding


def split(name: str) -> tuple[str, str]:
    """``("hinton", "[temperature=2.0,alpha=0.1]")``, ``("tiny-search", "#4")``, ``(name, "")``."""
    m = re.fullmatch(r"(.*?)(\[[^\[\]]*\]|#\d+)", name)
    return (m.group(1), m.group(2)) if m else (name, "")


def compact(tail: str) -> str:
    """``[temperature=2.0,alpha=0.1]`` → ``[T=2,a=0.1]``: the last part of each key, short; numbers bare."""
    if not tail.startswith("["):
        return tail
    pairs = []
    for pair in tail[1:-1].split(","):
        key, _, value = pair.partition("=")
        key = key.strip().strip('"').rsplit(".", 1)[-1]
        try:
            value = f"{float(value):g}"
        except ValueError:
            pass
        pairs.append(f"{ABBREV.get(key, key)}={value}")
    return f"[{','.join(pairs)}]"


def short_name(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters, keeping the part that differs between siblings."""
    if len(name) <= width:
        return name
    base, tail = split(name)
    tail = compact(tail)
    if len(base) + len(tail) <= width:
        return base + tail
    room = width - len(tail) - 1
    if room >= 4:
        return base[:room] + "…" + tail
    return ("…" + tail)[: width - 1] + "…" if len(tail) + 1 > width else "…" + tail


def columns(cols: list[str], widths: dict[str, int], longest_name: int, width: int) -> tuple[list[str], int]:
    """The columns that fit ``width`` with the name column's width: optional ones dropped, in order, while
    the name would get less than ``NAME_MIN`` (or its longest name)."""
    cols = list(cols)
    want = min(longest_name, NAME_MIN)
    for drop in (None, *OPTIONAL):
        if drop in cols:
            cols.remove(drop)
        room = width - 1 - sum(widths[c] + GAP for c in cols if c != "name")  # 1: the name's padding
        if room >= want:
            break
    return cols, max(room, 8)


def keep_rows(exps: Sequence[E], max_rows: int, live_id: int | None) -> tuple[list[E], dict[str, int]]:
    """At most ``max_rows`` of ``exps``: finished rows hide first (oldest first), then queued ones (the last
    in line first), and only on a screen too short for everything in flight, the oldest of those; never
    the live submission's row. Returns (kept, how many hid: {"older": n, "queued": n, "in flight": n})."""
    from kdq.stages import LIVE, Stage

    extra = len(exps) - max(1, max_rows)
    tiers = {
        "older": sorted((e for e in exps if e.stage not in LIVE), key=lambda e: (e.updated_at or 0, e.id)),
        "queued": sorted((e for e in exps if e.stage is Stage.QUEUED), key=lambda e: (e.priority, -e.id)),
        "in flight": sorted(
            (e for e in exps if e.stage in LIVE and e.stage is not Stage.QUEUED), key=lambda e: e.id
        ),
    }
    gone: dict[str, list] = {}
    for tier, rows in tiers.items():
        gone[tier] = [e for e in rows if e.id != live_id][: max(0, extra)]
        extra -= len(gone[tier])
    ids = {e.id for rows in gone.values() for e in rows}
    return [e for e in exps if e.id not in ids], {tier: len(rows) for tier, rows in gone.items()}
