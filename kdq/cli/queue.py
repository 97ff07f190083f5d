"""The experiment commands: enqueue, status, show, cancel, retry, results, submit, worker."""

from __future__ import annotations

import csv
import glob
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kdq import log as kdqlog
from kdq.experiment import Experiment
from kdq.preflight import check_students
from kdq.settings import get_settings
from kdq.spec import SpecError, load_files, parse_overrides
from kdq.stages import LIVE, Stage
from kdq.store import DuplicateSpec, NotFound, Store

console = Console()
err = Console(stderr=True)

STAGE_STYLE = {
    "done": "green",
    "failed": "red",
    "cancelled": "dim",
    "skipped": "dim",
    "ready": "cyan",
    "training": "yellow",
    "submitting": "magenta",
    "evaluating": "magenta",
}


def open_store() -> Store:
    settings = get_settings()
    kdqlog.configure(settings.log_json, settings=settings)
    return Store.open(settings)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(Text("error: ", style="red") + Text(kdqlog.redact(message)), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def get_or_exit(store: Store, exp_id: int) -> Experiment:
    try:
        return store.get(exp_id)
    except NotFound:
        raise fail(f"no experiment {exp_id}; `kdq status --all` lists them") from None


def _nudge(ids: list[int], scheduler: bool = False) -> None:
    from jobs import tasks

    tasks.nudge(ids, to=get_settings(), scheduler=scheduler)


def _fmt_f1(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _ago(ts: float | None) -> str:
    if not ts:
        return ""
    s = max(0, time.time() - ts)
    return f"{s:.0f}s" if s < 90 else f"{s / 60:.0f}m" if s < 5400 else f"{s / 3600:.1f}h"


def _epoch(exp: Experiment) -> str:
    p = exp.progress or {}
    return f"{p['epoch']}/{p.get('epochs', '?')}" if "epoch" in p else ""


# ---------------------------------------------------------------- enqueue


def enqueue(
    files: Annotated[list[str], typer.Argument(help="Spec files (TOML); globs are expanded.")],
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a field: --set distill.temperature=4")
    ] = [],  # noqa: B006
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and list, queue nothing.")] = False,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    force: Annotated[bool, typer.Option(help="Queue a spec even if the same one was queued before.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Validate spec files (sweeps expand into many) and queue them: all or nothing."""
    paths: list[str] = []
    for pattern in files:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise fail(f"{pattern}: no file matches")
        paths.extend(matches)
    try:
        specs = load_files(paths, parse_overrides(set_))
        check_students(specs, get_settings().cache_dir)
    except SpecError as exc:
        for line in exc.problems:
            err.print(Text("error: ", style="red") + Text(line), highlight=False, soft_wrap=True)
        err.print("nothing was queued", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if dry_run:
        rows = [
            {"source": str(p), "name": s.name, "hash": s.content_hash(), "backend": s.backend.kind}
            for p, s in specs
        ]
        if as_json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                console.print(
                    f"would queue {r['name']} ({r['source']}, {r['backend']})", highlight=False, markup=False
                )
        return
    with open_store() as store:
        try:
            ids = store.add([(str(p), s) for p, s in specs], priority=priority, force=force)
        except DuplicateSpec as exc:
            raise fail(f"{exc}\nnothing was queued") from None
    _nudge(ids)
    if as_json:
        print(json.dumps([{"id": i, "name": s.name} for i, (_, s) in zip(ids, specs)], indent=2))
    else:
        for i, (_, s) in zip(ids, specs):
            console.print(f"queued {i}: {s.name}", highlight=False, markup=False)


# ---------------------------------------------------------------- status


def status_header(store: Store) -> list[str]:
    from jobs.worker import heartbeat_age

    age = heartbeat_age(store)
    lines = [
        "worker: [green]alive[/green]"
        if age is not None and age < 30
        else "worker: [red]not running[/red] — start it with `kdq worker`"
    ]
    counts = store.count_by_stage()
    if counts:
        lines.append("  ".join(f"{stage} {counts[stage]}" for stage in Stage if stage in counts))
    try:
        from kdq.course.status import header_lines  # the course server's view, when present
    except ImportError:
        header_lines = None
    if header_lines is not None:
        lines.extend(header_lines(store))
    return lines


def experiments_table(exps: list[Experiment], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for col in (
        "id",
        "name",
        "stage",
        "backend",
        "epoch",
        "val F1",
        "teacher F1",
        "server",
        "rank",
        "updated",
    ):
        table.add_column(
            col, justify="right" if col in ("id", "val F1", "teacher F1", "server", "rank") else "left"
        )
    for e in exps:
        stage = str(e.stage)
        if e.stage is Stage.FAILED and e.error:
            stage += f": {e.error.splitlines()[0][:60]}"
        table.add_row(
            str(e.id),
            Text(e.name),
            Text(stage, style=STAGE_STYLE.get(str(e.stage), "")),
            e.backend,
            _epoch(e),
            _fmt_f1(e.val_f1 or (e.progress or {}).get("best_f1")),
            _fmt_f1(e.teacher_f1),
            "" if e.server_score is None else f"{e.server_score:.3f}",
            "" if e.server_rank is None else str(e.server_rank),
            _ago(e.updated_at),
        )
    return table


QUEUED_SHOWN = 10
RECENT_SHOWN = 10


def _status_experiments(store: Store, show_all: bool) -> tuple[list[Experiment], int]:
    """What the status table shows, and how many queued experiments it leaves out.

    At a glance: everything in flight, the next few queued and the last few finished; ``--all``: every one.
    """
    exps = store.list(order="id")
    if show_all:
        return exps, 0
    queued = sorted((e for e in exps if e.stage is Stage.QUEUED), key=lambda e: (-e.priority, e.id))
    active = [e for e in exps if e.stage in LIVE and e.stage is not Stage.QUEUED]
    recent = [e for e in exps if e.stage not in LIVE][-RECENT_SHOWN:]
    shown = sorted(active + queued[:QUEUED_SHOWN] + recent, key=lambda e: e.id)
    return shown, max(0, len(queued) - QUEUED_SHOWN)


def _status_view(store: Store, show_all: bool) -> Group:
    exps, hidden = _status_experiments(store, show_all)
    parts = [*status_header(store), experiments_table(exps)]
    if hidden:
        parts.append(f"… and {hidden} more queued (kdq status --all)")
    return Group(*parts)


def status(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every 2 s until Ctrl-C.")] = False,
    show_all: Annotated[
        bool, typer.Option("--all", "-a", help="Every experiment, not only live and recent.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Everything at a glance: worker, server, every live experiment."""
    with open_store() as store:
        if as_json:
            from jobs.worker import heartbeat_age

            age = heartbeat_age(store)
            exps = store.list() if show_all else _status_experiments(store, False)[0]
            print(
                json.dumps(
                    {
                        "worker_alive": age is not None and age < 30,
                        "worker_heartbeat_age_s": age,
                        "counts": store.count_by_stage(),
                        "course_server": store.get_meta_json("course.server"),
                        "experiments": [e.summary() for e in exps],
                    },
                    indent=2,
                    default=str,
                )
            )
            return
        if not watch:
            console.print(_status_view(store, show_all))
            return
        try:
            with Live(_status_view(store, show_all), console=console, refresh_per_second=1) as live:
                while True:
                    time.sleep(2)
                    live.update(_status_view(store, show_all))
        except KeyboardInterrupt:
            pass


# ---------------------------------------------------------------- show, cancel, retry, submit


def show(exp_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One experiment: spec, timeline, metrics, artifacts."""
    with open_store() as store:
        exp = get_or_exit(store, exp_id)
        events = store.events(exp_id)
    data = {
        **exp.summary(),
        "spec": json.loads(exp.spec_json),
        "metrics": exp.metrics,
        "source": exp.source,
        "timeline": [{k: ev[k] for k in ("ts", "kind", "stage", "message")} for ev in events],
    }
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    console.print(
        Text(
            f"{exp.id}: {exp.name}  {exp.stage}  ({exp.backend}, attempt {exp.attempt}, run {exp.run_id})",
            style="bold",
        )
    )
    if exp.error:
        console.print(Text(f"error: {exp.error}", style="red"))
    spec = Table(title="spec", show_header=False, title_justify="left")
    for section, values in data["spec"].items():
        if isinstance(values, dict):
            spec.add_row(section, Text(", ".join(f"{k}={v}" for k, v in values.items())))
        else:
            spec.add_row(section, Text(str(values)))
    console.print(spec)
    if exp.metrics:
        m = Table(title="metrics", show_header=False, title_justify="left")
        for k in ("val_f1", "val_acc", "teacher_probe_f1", "model_mb", "best_epoch", "torch_version"):
            if k in exp.metrics:
                m.add_row(k, str(exp.metrics[k]))
        console.print(m)
    tl = Table(title="timeline", title_justify="left")
    tl.add_column("time")
    tl.add_column("event")
    tl.add_column("message")
    for ev in events:
        tl.add_row(
            datetime.fromtimestamp(ev["ts"]).strftime("%m-%d %H:%M:%S"), ev["kind"], Text(ev["message"] or "")
        )
    console.print(tl)
    if exp.artifacts:
        console.print(f"artifacts: {exp.artifacts}", highlight=False)


def cancel(exp_id: int) -> None:
    """Cancel an experiment (a running training is stopped by the worker)."""
    with open_store() as store:
        get_or_exit(store, exp_id)
        exp = store.request_cancel(exp_id)
    _nudge([exp_id])
    if exp.stage is Stage.CANCELLED:
        console.print(f"{exp_id}: cancelled")
    elif exp.cancel_requested:
        console.print(f"{exp_id}: cancel requested; the worker stops it ({exp.stage})")
    else:
        console.print(f"{exp_id}: already {exp.stage}, nothing to cancel")


def retry(exp_id: int) -> None:
    """Queue a failed, cancelled or skipped experiment again (a new attempt with a new run id)."""
    with open_store() as store:
        get_or_exit(store, exp_id)
        try:
            exp = store.retry(exp_id)
        except ValueError as exc:
            raise fail(str(exc)) from None
    _nudge([exp_id])
    console.print(f"{exp_id}: queued again (attempt {exp.attempt})")


def submit(exp_id: int) -> None:
    """Submit this experiment's model next, whatever its policy (the rate limit still applies)."""
    with open_store() as store:
        get_or_exit(store, exp_id)
        try:
            store.request_submit(exp_id)
        except ValueError as exc:
            raise fail(str(exc)) from None
    _nudge([], scheduler=True)
    console.print(f"{exp_id}: will be submitted at the next free slot")


# ---------------------------------------------------------------- results


RESULT_COLUMNS = (
    "id",
    "name",
    "stage",
    "val_f1",
    "val_acc",
    "teacher_f1",
    "model_mb",
    "server_score",
    "server_rank",
)


def _result_row(e: Experiment) -> dict:
    m = e.metrics or {}
    return {
        "id": e.id,
        "name": e.name,
        "stage": str(e.stage),
        "val_f1": e.val_f1,
        "val_acc": m.get("val_acc"),
        "teacher_f1": e.teacher_f1,
        "model_mb": m.get("model_mb"),
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
    stage: Annotated[list[str], typer.Option("--stage", help="Only this stage (repeat for several).")] = [],  # noqa: B006
    name: Annotated[str | None, typer.Option("--name", help="Name glob (hinton-*) or substring.")] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Only this backend (local, modal).")
    ] = None,
    min_f1: Annotated[float | None, typer.Option("--min-f1", help="Only val macro-F1 at least this.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many rows.")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also write a PNG of local val F1 against the server score.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    as_csv: Annotated[bool, typer.Option("--csv")] = False,
) -> None:
    """Every experiment with a result, best first (filter, sort, limit; --plot: can local validation be trusted?)."""
    from kdq.compare import select, trust_points

    if sort not in RESULT_COLUMNS:
        raise fail(f"--sort {sort}: unknown column; choose one of {', '.join(RESULT_COLUMNS)}")
    if unknown := [s for s in stage if s not in {str(x) for x in Stage}]:
        raise fail(f"--stage {unknown[0]}: unknown stage; choose from {', '.join(str(x) for x in Stage)}")
    with open_store() as store:
        rows = [_result_row(e) for e in store.list() if e.val_f1 is not None and backend in (None, e.backend)]
    rows = select(rows, stage=stage, name=name, min_f1=min_f1, sort=sort, descending=not asc, limit=limit)
    if plot:
        from kdq import plots

        points = trust_points(rows)
        plots.local_vs_server(points, plot)
        err.print(f"{plot}: {len(points)} experiments with a server score", highlight=False)
    if as_json:
        print(json.dumps(rows, indent=2))
    elif as_csv:
        w = csv.DictWriter(sys.stdout, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    else:
        table = Table()
        for col in RESULT_COLUMNS:
            table.add_column(col, justify="left" if col in ("name", "stage") else "right")
        for r in rows:
            table.add_row(
                *(
                    Text("" if r[c] is None else f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]))
                    for c in RESULT_COLUMNS
                )
            )
        console.print(table)


# ---------------------------------------------------------------- worker


def worker(
    log_json: Annotated[
        bool | None, typer.Option("--log-json/--log-console", help="Log format (default: JSON unless a TTY).")
    ] = None,
) -> None:
    """Run the worker (Huey consumer) until Ctrl-C or SIGTERM. Leave it running overnight."""
    settings = get_settings()
    kdqlog.configure(log_json if log_json is not None else settings.log_json, settings=settings)
    from jobs.worker import run

    run()
