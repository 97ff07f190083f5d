"""The commands that only look: ``status``, ``show``, ``results``. None of them creates state."""

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from kdq.cli.common import ERROR, console, fail, get_or_exit, open_store, say, settings, warn

RESULT_COLUMNS = (
    "id",
    "name",
    "stage",
    "val_f1",
    "holdout_f1",
    "holdout_f1_ci",
    "val_acc",
    "teacher_f1",
    "model_mb",
    "expected_score",
    "server_score",
    "server_rank",
)

# On a terminal: short headers, and the columns that go first, in order, when the table is too wide
RESULTS_LABELS = {
    "val_f1": "val F1",
    "holdout_f1": "holdout",
    "holdout_f1_ci": "interval",
    "val_acc": "acc",
    "teacher_f1": "teacher",
    "model_mb": "MB",
    "expected_score": "expected",
    "server_score": "server",
    "server_rank": "rank",
}
RESULTS_OPTIONAL = ("val_acc", "teacher_f1", "model_mb", "holdout_f1_ci", "server_rank", "holdout_f1")


def status(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every 2 s until Ctrl-C.")] = False,
    show_all: Annotated[
        bool, typer.Option("--all", "-a", help="Every experiment, not only live and recent.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, every value in full.")] = False,
) -> None:
    """Everything at a glance: the worker, the course server, every live experiment.

    Examples:

    \b
      kdq status                 # the live ones, the next queued, the last finished
      kdq status --watch         # refresh every 2 s (Ctrl-C stops)
      kdq status | grep hinton   # piped: full-width tab-separated rows
    """
    from kdq.cli import views

    s = settings()
    every = s.submit_interval_s
    if as_json and not s.db_path.exists():  # scripts still get an object: nothing here, where it looked
        nothing = {"state": None, "where": s.where(), "worker_alive": False, "counts": {}, "experiments": []}
        print(json.dumps(nothing, indent=2, default=str))
        raise typer.Exit(ERROR)
    with open_store(s=s, look=True) as store:
        out = console()
        if as_json:
            print(json.dumps(status_json(store, s, show_all), indent=2, default=str))
        elif not out.is_terminal:
            print(views.status_plain(store, s, show_all, every))
        elif not watch:
            out.print(views.status_view(store, s, show_all, interval_s=every))
        else:
            _watch(out, store, s, show_all)


def status_json(store, s, show_all: bool) -> dict:
    """``kdq status --json``: the glance's experiments and every header value, in full."""
    from kdq import pause
    from kdq.cli import views
    from kdq.course.ledger import Ledger
    from kdq.course.scoring import expected_all
    from kdq.homelock import heartbeat_age, silent_worker
    from kdq.night import Night

    age = heartbeat_age(store)
    alive = s.worker_alive(age)
    exps = views.glance(store, show_all)[0]
    expected = expected_all(store, s, exps)
    night = Night.read(store, s)
    return {
        "home": str(s.root),
        "worker_alive": alive,
        "worker_silent": None if alive else silent_worker(store),  # a SIGSTOPped or hung one, still here
        "worker_heartbeat_age_s": age,
        "worker_slept": store.get_meta_json("worker.slept"),  # its last sleep found (kdq/awake.py)
        "counts": store.count_by_stage(),
        "course_server": Ledger(store).server() or None,
        "paused": pause.active(store),  # a login this machine lacks: what needs it waits
        **night.as_json(),  # "eta" (the queue's end) and "cost" (GPU-hours, dollars, worst case)
        "experiments": [
            {
                **e.summary(),
                "expected_score": expected[e.id].as_json() if e.id in expected else None,
                "eta": night.etas[e.id].as_json() if e.id in night.etas else None,
                "cost": night.costs[e.id].as_json(),
            }
            for e in exps
        ],
    }


def _watch(out, store, s, show_all: bool) -> None:
    """``--watch``: redraw every 2 s, with as many rows as fit the screen, until Ctrl-C."""
    from rich.live import Live

    from kdq.cli import views

    def view():
        """The view with as many rows as fit the screen, wrapped names and header lines counted."""
        rows = out.size.height
        for spare in range(0, rows, 2):
            shown = views.status_view(store, s, show_all, height=rows - spare, interval_s=s.submit_interval_s)
            if len(out.render_lines(shown, out.options, pad=False)) < rows:
                break
        return shown

    try:
        with Live(view(), console=out, refresh_per_second=1, screen=False, auto_refresh=False) as live:
            while True:
                time.sleep(2)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        pass


def show(
    exp_id: Annotated[int, typer.Argument(help="The experiment's id (kdq status shows it).")],
    as_json: Annotated[bool, typer.Option("--json", help="Every value in full.")] = False,
) -> None:
    """One experiment: spec, timeline, metrics, artifacts.

    Examples:

    \b
      kdq show 12
      kdq show 12 --json | jq .metrics
    """
    from kdq.cli import tables
    from kdq.course.scoring import expected_all

    with open_store(look=True) as store:
        exp = get_or_exit(store, exp_id)
        events = store.events(exp_id)
        expected = expected_all(store, settings(), [exp]).get(exp.id)
    data = {
        **exp.summary(),
        "expected_score": expected.as_json() if expected else None,
        "spec": json.loads(exp.spec_json),
        "metrics": exp.metrics,
        "source": exp.source,
        "timeline": [{k: ev[k] for k in ("ts", "kind", "stage", "message")} for ev in events],
    }
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    for part in tables.show_view(exp, data, events, expected):
        console().print(part)


def result_row(e, expected=None) -> dict:
    """One row of ``kdq results``; ``expected``: its ``Expected`` score (kdq.course.scoring), if known."""
    m = e.metrics or {}
    return {
        "id": e.id,
        "name": e.name,
        "stage": str(e.stage),
        "val_f1": e.val_f1,
        "holdout_f1": m.get("holdout_f1"),  # the untouched split's macro-F1 and its 90% interval
        "holdout_f1_ci": m.get("holdout_f1_ci"),
        "val_acc": m.get("val_acc"),
        "teacher_f1": e.teacher_f1,
        "model_mb": m.get("model_mb"),
        "expected_score": round(expected.score, 4) if expected else None,
        "server_score": e.server_score,
        "server_rank": e.server_rank,
    }


def results(
    sort: Annotated[
        str, typer.Option(help=f"Column to sort by (descending unless --asc): {', '.join(RESULT_COLUMNS)}")
    ] = "val_f1",
    asc: Annotated[
        bool, typer.Option("--asc", help="Sort ascending (rows without a value stay last).")
    ] = False,
    stage: Annotated[list[str], typer.Option("--stage", help="Only this stage (repeat for several).")] = [],  # noqa: B006 (typer reads the default)
    name: Annotated[str | None, typer.Option("--name", help="Name glob (hinton-*) or substring.")] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Only this backend (local, modal).")
    ] = None,
    min_f1: Annotated[float | None, typer.Option("--min-f1", help="Only val macro-F1 at least this.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many rows.")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also write a PNG of local F1 against the server's F1.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Every value in full.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Comma-separated, header first.")] = False,
) -> None:
    """Every experiment with a result, best first: filter, sort, limit (--plot: can validation be trusted?).

    Examples:

    \b
      kdq results --limit 10
      kdq results --name 'hinton-*' --sort server_score
      kdq results --csv > results.csv
    """
    from kdq.cli import tables
    from kdq.compare import select
    from kdq.course.scoring import calibration_points, expected_all
    from kdq.stages import Stage

    if sort not in RESULT_COLUMNS:
        raise fail(f"--sort {sort}: unknown column; choose one of {', '.join(RESULT_COLUMNS)}", 2)
    if unknown := [s for s in stage if s not in {str(x) for x in Stage}]:
        raise fail(f"--stage {unknown[0]}: unknown stage; choose from {', '.join(str(x) for x in Stage)}", 2)
    with open_store(look=True) as store:
        exps = [e for e in store.list() if e.val_f1 is not None and backend in (None, e.backend)]
        expected = expected_all(store, settings(), exps)
        rows = [result_row(e, expected.get(e.id)) for e in exps]
        points = calibration_points(store, settings()) if plot else []
    rows = select(rows, stage=stage, name=name, min_f1=min_f1, sort=sort, descending=not asc, limit=limit)
    if plot:
        from kdq import plots

        plots.trust(points, plot)
        warn(f"{plot}: {len(points)} graded submissions")
    if as_json:
        print(json.dumps(rows, indent=2))
    elif as_csv:
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    elif not rows:
        say("no results yet (an experiment has one once it is validated)")
    else:
        out = console()
        for r in rows:  # the holdout's 90% interval as [lo, hi], 3 decimals like the F1 beside it
            r["holdout_f1_ci"] = "[{:.3f}, {:.3f}]".format(*r["holdout_f1_ci"]) if r["holdout_f1_ci"] else ""
            if x := expected.get(r["id"]):  # as kdq status shows it: short on a terminal, whole piped
                r["expected_score"] = x.short() if out.is_terminal else x.text()
        tables.print_rows(out, list(RESULT_COLUMNS), rows, RESULTS_OPTIONAL, RESULTS_LABELS)
