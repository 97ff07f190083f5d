"""``kdq report ID``: one experiment on one HTML page, and the small page toolkit every report uses.

    write_experiment_report(exp, out_dir)  ->  out_dir/index.html + PNG figures

The page shows the training curves (each loss component of history.csv, validation macro-F1 and
accuracy per epoch), the confusion matrix, per-class F1 beside the teacher probe's (when
metrics.json has it), the spec, the timings and the course server's result with every submission.
Everything comes from the store row and the experiment's fetched artifacts (or its run folder).
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from kdq import plots, runfolder

# ---------------------------------------------------------------- page toolkit

TEMPLATES = Path(__file__).parent / "templates"  # base.html, and one page each: experiment, compare, inspect


def render(page: str, **context: Any) -> str:
    """Render ``kdq/templates/<page>`` (which ``{% extends "base.html" %}``); every value is HTML-escaped."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.filters["when"] = fmt_time
    return env.get_template(page).render(now=fmt_time(datetime.now().timestamp()), **context)


def fmt_num(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_interval(lo_hi) -> str:
    """``[0.7123, 0.8012]``: a confidence interval as a pair of numbers."""
    return "[" + ", ".join(fmt_num(float(v)) for v in lo_hi) + "]"


def fmt_time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def write_page(out_dir: Path, html: str, name: str = "index.html") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(html, encoding="utf-8")
    return path


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (spec sections become dotted keys)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ---------------------------------------------------------------- one experiment's files


def artifacts_dir(exp, settings=None) -> Path | None:
    """Where this experiment's metrics.json and history.csv are: its artifacts, else the local run folder."""
    candidates = []
    if exp.artifacts:
        candidates.append(Path(exp.artifacts))
    if exp.handle and exp.handle.get("run_dir"):
        candidates.append(Path(exp.handle["run_dir"]))
    if settings is not None and exp.run_id:
        candidates.append(settings.runs_dir / exp.run_id)
    for c in candidates:
        if (c / runfolder.METRICS).exists() or (c / runfolder.HISTORY).exists():
            return c
    return None


def read_history(folder: Path | None) -> list[dict]:
    if folder is None or not (folder / runfolder.HISTORY).exists():
        return []
    with open(folder / runfolder.HISTORY, newline="") as f:
        return list(csv.DictReader(f))


def experiment_data(
    exp,
    submissions: list[dict],
    settings=None,
    events: list[dict] | None = None,
    expected: dict | None = None,
) -> dict:
    """Everything the page shows, as plain data (also what ``kdq report --json`` prints).

    ``expected``: the expected leaderboard score (``Expected.as_json()``, kdq.course.scoring)."""
    folder = artifacts_dir(exp, settings)
    metrics = (runfolder.read_json(folder / runfolder.METRICS) if folder else None) or exp.metrics or {}
    done = (runfolder.read_json(folder / runfolder.DONE) if folder else None) or {}
    history = read_history(folder)
    teacher_pc = metrics.get("teacher_per_class_f1") or metrics.get("teacher_probe_per_class_f1")
    timings = {
        "queued": fmt_time(exp.created_at),
        "last change": fmt_time(exp.updated_at),
        "training (s)": metrics.get("seconds") or done.get("seconds"),
        "seconds per epoch (mean)": round(sum(float(r["seconds"]) for r in history) / len(history), 3)
        if history and all(r.get("seconds") for r in history)
        else None,
        "epochs run": metrics.get("epochs_run"),
        "best epoch": metrics.get("best_epoch"),  # recorded 1-based
    }
    return {
        "id": exp.id,
        "name": exp.name,
        "stage": str(exp.stage),
        "backend": exp.backend,
        "attempt": exp.attempt,
        "run_id": exp.run_id,
        "refit_of": exp.refit_of,
        "error": exp.error,
        "folder": str(folder) if folder else None,
        "spec": flatten(json.loads(exp.spec_json)),
        "metrics": metrics,
        "history": history,
        "teacher_per_class_f1": teacher_pc,
        "from_scratch": exp.from_scratch,  # asked for pretrained weights, they did not load
        "timings": timings,
        "server": {"score": exp.server_score, "rank": exp.server_rank, "attempt": exp.server_attempt},
        "expected_score": expected,
        "submissions": submissions,
        "timeline": [
            {"time": fmt_time(e["ts"]), "event": e["kind"], "message": e["message"] or ""}
            for e in events or []
        ],
    }


SCALARS = (
    "val_f1",
    "holdout_f1",
    "holdout_f1_ci",
    "n_holdout",
    "val_acc",
    "teacher_probe_f1",
    "model_mb",
    "params",
    "n_train",
    "n_val",
    "device",
    "torch_version",
    "val_f1_before_bias",
    "dataset_fingerprint",
)

SUB_COLS = (
    "id",
    "state",
    "attempt",
    "server_status",
    "score",
    "model_size",
    "rank",
    "message",
    "created",
    "posted",
)


def submissions_for(store, exp_id: int) -> list[dict]:
    from kdq.course.ledger import Ledger

    rows = Ledger(store).submissions_of(exp_id)
    return [
        {**r, "created": fmt_time(r.get("created_at")), "posted": fmt_time(r.get("posted_at"))} for r in rows
    ]


def write_experiment_report(
    exp,
    out_dir: Path,
    submissions: list[dict],
    settings=None,
    events: list[dict] | None = None,
    expected: dict | None = None,
    calibration: list | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and its figures; returns the page's path. ``calibration``: every graded
    submission (``kdq.course.scoring.TrustPoint``), on the trust chart with this experiment marked."""
    out_dir = Path(out_dir)
    d = experiment_data(exp, submissions, settings, events, expected)
    m = d["metrics"]
    figures: dict[str, str | None] = {
        "curves": None,
        "confusion": None,
        "per_class": None,
        "calibration": None,
    }
    if calibration:
        plots.trust(calibration, out_dir / "calibration.png", current=exp.id)
        figures["calibration"] = "calibration.png"
    if d["history"]:
        plots.training_curves(d["history"], out_dir / "curves.png")
        figures["curves"] = "curves.png"
    if m.get("confusion") and m.get("classes"):
        plots.confusion(m["confusion"], m["classes"], out_dir / "confusion.png")
        figures["confusion"] = "confusion.png"
    if m.get("per_class_f1"):
        series = {"student": m["per_class_f1"]}
        if d["teacher_per_class_f1"]:
            series["teacher probe"] = d["teacher_per_class_f1"]
        plots.per_class_f1(series, out_dir / "per_class_f1.png")
        figures["per_class"] = "per_class_f1.png"
    scalars = [
        (k, fmt_interval(m[k]) if k.endswith("_ci") else m[k]) for k in SCALARS if m.get(k) is not None
    ]
    html = render(
        "experiment.html",
        title=f"Experiment {exp.id}: {exp.name}",
        d=d,
        figures=figures,
        scalars=scalars,
        sub_cols=SUB_COLS,
    )
    (out_dir / "report.json").parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(d, indent=2, default=str))
    return write_page(out_dir, html)
