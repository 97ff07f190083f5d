"""``kdq search status [NAME]`` and ``kdq search report NAME``: how a search is going (docs/search.md)."""

import json
from pathlib import Path
from typing import Annotated

import typer

from kdq.cli.common import console, fail, open_store, say, settings

app = typer.Typer(
    help="Searches: a spec with a [search] table, its trials run by the worker.", no_args_is_help=True
)


def _pick(found: dict, name: str | None) -> dict:
    if name is None:
        return found
    if name not in found:
        known = ", ".join(sorted(found)) or "none yet (kdq enqueue a spec with a [search] table)"
        raise fail(f"no search named {name!r}; searches: {known}")
    return {name: found[name]}


@app.command("status")
def status(
    name: Annotated[str | None, typer.Argument(help="One search (default: every search).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Trials by state, the best so far (or the Pareto front), the budget used, importances."""
    from kdq.course.scoring import expected_all
    from kdq.search.summary import searches, summarize

    root = settings().root
    with open_store(create=False) as store:
        picked = _pick(searches(store), name)
        summaries = [summarize(store, root, n, trials) for n, trials in sorted(picked.items())]
        expected = expected_all(store, settings(), [e for trials in picked.values() for e in trials])
    if as_json:
        print(json.dumps(summaries if name is None else summaries[0], indent=2, default=str))
        return
    if not summaries:
        say("no searches yet: kdq enqueue a spec with a [search] table (docs/search.md)")
    for s in summaries:
        _print(s, expected)


def _print(s: dict, expected: dict) -> None:
    from rich.table import Table

    from kdq.search.summary import best_line, front_line, told_when, value_text

    states = "  ".join(f"{k} {v}" for k, v in s["by_state"].items() if v)
    budget = s["gpu_hours"]
    spent = f"{budget['used']:.3f} h" + (f" of {budget['budget']} h" if budget["budget"] else "")
    say(
        f"search {s['name']}: {s['made']}/{s['trials']} trials ({states or 'none told yet'}), "
        f"objective {s['objective']}, pruner {s['pruner']}, {s['epochs']} epochs, {spent}"
    )
    best, front = s["best"], s["front"]
    if front is not None:  # the two-sided objective: every trial no other beats on both F1 and size
        say(
            f"pareto front ({len(front)} trials, holdout F1 up, size down):"
            if front
            else "pareto front: none yet"
        )
        for r in front:
            say(f"  {front_line(r)}")
    elif best:
        say(f"best: {best_line(best, s['objective'], expected.get(best['experiment']))}")
    else:
        say("best: no complete trial yet")
    if s["importances"]:
        say("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in s["importances"].items()))
    table = Table()  # "expected": the one kdq status shows now; "told": the study's value, and when
    for col in ("trial", "id", "stage", "study", "expected", "told", "epochs", "params"):
        table.add_column(col)
    for r in s["rows"]:
        x = expected.get(r["experiment"])
        table.add_row(
            "" if r["trial"] is None else str(r["trial"]),
            str(r["experiment"]),
            r["stage"],
            r["study_state"] or "",
            x.short() if x else "",
            f"{value_text(r['value'])} at {told_when(r)}" if r["value"] is not None else "",
            str(r["epochs"]),
            ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()),
        )
    console().print(table)


@app.command("report")
def report(
    name: Annotated[str, typer.Argument(help="The search.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write.")] = None,
) -> None:
    """An HTML page of Optuna's plots: history (or Pareto front), parallel coordinates."""
    from kdq.search.summary import searches, summarize, write_report

    root = settings().root
    with open_store(create=False) as store:
        trials = _pick(searches(store), name)[name]
        summary = summarize(store, root, name, trials)
    from kdq.search.study import study_path

    default = root / "reports" / f"search-{study_path(root, name).stem}.html"
    path = write_report(root, name, summary, out or default)
    say(f"wrote {path}")
