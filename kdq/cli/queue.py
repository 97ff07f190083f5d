"""The commands that change the queue: ``enqueue``, ``cancel``, ``retry``, ``submit``, and ``worker``."""

import json
from pathlib import Path
from typing import Annotated

import typer

from kdq.cli.common import ERROR, err, fail, nudge, open_store, say, settings, warn
from kdq.cli.pick import FAILED, IDS, STAGES, pick

PRIORITY_LIMIT = 1_000_000


def expand(patterns: list[str]) -> list[str]:
    """Spec paths from the arguments: globs expanded, every problem found at once (one line each)."""
    import glob

    paths, problems = [], []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            problems.append(f"{pattern}: no file matches")
        for m in matches:
            p = Path(m)
            if p.is_dir():
                problems.append(f"{m} is a folder: pass spec files or a glob, e.g. {p / '*.toml'}")
            elif p.is_symlink() and not p.exists():
                problems.append(f"{m}: a symlink that leads nowhere (broken or a loop): fix or remove it")
            elif not p.exists():
                problems.append(f"{m}: no such file")
            else:
                paths.append(m)
    if problems:
        for line in problems:
            err().print(f"[red]error:[/red] {line}", markup=True, highlight=False, soft_wrap=True)
        err().print("nothing was queued", highlight=False, soft_wrap=True)
        raise typer.Exit(ERROR)
    return paths


def enqueue(
    files: Annotated[
        list[str], typer.Argument(metavar="SPEC...", help="Spec files (TOML); globs are expanded.")
    ],
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a field: --set distill.temperature=4")
    ] = [],  # noqa: B006 (typer reads the default)
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and list, queue nothing.")] = False,
    priority: Annotated[
        int,
        typer.Option(min=-PRIORITY_LIMIT, max=PRIORITY_LIMIT, help="Higher runs first (±1,000,000)."),
    ] = 0,
    force: Annotated[bool, typer.Option(help="Queue a spec even if the same one was queued before.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The queued ids and names as JSON.")] = False,
) -> None:
    """Validate spec files (sweeps expand into many) and queue them: all or nothing.

    Examples:

    \b
      kdq enqueue configs/hinton-shufflenet.toml
      kdq enqueue 'configs/*.toml' --dry-run
      kdq enqueue configs/sweep-temperature-alpha.toml --set train.epochs=30 --priority 5
    """
    from kdq import preflight
    from kdq.specfile import SpecError, load_files, parse_overrides

    settings()  # a bad KDQ_* value is the first thing to say
    paths = expand(files)
    try:
        specs = load_files(paths, parse_overrides(set_))
        warnings = preflight.check(specs, settings())
    except SpecError as exc:
        for line in exc.problems:
            err().print("[red]error:[/red] ", end="", markup=True)
            err().print(line, markup=False, highlight=False, soft_wrap=True)
        err().print("nothing was queued", highlight=False, soft_wrap=True)
        raise typer.Exit(ERROR) from None
    from kdq.train.estimate import over_the_limits, slow_cpu_runs

    for line in [
        *warnings,
        *slow_cpu_runs(specs),
        *over_the_limits(specs),
    ]:  # queued all the same: the user may mean it
        warn(f"warning: {line}")
    if dry_run:
        return dry_run_report(specs, as_json)
    from kdq.requests import DuplicateSpec

    with open_store() as store:
        try:
            ids = store.add([(str(p), s) for p, s in specs], priority=priority, force=force)
        except DuplicateSpec as exc:
            raise fail(f"{exc}\nnothing was queued") from None
        try:
            nudge(ids)
        except Exception as exc:  # the rows and their nudge go together: take the rows back
            store.discard(ids)
            where = settings().queue_path
            raise fail(
                f"{where}: cannot nudge the worker ({type(exc).__name__}: {exc}); nothing was queued"
            ) from None
    if as_json:
        print(json.dumps([{"id": i, "name": s.name} for i, (_, s) in zip(ids, specs)], indent=2))
    for i, (_, s) in zip([] if as_json else ids, specs):
        say(f"queued {i}: {s.name}")


AS_JSON = Annotated[bool, typer.Option("--json", help="One JSON object per id: id, stage, what happened.")]


def dry_run_report(specs: list, as_json: bool) -> None:
    """What ``--dry-run`` prints: each spec that would be queued, and what its recipe costs."""
    from kdq.train.estimate import cost_line, recipe_cost

    rows = [
        {
            "source": str(p),
            "name": s.name,
            "hash": s.content_hash(),
            "backend": s.backend.kind,
            "h100_minutes": round(recipe_cost(s).total_min, 1),
        }
        for p, s in specs
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
    for r, (path, spec) in [] if as_json else zip(rows, specs):
        say(f"would queue {r['name']} ({r['source']}, {r['backend']})")
        say(cost_line(path, spec))


def _report(results: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
    for r in [] if as_json else results:
        (say if r["ok"] else warn)(f"{'' if r['ok'] else 'error: '}{r['id']}: {r['message']}")
    if any(not r["ok"] for r in results):
        raise typer.Exit(ERROR)


def cancel(ids: IDS = None, stage: STAGES = None, as_json: AS_JSON = False) -> None:
    """Cancel experiments (a running training is stopped by the worker).

    Examples:

    \b
      kdq cancel 7
      kdq cancel 7 8 9 --json
      kdq cancel 1-6
      kdq cancel --stage queued
    """
    from kdq.homelock import heartbeat_age, silent_worker
    from kdq.stages import SUBMITTED, Stage

    results = []
    with open_store(create=False) as store:
        age = heartbeat_age(store)
        alone = not settings().worker_alive(age)  # no worker will see the request soon
        silent = silent_worker(store) if alone else None  # its process is here: SIGSTOP, hung
        for e in pick(store, ids, stage):
            exp = store.request_cancel(e.id)
            if exp.stage is Stage.CANCELLED:
                msg = "cancelled"
            elif exp.cancel_requested and exp.stage in SUBMITTED:
                msg = f"cancel requested ({exp.stage}): {UPLOAD_CANCEL[exp.stage]}"
            elif exp.cancel_requested and silent:
                msg = f"cancel requested ({exp.stage}); the worker is {silent}: it acts on it once it runs"
            elif exp.cancel_requested and alone:
                msg = f"cancel requested ({exp.stage}); no worker is running: {_stop_alone(exp)}"
            elif exp.cancel_requested:
                msg = f"cancel requested; the worker stops it ({exp.stage})"
            else:
                msg = f"already {exp.stage}, nothing to cancel"
            results.append({"id": e.id, "stage": str(exp.stage), "ok": True, "message": msg})
    nudge([r["id"] for r in results])
    _report(results, as_json)


UPLOAD_CANCEL = {  # nothing stops an upload on the wire or a grading: what the cancel does instead
    "submitting": "the upload is on its way; if the server refuses it, it is not sent again; if it "
    "went through, it is graded and recorded as usual",
    "evaluating": "its model is already on the course server and nothing can stop that; its grade is "
    "still recorded, and nothing is uploaded again",
}


def _stop_alone(exp) -> str:
    """With no worker, stop a local training process here (the next worker records the cancel)."""
    from kdq.backends.local import LocalBackend
    from kdq.runfolder import is_running

    handle = exp.handle or {}
    if exp.backend == "local" and handle.get("pid") and is_running(Path(handle["run_dir"])):
        LocalBackend(settings()).cancel(handle)
        return f"stopped its training process (pid {handle['pid']}); the next `kdq worker` records it"
    return "the next `kdq worker` stops it (start one to cancel now)"


def _still_running(s) -> list[str]:
    """Local trainings that outlive the worker: experiment, name, pid."""
    from kdq.backends.local import LocalBackend
    from kdq.store import Store

    handles = LocalBackend(s).running()
    if not handles:
        return []
    with Store.open(s) as store:
        by_run = {e.run_id: e for e in store.list() if e.run_id}
    lines = []
    for h in handles:
        e = by_run.get(Path(h["run_dir"]).name)
        lines.append(
            f"{e.id} {e.name} (pid {h['pid']})" if e else f"{Path(h['run_dir']).name} (pid {h['pid']})"
        )
    return lines


def retry(
    ids: IDS = None,
    failed: FAILED = False,
    stage: STAGES = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start from epoch 1, not from the last run's checkpoint.")
    ] = False,
    as_json: AS_JSON = False,
) -> None:
    """Queue failed, cancelled, skipped or pruned experiments again (a new attempt, a new run id).

    A training resumes from the last run's last checkpoint (same spec) unless --fresh. One that already
    trained to its last epoch is refused: `kdq submit ID` submits a skipped model, --fresh trains again.

    Examples:

    \b
      kdq retry 7
      kdq retry 7 8 --json
      kdq retry 7 --fresh
      kdq retry 1-6
      kdq retry --failed
    """
    results = []
    with open_store(create=False) as store:
        for e in pick(store, ids, stage, failed):
            try:
                exp = store.retry(e.id, fresh=fresh)
            except ValueError as exc:
                results.append({"id": e.id, "stage": str(e.stage), "ok": False, "message": str(exc)})
                continue
            how = f", from run {exp.resume_from}'s checkpoint" if exp.resume_from else ""
            msg = f"queued again (attempt {exp.attempt}{how})"
            results.append({"id": e.id, "stage": str(exp.stage), "ok": True, "message": msg})
    nudge([r["id"] for r in results if r["ok"]])
    _report(results, as_json)


def submit(
    ids: IDS = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask when the live one scores higher.")
    ] = False,
    as_json: AS_JSON = False,
) -> None:
    """Submit these experiments' models next, whatever their policy (the rate limit still applies).

    A submission replaces the live one: when a model's expected score is below the live submission's,
    it asks first (with both numbers) unless --yes.

    Examples:

    \b
      kdq submit 12
      kdq submit 12 14 --json
      kdq submit 12 --yes
    """
    from kdq.cli.ask import below_live, confirm

    results = []
    with open_store(create=False) as store:
        chosen = pick(store, ids, None)
        if question := below_live(store, settings(), chosen):
            confirm(question, yes, "submit")
        for e in chosen:
            try:
                store.request_submit(e.id)
            except ValueError as exc:
                results.append({"id": e.id, "stage": str(e.stage), "ok": False, "message": str(exc)})
                continue
            msg = "will be submitted at the next free slot"
            results.append({"id": e.id, "stage": str(e.stage), "ok": True, "message": msg})
    if any(r["ok"] for r in results):
        nudge([], scheduler=True)
    _report(results, as_json)


def worker(
    log_json: Annotated[
        bool | None, typer.Option("--log-json/--log-console", help="Log format (default: JSON unless a TTY).")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also Huey's own lines (task ids, retries).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Start an empty database in a home whose kdq.db is gone.")
    ] = False,
    allow_sleep: Annotated[
        bool,
        typer.Option(
            "--allow-sleep", help="Let the machine sleep while experiments are live (KDQ_ALLOW_SLEEP)."
        ),
    ] = False,
) -> None:
    """Run the worker (Huey consumer) until Ctrl-C or SIGTERM. Leave it running overnight.

    While any experiment is live it keeps the machine awake (wakepy), until the queue is empty.

    Examples:

    \b
      kdq worker
      kdq worker --log-json >> worker.log 2>&1
    """
    from kdq import log as kdqlog

    s = settings()
    if allow_sleep:
        s = s.model_copy(update={"allow_sleep": True})
    kdqlog.configure(log_json if log_json is not None else s.log_json, settings=s, verbose=verbose)
    from jobs.worker import run
    from kdq.course.ledger import Ledger
    from kdq.homelock import HomeLocked
    from kdq.store import Store, StoreError

    try:
        with Store.open(s, force=force) as store:  # a damaged database, or runs left without one: refused
            Ledger(store).set_next_tick(None)  # worked out with the last settings: these count from now
    except StoreError as exc:
        raise fail(str(exc)) from None
    try:
        run(s)
    except HomeLocked as exc:
        raise fail(str(exc)) from None
    if going := _still_running(s):
        warn(f"still training in the background: {', '.join(going)}; the next `kdq worker` picks them up")
