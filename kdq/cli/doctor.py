"""``kdq doctor``: every precondition of an overnight run, one line each, with what to do."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from kdq.settings import get_settings

console = Console()


def doctor(
    dataset: Annotated[
        str, typer.Option("--dataset", help="Dataset name the specs use (data.dataset).")
    ] = "hw3",
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds each check may take.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of lines.")] = False,
) -> None:
    """Check Modal credentials, Hugging Face access, the course server, the dataset, the app, the worker, disk."""
    from kdq import doctor as doc
    from kdq import log as kdqlog

    settings = get_settings()
    kdqlog.configure(settings.log_json, settings=settings)
    checks = doc.run_checks(doc.Env(settings, dataset=dataset), timeout_s=timeout)
    if as_json:
        print(json.dumps(doc.to_json(checks), indent=2))
    else:
        for check, line in zip(checks, doc.format_lines(checks)):
            console.print(Text(line, style="green" if check.ok else "red"), highlight=False, soft_wrap=True)
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)
