"""What every command shares: the exit codes, one-line errors, the consoles and opening the store.

Heavy libraries are imported inside the functions that need them, so ``kdq --help`` and a TAB
completion only pay for typer.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from kdq.experiment import Experiment
    from kdq.store import Store

# The exit codes, the same for every command (docs/cli-reference.md lists them).
OK = 0
ERROR = 1
USAGE = 2
RATE_LIMITED = 3
UNREACHABLE = 4


@cache
def console() -> Console:
    from rich.console import Console

    return Console()


@cache
def err() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def say(message: str) -> None:
    """A plain line on stdout: no markup, no highlighting, never cut."""
    console().print(message, markup=False, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err().print(message, markup=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = ERROR) -> typer.Exit:
    """Print ``error: message`` (secrets redacted) on stderr; raise the returned Exit."""
    from rich.text import Text

    from kdq.log import redact

    err().print(Text("error: ", style="red") + Text(redact(message)), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings():
    """The settings, or a one-line error naming the setting and the fix (no traceback)."""
    from kdq.settings import SettingsError, get_settings

    try:
        return get_settings()
    except SettingsError as exc:
        raise fail(str(exc), USAGE) from None


def open_store(create: bool = True, s=None, force: bool = False, look: bool = False) -> Store:
    """The store of this home; with ``create=False`` none is made where none is. ``look``: the command only
    reads (status, show, results), logs nothing, and so does not even set logging up."""
    from kdq import log as kdqlog
    from kdq.store import Store, StoreError

    s = s or settings()
    if not look:  # commands say what they did themselves: only warnings are logged
        kdqlog.configure(bool(s.log_json), level=logging.WARNING, settings=s)
    try:
        if (look or not create) and not s.db_path.exists():
            Store.refuse_a_lost_database(s)  # the runs are there, kdq.db is not: say that, not "start one"
            raise fail(f"no kdq state here: {s.where()}; `kdq enqueue SPEC` or `kdq demo` starts one")
        return Store.open(s, force=force)
    except StoreError as exc:  # a damaged database, or runs left without one
        raise fail(str(exc)) from None


def get_or_exit(store: Store, exp_id: int) -> Experiment:
    from kdq.store import NotFound

    try:
        return store.get(exp_id)
    except NotFound:
        raise fail(f"no experiment {exp_id}; `kdq status --all` lists them") from None


def nudge(ids: list[int], scheduler: bool = False) -> None:
    from kdq.worker import nudge as nudge_queue

    nudge_queue(ids, settings(), scheduler=scheduler)
