"""``kdq report ID`` and ``kdq compare ID ID...``: see one experiment, or several side by side.

Also the terminal summary that ``kdq data inspect`` prints (``inspect_summary``).
"""

import json
from pathlib import Path
from typing import Annotated

import typer

from kdq.cli.common import console, fail, get_or_exit, open_store, settings


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def report(
    exp_id: Annotated[int | None, typer.Argument(help="The experiment's id (or --night).")] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder to write (default: $KDQ_HOME/reports/<id>, or night)."),
    ] = None,
    night: Annotated[
        bool, typer.Option("--night", help="The whole night on one page: timeline, windows, score, cost.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the page's data as JSON too.")] = False,
) -> None:
    """One experiment as an HTML page: curves, confusion matrix, per-class F1, spec, timings, server score.

    Examples:

    \b
      kdq report 12
      kdq report 12 --out /tmp/report-12 --json
      kdq report --night -o morning.html   # every experiment's stages, windows, live score, gaps, cost
    """
    from kdq.course.scoring import calibration_points, expected_all
    from kdq.report import experiment_data, submissions_for, write_experiment_report

    s = settings()
    if night:
        return _night(s, out, exp_id, as_json)
    if exp_id is None:
        raise fail("give an experiment id (`kdq status --all` lists them), or --night for the whole night", 2)
    with open_store(look=True) as store:
        exp = get_or_exit(store, exp_id)
        subs, events = submissions_for(store, exp_id), store.events(exp_id)
        expected = (e := expected_all(store, s, [exp]).get(exp_id)) and e.as_json()
        points = calibration_points(store, s)
    folder = out or s.root / "reports" / str(exp_id)
    page = write_experiment_report(exp, folder, subs, s, events, expected, points)
    if as_json:
        data = experiment_data(exp, subs, s, events, expected)
        print(json.dumps({**data, "report": str(page)}, indent=2, default=str))
    else:
        console().print(f"report: {page}", highlight=False)


def _night(s, out: Path | None, exp_id: int | None, as_json: bool) -> None:
    from kdq.nightpage import write_night_report

    if exp_id is not None:
        raise fail("give an experiment id or --night, not both", 2)
    with open_store(look=True, s=s) as store:
        page = write_night_report(store, s, out or s.root / "reports" / "night")
    if as_json:
        print(json.dumps({"report": str(page)}, indent=2))
    else:
        console().print(f"report: {page}", highlight=False)


def compare(
    ids: Annotated[list[int], typer.Argument(help="Two or more experiment ids.")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write an HTML page with charts into this folder.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Experiments side by side: the spec fields that differ, then the metrics.

    Examples:

    \b
      kdq compare 12 14
      kdq compare 12 14 15 --html /tmp/compare
    """
    from rich.table import Table
    from rich.text import Text

    from kdq.compare import side_by_side, spec_diff, write_compare_report
    from kdq.course.scoring import calibration_points

    if len(ids) < 2:
        raise fail("compare needs at least two experiment ids, e.g. `kdq compare 3 7`", 2)
    with open_store(look=True) as store:
        exps = [get_or_exit(store, i) for i in ids]
        points = calibration_points(store, settings()) if html else []
    diff, table = spec_diff([e.spec_json for e in exps]), side_by_side(exps)
    page = write_compare_report(exps, points, html) if html else None
    if as_json:
        print(
            json.dumps(
                {
                    "ids": ids,
                    "names": [e.name for e in exps],
                    "spec_diff": diff,
                    "metrics": table,
                    "report": str(page) if page else None,
                },
                indent=2,
                default=str,
            )
        )
        return
    heads = [f"{e.id}: {e.name}" for e in exps]
    for title, rows in (("spec differences", diff), ("metrics", table)):
        t = Table(title=title, title_justify="left")
        t.add_column("")
        for h in heads:
            t.add_column(Text(h), justify="right")
        for k, vals in rows.items():
            t.add_row(Text(k), *(Text(_fmt(v)) for v in vals))
        if not rows:
            t.add_row("(none)", *("" for _ in heads))
        console().print(t)
    if page:
        console().print(f"report: {page}", highlight=False)


def inspect_summary(f):
    """The short terminal view of ``kdq data inspect``'s findings."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    s = f.counts_summary()
    classes = Table(
        title=f"{s['images']} images in {len(f.classes)} classes (imbalance {f.imbalance_ratio:.2f}×)",
        title_justify="left",
    )
    for col in ("class", "images", "weight"):
        classes.add_column(col, justify="left" if col == "class" else "right")
    for c in f.classes:
        classes.add_row(Text(c), str(f.counts[c]), f"{f.class_weights[c]:.3f}")
    size = f.size_summary
    lines = [
        Text(
            f"sizes: width {size['width'].get('min')}–{size['width'].get('max')}, height "
            f"{size['height'].get('min')}–{size['height'].get('max')}; formats "
            + ", ".join(f"{k} {v}" for k, v in f.formats.items())
            + "; modes "
            + ", ".join(f"{k} {v}" for k, v in f.modes.items())
        ),
        Text(f"unreadable or truncated: {s['problems']}", style="red" if s["problems"] else ""),
        Text(
            f"duplicates: {s['exact_groups']} exact groups, {s['near_groups']} near groups "
            f"({s['redundant_images']} redundant images)"
        ),
        Text(
            f"label conflicts (same picture in two classes): {s['cross_class_groups']}",
            style="red" if s["cross_class_groups"] else "",
        ),
        *(
            Text("  conflict: " + " | ".join(m["file"] for m in g["members"]), style="red")
            for g in [g for g in f.duplicate_groups if g["cross_class"]][:5]
        ),
        Text(f"likely overlays (text, lines, borders): {s['overlays']}"),
        Text(f"read {f.files} files in {f.seconds:.1f} s ({f.images_per_s or 0:.0f} images/s)", style="dim"),
    ]
    return Group(classes, *lines)
