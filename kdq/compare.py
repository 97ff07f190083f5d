"""Comparing experiments: filter and sort result rows, diff specs, lay metrics side by side.

    rows = select(rows, stage=["done"], name="hinton*", min_f1=0.5, sort="val_f1", descending=True, limit=10)
    diff = spec_diff([exp.spec_json ...])          # only the fields that differ
    table = side_by_side(exps)                     # metric -> one value per experiment
    write_compare_report(exps, points, out_dir)  # index.html + charts (points: the trust chart's)

Pure except the last function.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- results: filter and sort


def _matches(name: str, pattern: str) -> bool:
    """A glob when the pattern has wildcards, else a case-insensitive substring."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name.lower(), pattern.lower())
    return pattern.lower() in name.lower()


def select(
    rows: Iterable[dict],
    *,
    stage: Iterable[str] = (),
    name: str | None = None,
    min_f1: float | None = None,
    sort: str | None = None,
    descending: bool = True,
    limit: int | None = None,
) -> list[dict]:
    """Filter result rows (dicts with id, name, stage, val_f1, ...), sort them, keep the first ``limit``.

    Rows without a value in the sort column go last in either direction.
    """
    stages = set(stage)
    out = [
        r
        for r in rows
        if (not stages or r.get("stage") in stages)
        and (name is None or _matches(str(r.get("name", "")), name))
        and (min_f1 is None or (r.get("val_f1") is not None and r["val_f1"] >= min_f1))
    ]
    if sort:
        present = [r for r in out if r.get(sort) is not None]
        missing = [r for r in out if r.get(sort) is None]
        present.sort(key=lambda r: (r[sort], r.get("id", 0)), reverse=descending)
        out = present + missing
    return out[:limit] if limit else out


# ---------------------------------------------------------------- specs and metrics side by side


def spec_diff(spec_jsons: list[str]) -> dict[str, list[Any]]:
    """Dotted field -> one value per spec, for the fields that are not the same in every spec."""
    from kdq.report import flatten  # jinja2 and matplotlib: only when a page is written

    flat = [flatten(json.loads(s)) for s in spec_jsons]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1}


METRICS = (
    "val_f1",
    "holdout_f1",
    "val_acc",
    "teacher_probe_f1",
    "model_mb",
    "params",
    "best_epoch",
    "epochs_run",
    "pretrained_loaded",  # False: asked for pretrained weights, trained from scratch
    "seconds",
)


def side_by_side(exps: list) -> dict[str, list[Any]]:
    """Metric -> one value per experiment: the scalars, the server's result, then F1 per class."""
    ms = [e.metrics or {} for e in exps]
    table: dict[str, list[Any]] = {"stage": [str(e.stage) for e in exps]}
    for k in METRICS:
        vals = [m.get(k) for m in ms]
        if any(v is not None for v in vals):
            table[k] = vals
    table["server_score"] = [e.server_score for e in exps]
    table["server_rank"] = [e.server_rank for e in exps]
    classes: list[str] = []
    for m in ms:
        classes += [c for c in (m.get("per_class_f1") or {}) if c not in classes]
    for c in classes:
        table[f"F1 {c}"] = [(m.get("per_class_f1") or {}).get(c) for m in ms]
    return table


# ---------------------------------------------------------------- the HTML page


def write_compare_report(exps: list, points: list, out_dir: Path) -> Path:
    """``out_dir/index.html`` with the spec diff, the metrics, a per-class chart and the trust chart."""
    from kdq import plots
    from kdq.report import render, write_page

    out_dir = Path(out_dir)
    names = [f"{e.id}: {e.name}" for e in exps]
    table = side_by_side(exps)
    bars = {k: table[k] for k in ("val_f1", "val_acc", "teacher_probe_f1") if k in table}
    bars["server_score / 10"] = [None if v is None else v / 10 for v in table["server_score"]]
    plots.metric_bars(names, bars, out_dir / "metrics.png")
    per_class = {n: (e.metrics or {}).get("per_class_f1") for n, e in zip(names, exps)}
    per_class = {n: v for n, v in per_class.items() if v}
    if per_class:
        plots.per_class_f1(per_class, out_dir / "per_class_f1.png")
    plots.trust(points, out_dir / "trust.png")  # every graded submission (scoring.TrustPoint)
    html = render(
        "compare.html",
        title="Comparison of " + ", ".join(str(e.id) for e in exps),
        exps=exps,
        diff=spec_diff([e.spec_json for e in exps]),
        table=table,
        per_class=bool(per_class),
        points=points,
    )
    return write_page(out_dir, html)
