"""The course server's lines in ``kdq status``: reachability, the submission in flight, the next window.

Reads only what the scheduler wrote in the database (no network call), so ``kdq status`` stays fast
and works off the VPN.
"""

from __future__ import annotations

import time

from rich.markup import escape

from kdq.course.policy import next_slot
from kdq.course.scheduler import BLOCKED_UNTIL, ERROR, LAST_SUBMIT, SERVER, STATUS
from kdq.store import Store


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return (
        f"{seconds:.0f}s"
        if seconds < 90
        else f"{seconds / 60:.0f}m"
        if seconds < 5400
        else f"{seconds / 3600:.1f}h"
    )


def header_lines(store: Store, now: float | None = None, interval_s: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    if interval_s is None:
        from kdq.settings import get_settings

        interval_s = get_settings().submit_interval_s
    crashed = store.get_meta_json(ERROR)
    trouble = (
        [
            f"[red]submission scheduler crashed[/red] {_ago(now - crashed['ts'])} ago: "
            f"{escape(crashed['error'][:200])} (retrying; see the worker log)"
        ]
        if crashed
        else []
    )
    server = store.get_meta_json(SERVER)
    if not server:
        return ["course server: not contacted yet", *trouble]
    when = _ago(now - server["ts"])
    if server["reachable"]:
        line = f"course server: [green]reachable[/green] ({when} ago)"
        if server.get("detail") and server["detail"] != "ok":
            line += f", last answer: {escape(server['detail'][:120])}"
    else:
        line = (
            f"course server: [red]unreachable[/red] ({when} ago, {server.get('failures', 1)} tries): "
            f"{escape(server.get('detail', '')[:160])}"
        )
    lines = [line, *trouble]
    rows = list(
        store.db.query(
            "select s.exp_id, s.attempt, s.state, s.score, s.rank, e.name from submissions s "
            "join experiments e on e.id = s.exp_id where s.attempt is not null order by s.attempt desc limit 1"
        )
    )
    parts = []
    if rows:
        r = rows[0]
        score = "" if r["score"] is None else f", score {r['score']:.3f}"
        rank = "" if r["rank"] is None else f", rank {r['rank']}"
        parts.append(
            f"last submission: attempt #{r['attempt']} = {r['exp_id']} {escape(r['name'])} ({r['state']}{score}{rank})"
        )
    cache = store.get_meta_json(STATUS) or {}
    server_last = max(
        (a["submitted_at"] for a in cache.get("attempts", []) if a.get("submitted_at")), default=None
    )
    ours = store.get_meta_json(LAST_SUBMIT)
    last = max([t for t in (ours, _ts(server_last)) if t is not None], default=None)
    slot = next_slot(last, interval_s, store.get_meta_json(BLOCKED_UNTIL))
    parts.append("next window: now" if slot <= now else f"next window: in {_ago(slot - now)}")
    lines.append("  ".join(parts))
    return lines


def _ts(value) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None
