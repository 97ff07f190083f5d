"""The ``kdq`` command: a thin typer layer over the library. Each group of commands lives in its own module.

Every command module imports only typer at the top (the rest inside the command), so ``kdq --help``
and a TAB completion stay quick. The command modules leave out ``from __future__ import annotations``:
typer reads every command's signature on each call, and string annotations it would evaluate twice
over (11 ms of a 230 ms ``kdq status``).
"""

from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from kdq.cli import data, demo, doctor, fake_server, modal, night, queue, report, search, server, status

if TYPE_CHECKING:
    import click


class Grouped(TyperGroup):
    """Plain click help (no rich: faster, and flags without type tags), commands listed by group; a
    database that cannot be used right now (read-only, busy, deleted) is one ``error:`` line."""

    def invoke(self, ctx: "click.Context"):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            import sqlite3

            from kdq.cli.common import fail, settings
            from kdq.errors import database_trouble
            from kdq.store import StoreError

            if not isinstance(exc, StoreError | sqlite3.OperationalError):
                raise
            line = str(exc) if isinstance(exc, StoreError) else database_trouble(exc, settings().db_path)
            if line is None:
                raise
            raise fail(line) from None

    def format_commands(self, ctx: "click.Context", formatter: "click.HelpFormatter") -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                panel = getattr(cmd, "rich_help_panel", None) or "Commands"
                groups.setdefault(panel, []).append((name, cmd.get_short_help_str(formatter.width - 20)))
        for panel, rows in groups.items():
            with formatter.section(panel):
                formatter.write_dl(rows)


app = typer.Typer(
    name="kdq",
    cls=Grouped,
    rich_markup_mode=None,
    help="Knowledge-distillation experiment queue: enqueue specs, train, verify, submit, record scores.",
    epilog="Exit codes: 0 ok, 1 error, 2 usage or settings, 3 rate limited, 4 course server unreachable. "
    "Every command takes -h.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"kdq {version('kdq')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Knowledge-distillation experiment queue: enqueue specs, train, verify, submit, record scores."""


SET_UP, QUEUE, RESULTS, COURSE = "Set up", "Queue", "Results", "Course server"
for _panel, _commands in (
    (SET_UP, [("demo", demo.demo), ("doctor", doctor.doctor)]),
    (
        QUEUE,
        [
            ("enqueue", queue.enqueue),
            ("status", status.status),
            ("cancel", queue.cancel),
            ("retry", queue.retry),
            ("submit", queue.submit),
            ("worker", queue.worker),
        ],
    ),
    (
        RESULTS,
        [
            ("show", status.show),
            ("results", status.results),
            ("report", report.report),
            ("compare", report.compare),
            ("logs", night.logs),
            ("export", night.export),
        ],
    ),
    (COURSE, [("leaderboard", server.leaderboard), ("fake-server", fake_server.fake_server)]),
):
    for _name, _fn in _commands:
        app.command(_name, rich_help_panel=_panel)(_fn)

app.add_typer(data.app, name="data", rich_help_panel=SET_UP)
app.add_typer(modal.app, name="modal", rich_help_panel=SET_UP)
app.add_typer(server.app, name="server", rich_help_panel=COURSE)
app.add_typer(search.app, name="search", rich_help_panel=QUEUE)
app.add_typer(night.notify_app, name="notify", rich_help_panel=SET_UP)
