"""Questions before an action that may lower the team's score: asked on a terminal, ``--yes`` to skip,
and with no terminal and no ``--yes`` refused with the flag to use (never a silent yes)."""

from __future__ import annotations

import sys

from kdq.cli.common import ERROR, USAGE, fail


def interactive() -> bool:
    return sys.stdin.isatty()


def confirm(reason: str, yes: bool, action: str) -> None:
    """Go on if ``yes`` or the user says yes to ``action`` ("submit") after ``reason``; else one line."""
    import typer

    if yes:
        return
    if not interactive():
        raise fail(f"{reason}; pass --yes to {action} anyway (no terminal to ask on)", USAGE)
    if not typer.confirm(f"{reason}. {action.capitalize()} anyway?", default=False):
        raise fail(f"nothing was done: {action} not confirmed", ERROR)


def below_live(store, settings, exps) -> str | None:
    """Why submitting ``exps`` would probably lower the live score (each one's expected score against the
    live submission's server score, or its expected score while ungraded), or None."""
    from kdq.course.ledger import Ledger
    from kdq.course.scoring import expected_all

    live = Ledger(store).last_numbered()
    if live is None or live["state"] in ("failed", "lost"):
        return None
    expected = expected_all(store, settings, [*exps, store.get(live["exp_id"])])
    if live["score"] is not None:
        bar, what = live["score"], f"server score {live['score']:.3f}"
    elif live["exp_id"] in expected:
        bar = expected[live["exp_id"]].score
        what = f"expected {expected[live['exp_id']].text()}, not graded yet"
    else:
        return None
    worse = [f"{e.id} expects {x.text()}" for e in exps if (x := expected.get(e.id)) and x.score < bar]
    if not worse:
        return None
    return (
        f"{'; '.join(worse)}, below the live submission (attempt #{live['attempt']} = {live['exp_id']} "
        f"{live['name']}, {what}): it replaces the live one and will probably lower your score"
    )
