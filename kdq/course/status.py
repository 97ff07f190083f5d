"""The course server's lines in ``kdq status``: reachability, the submission in flight, the next window.

Reads only what the scheduler wrote in the database (no network call), so ``kdq status`` stays fast
and works off the VPN.
"""

from __future__ import annotations

import time

from rich.markup import escape

from kdq.course.ledger import Ledger
from kdq.course.models import known_word
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
    ledger = Ledger(store)
    trouble = _trouble(ledger.error(), now)
    server = ledger.server()
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
    parts = []
    r = ledger.last_numbered()
    if r:
        score = "" if r["score"] is None else f", score {r['score']:.3f}"
        rank = "" if r["rank"] is None else f", rank {r['rank']}"
        name = escape(r["name"])
        said = r.get("server_status")
        unknown = (
            f", the server says {escape(repr(said))}: not final yet"
            if r["state"] == "evaluating" and said is not None and not known_word(said)
            else ""
        )
        parts.append(
            f"last submission: attempt #{r['attempt']} = {r['exp_id']} {name} "
            f"({r['state']}{score}{rank}{unknown})"
        )
    intent = ledger.intent()
    if intent:  # an upload whose outcome is not known yet: nothing else goes until it is settled
        since = _ago(now - intent["at"])
        parts.append(f"upload in flight: experiment {intent['exp_id']} ({since}, outcome not known yet)")
    slot = ledger.next_window(interval_s)
    parts.append("next window: now" if slot <= now else f"next window: in {_ago(slot - now)}")
    lines.append("  ".join(parts))
    return lines


def _trouble(error: dict | None, now: float) -> list[str]:
    """The scheduler's last failure: while it lasts, and for an hour after it recovered."""
    if not error:
        return []
    text = escape(error["error"][:200])
    recovered = error.get("recovered_at")
    if recovered is None:
        ago = _ago(now - error["ts"])
        return [f"[red]submission scheduler crashed[/red] {ago} ago: {text} (retrying; see the worker log)"]
    if now - recovered < 3600:
        return [f"submission scheduler: [yellow]recovered[/yellow] {_ago(now - recovered)} ago from: {text}"]
    return []
