"""The ``kdq`` command: a thin typer layer over the library. Each group of commands lives in its own module."""

from __future__ import annotations

import typer

from kdq.cli import data, demo, doctor, modal, queue, report, server

app = typer.Typer(
    name="kdq",
    help="Knowledge-distillation experiment queue: enqueue specs, train, verify, submit, record scores.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# The journey of an experiment, in order.
app.command("demo")(demo.demo)
for _name in ("enqueue", "status", "show", "results", "cancel", "retry", "submit", "worker"):
    app.command(_name)(getattr(queue, _name))
app.command("leaderboard")(server.leaderboard)
app.command("report")(report.report)
app.command("compare")(report.compare)
app.command("doctor")(doctor.doctor)

# Groups and tools.
app.add_typer(data.app, name="data")
app.add_typer(server.app, name="server")
app.add_typer(modal.app, name="modal")
app.command("fake-server")(server.fake_server)
