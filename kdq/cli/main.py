"""The ``kdq`` command: a thin typer layer over the library. Each sub-app lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="kdq",
    help="Knowledge-distillation experiment queue: enqueue specs, train, verify, submit, record scores.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Sub-apps and commands are registered below, one line each.
from kdq.cli import data as _data; app.add_typer(_data.app, name="data")
from kdq.cli import report as _report; app.command("report")(_report.report); app.command("compare")(_report.compare)  # noqa: E402, E702
from kdq.cli import queue as _queue  # noqa: E402

for _name in ("enqueue", "status", "show", "cancel", "retry", "results", "submit", "worker"):
    app.command(_name)(getattr(_queue, _name))
from kdq.cli import server as _server; app.add_typer(_server.app, name="server")  # noqa: E402
app.command("fake-server")(_server.fake_server)
from kdq.cli import modal as _modal; app.add_typer(_modal.app, name="modal")  # noqa: E402
from kdq.cli import doctor as _doctor; app.command("doctor")(_doctor.doctor)  # noqa: E402
from kdq.cli import demo as _demo; app.command("demo")(_demo.demo)  # noqa: E402
