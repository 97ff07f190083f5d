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

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222 }
h1 { font-size: 1.5em } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd }
table { border-collapse: collapse; margin: .5em 0 } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left }
th { background: #f4f4f4 } td.num { text-align: right; font-variant-numeric: tabular-nums }
img { max-width: 100%; border: 1px solid #eee } .warn { color: #b00 } .muted { color: #777 }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; white-space: pre-wrap }
</style></head><body>
<h1>{{ title }}</h1>
{% block body %}{% endblock %}
<p class="muted">written by kdq on {{ now }}</p>
</body></html>
"""


def render(template: str, **context: Any) -> str:
    """Render a page template (which ``{% extends "base.html" %}``); every value is HTML-escaped."""
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"base.html": BASE, "page.html": template}),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.filters["when"] = fmt_time
    return env.get_template("page.html").render(now=fmt_time(datetime.now().timestamp()), **context)


def fmt_num(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


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
    """Where this experiment's metrics.json / history.csv are: fetched artifacts, else the local run folder."""
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


def experiment_data(exp, submissions: list[dict], settings=None, events: list[dict] | None = None) -> dict:
    """Everything the page shows, as plain data (also what ``kdq report --json`` prints)."""
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
        "best epoch": (metrics["best_epoch"] + 1) if isinstance(metrics.get("best_epoch"), int) else None,
    }
    return {
        "id": exp.id,
        "name": exp.name,
        "stage": str(exp.stage),
        "backend": exp.backend,
        "attempt": exp.attempt,
        "run_id": exp.run_id,
        "error": exp.error,
        "folder": str(folder) if folder else None,
        "spec": flatten(json.loads(exp.spec_json)),
        "metrics": metrics,
        "history": history,
        "teacher_per_class_f1": teacher_pc,
        "timings": timings,
        "server": {"score": exp.server_score, "rank": exp.server_rank, "attempt": exp.server_attempt},
        "submissions": submissions,
        "timeline": [
            {"time": fmt_time(e["ts"]), "event": e["kind"], "message": e["message"] or ""}
            for e in events or []
        ],
    }


SCALARS = (
    "val_f1",
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

EXPERIMENT_PAGE = """{% extends "base.html" %}{% block body %}
<p>stage <b>{{ d.stage }}</b> · backend {{ d.backend }} · attempt {{ d.attempt }} · run {{ d.run_id or "" }}</p>
{% if d.error %}<pre class="warn">{{ d.error }}</pre>{% endif %}
{% if not d.folder %}<p class="warn">No artifacts found (metrics.json, history.csv): the experiment has not finished
training, or its artifacts were not fetched.</p>{% endif %}
<h2>Metrics</h2>
<table>{% for k, v in scalars %}<tr><th>{{ k }}</th><td class="num">{{ v|num }}</td></tr>{% endfor %}</table>
{% if figures.curves %}<h2>Training curves</h2><img src="{{ figures.curves }}" alt="training curves">{% endif %}
{% if figures.confusion %}<h2>Confusion matrix (validation, best epoch)</h2><img src="{{ figures.confusion }}" alt="confusion matrix">{% endif %}
{% if figures.per_class %}<h2>Per-class F1{% if d.teacher_per_class_f1 %} (student and teacher probe){% endif %}</h2>
<img src="{{ figures.per_class }}" alt="per-class F1">
{% if not d.teacher_per_class_f1 %}<p class="muted">metrics.json has no per-class F1 of the teacher probe.</p>{% endif %}{% endif %}
<h2>Course server</h2>
{% if d.server.score is none and not d.submissions %}<p class="muted">Not submitted.</p>{% else %}
<table><tr><th>score</th><td class="num">{{ d.server.score|num }}</td></tr><tr><th>rank</th><td class="num">{{ d.server.rank|num }}</td></tr>
<tr><th>attempt</th><td class="num">{{ d.server.attempt|num }}</td></tr></table>
{% if d.submissions %}<table><tr>{% for c in sub_cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for s in d.submissions %}<tr>{% for c in sub_cols %}<td>{{ s[c]|num }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}{% endif %}
<h2>Timings</h2>
<table>{% for k, v in d.timings.items() %}<tr><th>{{ k }}</th><td class="num">{{ v|num }}</td></tr>{% endfor %}</table>
{% if d.timeline %}<h2>Timeline</h2>
<table><tr><th>time</th><th>event</th><th>message</th></tr>
{% for e in d.timeline %}<tr><td>{{ e.time }}</td><td>{{ e.event }}</td><td>{{ e.message }}</td></tr>{% endfor %}</table>{% endif %}
<h2>Spec</h2>
<table>{% for k, v in d.spec.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{% endblock %}"""

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
    rows = list(store.db.query("select * from submissions where exp_id = ? order by id", [exp_id]))
    return [
        {**r, "created": fmt_time(r.get("created_at")), "posted": fmt_time(r.get("posted_at"))} for r in rows
    ]


def write_experiment_report(
    exp, out_dir: Path, submissions: list[dict], settings=None, events: list[dict] | None = None
) -> Path:
    """Write ``out_dir/index.html`` and its figures; returns the page's path."""
    out_dir = Path(out_dir)
    d = experiment_data(exp, submissions, settings, events)
    m = d["metrics"]
    figures: dict[str, str | None] = {"curves": None, "confusion": None, "per_class": None}
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
    scalars = [(k, m[k]) for k in SCALARS if m.get(k) is not None]
    html = render(
        EXPERIMENT_PAGE,
        title=f"Experiment {exp.id}: {exp.name}",
        d=d,
        figures=figures,
        scalars=scalars,
        sub_cols=SUB_COLS,
    )
    (out_dir / "report.json").parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(d, indent=2, default=str))
    return write_page(out_dir, html)
