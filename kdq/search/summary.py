"""What ``kdq search status`` and ``kdq search report`` show: trials by state, the best so far, the budget
used, parameter importances, and Optuna's plots in one HTML page. Reads the store and the study only."""

from __future__ import annotations

import base64
import html
import io
import time
import warnings
from pathlib import Path
from typing import Any

from kdq.experiment import Experiment
from kdq.search import study as studies
from kdq.search.driver import VALIDATED, by_search, training_seconds
from kdq.search.space import TWO_SIDED
from kdq.search.spec import params_of

STYLE = "body{font-family:sans-serif;margin:2em} td,th{padding:2px 8px;border-bottom:1px solid #ddd}"


def searches(store) -> dict[str, list[Experiment]]:
    return by_search(store.list())


def summarize(store, root: Path, name: str, trials: list[Experiment]) -> dict[str, Any]:
    search = min(trials, key=lambda e: e.id).spec.search
    study = studies.load_study(root, name)
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)} if study else {}
    rows = []
    for e in sorted(trials, key=lambda e: (e.trial is None, e.trial, e.id)):
        t = frozen.get(e.trial)
        rows.append(
            {
                "trial": e.trial,
                "experiment": e.id,
                "name": e.name,
                "stage": str(e.stage),
                "study_state": t.state.name.lower() if t else None,
                "value": _value(t),
                "told_at": t.datetime_complete.timestamp() if t and t.datetime_complete else None,
                "epochs": (e.progress or {}).get("epoch", 0),
                "params": params_of(e.spec),
            }
        )
    done = [r for r in rows if r["study_state"] == "complete" and r["value"] is not None]
    shown = ("trial", "experiment", "name", "value", "told_at", "params")
    front = None
    if search.two_sided:  # no one best: the trials no other beats on both F1 and size, smallest first
        on_front = {t.number for t in study.best_trials} if study else set()
        front = [{k: r[k] for k in shown} for r in done if r["trial"] in on_front]
        front.sort(key=lambda r: (r["value"][1], -r["value"][0]))
    best = None if search.two_sided else max(done, key=lambda r: r["value"], default=None)
    now = time.time()
    used = sum(training_seconds(store.events(e.id), now) for e in trials) / 3600
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["stage"]] = counts.get(r["stage"], 0) + 1
    return {
        "name": name,
        "objective": search.objective,
        "pruner": search.pruner,
        "trials": search.trials,
        "parallel": search.parallel,
        "made": len(rows),
        "by_stage": counts,
        "by_state": {
            s: sum(1 for r in rows if r["study_state"] == s)
            for s in ("running", "complete", "pruned", "fail")
        },
        "validated": sum(1 for e in trials if e.stage in VALIDATED),
        "epochs": sum(r["epochs"] for r in rows),
        "gpu_hours": {"used": round(used, 4), "budget": search.gpu_hours},
        "best": best and {k: best[k] for k in shown},
        "front": front,
        "importances": _importances(study),
        "rows": rows,
    }


def _value(t) -> float | list[float] | None:
    """A study trial's objective: one number, or ``[F1, MiB]`` for the two-sided one."""
    if t is None or t.values is None:
        return None
    return t.values[0] if len(t.values) == 1 else list(t.values)


def _importances(study) -> dict[str, float]:
    """Optuna's parameter importances (its default evaluator, PED-ANOVA: which parameters set the best
    trials apart; for the two-sided objective, the trials nearest the front); empty until enough
    trials are complete."""
    import optuna
    from optuna.trial import TrialState

    if study is None or len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 3:
        return {}
    try:
        return {k: round(v, 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. one parameter never varied
        return {}


def write_report(root: Path, name: str, summary: dict[str, Any], out: Path) -> Path:
    """An HTML page: the summary table and Optuna's optimization-history and parallel-coordinate plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    study = studies.load_study(root, name)
    figures = []
    if summary["objective"] == TWO_SIDED:  # no history of one best, no per-epoch values: the front
        f1 = {"target": lambda t: t.values[0], "target_name": "holdout F1"}
        plots = (
            ("Pareto front", ovm.plot_pareto_front, {"target_names": ["holdout F1", "MiB"]}),
            ("Parallel coordinates (holdout F1)", ovm.plot_parallel_coordinate, f1),
        )
    else:
        plots = (
            ("Optimization history", ovm.plot_optimization_history, {}),
            ("Parallel coordinates", ovm.plot_parallel_coordinate, {}),
            ("Intermediate values (per epoch)", ovm.plot_intermediate_values, {}),
        )
    if study is not None and any(t.values is not None for t in study.get_trials(deepcopy=False)):
        for title, plot, kw in plots:
            with warnings.catch_warnings():  # Optuna marks its matplotlib backend experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = plot(study, **kw)
            buf = io.BytesIO()
            ax.figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            plt.close(ax.figure)
            figures.append((title, base64.b64encode(buf.getvalue()).decode()))
    esc = html.escape
    head = ["trial", "experiment", "stage", "told to the study", "epochs", "params"]
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{esc(str(v))}</td>"
            for v in (
                r["trial"],
                r["experiment"],
                r["stage"],
                f"{value_text(r['value'])} at {told_when(r)}" if r["value"] is not None else "",
                r["epochs"],
                r["params"],
            )
        )
        + "</tr>"
        for r in summary["rows"]
    )
    best, front = summary["best"], summary["front"]
    if front is not None:
        outcome = "".join(f"<li>{esc(front_line(r))}</li>" for r in front) or "<li>no complete trial yet</li>"
        outcome = f"<p>Pareto front (holdout F1 up, size down):</p><ul>{outcome}</ul>"
    elif best:
        outcome = (
            f"<p>Best: {esc(best['name'])} (experiment {best['experiment']}): "
            f"{esc(summary['objective'])} {best['value']:.4f} told to the study at {told_when(best)}, "
            f"{esc(str(best['params']))}</p>"
        )
    else:
        outcome = "<p>No complete trial yet.</p>"
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>search {esc(name)}</title>",
        f"<style>{STYLE}</style>",
        f"<h1>Search {esc(name)}</h1>",
        f"<p>{summary['made']} of {summary['trials']} trials, objective {esc(summary['objective'])}, "
        f"pruner {esc(summary['pruner'])}, {summary['epochs']} epochs, "
        f"{summary['gpu_hours']['used']:.3f} GPU hours.</p>",
        outcome,
        f"<p>Parameter importances: {esc(str(summary['importances'] or 'not enough trials yet'))}</p>",
        "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{rows}</table>",
        *(f"<h2>{esc(t)}</h2><img src='data:image/png;base64,{b}'>" for t, b in figures),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def value_text(value: float | list[float] | None) -> str:
    if isinstance(value, list):
        return f"F1 {value[0]:.4f}, {value[1]:.2f} MiB"
    return "" if value is None else f"{value:.4f}"


def best_line(r: dict[str, Any], objective: str, expected=None) -> str:
    """The best trial with one expected score, the one `kdq status` shows now (``expected``: its
    ``Expected``), and the value the study was told labelled with when: a calibration since moves the
    first, never the second."""
    now = f"expected {expected.text()} now; " if expected is not None else ""
    told = f"{objective} {value_text(r['value'])} told to the study at {told_when(r)}"
    return f"trial {r['trial']} = experiment {r['experiment']}: {now}{told} {r['params']}"


def told_when(r: dict[str, Any]) -> str:
    """When a trial's value was told to the study: ``22:27`` today, ``12-06 22:27`` before."""
    from datetime import datetime

    if not r.get("told_at"):
        return "?"
    at = datetime.fromtimestamp(r["told_at"])
    return at.strftime("%H:%M" if at.date() == datetime.now().date() else "%m-%d %H:%M")


def front_line(r: dict[str, Any]) -> str:
    """One trial of a Pareto front, as ``kdq search status`` and the report print it."""
    return f"trial {r['trial']} = experiment {r['experiment']}: {value_text(r['value'])} {r['params']}"
