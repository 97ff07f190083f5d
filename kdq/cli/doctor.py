"""``kdq doctor``: every precondition of an overnight run, one line each, with what to do."""

import json
from typing import Annotated

import typer

from kdq.cli.common import ERROR, OK, console, nudge, settings


def doctor(
    dataset: Annotated[
        str, typer.Option("--dataset", help="Dataset name the specs use (data.dataset).")
    ] = "hw3",
    modal: Annotated[
        bool | None,
        typer.Option("--modal/--no-modal", help="Check Modal too (default: when a Modal spec is queued)."),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds each check may take.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of lines.")] = False,
) -> None:
    """Check the course server and token, Hugging Face access, the dataset, Modal, the worker, the disk.

    Exit code 1 when any check fails.

    Examples:

    \b
      kdq doctor
      kdq doctor --modal --dataset hw3
      kdq doctor --json | jq '.checks[] | select(.ok | not)'
    """
    from rich.text import Text

    from kdq import doctor as doc
    from kdq import log as kdqlog

    s = settings()
    kdqlog.configure(bool(s.log_json), settings=s)  # a short command: JSON only when asked
    checks = doc.run_checks(doc.Env(s, dataset=dataset, modal=modal), timeout_s=timeout)
    if as_json:
        print(json.dumps(doc.to_json(checks), indent=2))
    else:
        for check, line in zip(checks, doc.format_lines(checks)):
            style = "dim" if check.skipped else "green" if check.ok else "red"
            console().print(Text(line, style=style), highlight=False, soft_wrap=True)
    ended = _end_pauses(s, checks)
    if not as_json:
        for key in ended:
            console().print(f"{key} works again: the queue goes on", highlight=False, markup=False)
    raise typer.Exit(OK if all(c.ok for c in checks) else ERROR)


def _end_pauses(s, checks) -> list[str]:
    """The logins the worker paused for (kdq/pause.py) that a check just found working: end those pauses
    and nudge the experiments waiting for them, so the queue goes on now, not at its next look."""
    from kdq import pause
    from kdq.stages import Stage
    from kdq.store import Store

    works = {c.name for c in checks if c.ok and not c.skipped}
    if not s.db_path.exists():
        return []
    with Store.open(s) as store:
        ended = pause.clear(store, [k for k in pause.active(store) if k in works])
        waiting = [e.id for e in store.list({Stage.QUEUED, Stage.LAUNCHING}) if pause.needs(e) & set(ended)]
    if waiting:
        nudge(waiting)
    return ended
