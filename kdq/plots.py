"""Every figure kdq draws, as PNG files. Matplotlib with the Agg backend (no display needed).

Each function takes plain data and a path, draws one figure, saves it and closes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 110


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _short(name: str, n: int = 28) -> str:
    """Shortened, with ``$`` escaped so matplotlib never reads a user's name as mathtext."""
    name = name if len(name) <= n else name[: n - 1] + "…"
    return name.replace("$", r"\$")


# ---------------------------------------------------------------- the dataset


def class_counts(counts: dict[str, int], weights: dict[str, float], path: Path) -> Path:
    """Images per class (bars) with the class weight the trainer would use (points, right axis)."""
    names = list(counts)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    y = np.arange(len(names))
    ax.barh(y, [counts[n] for n in names], color="#4c72b0")
    ax.set_yticks(y, [_short(n, 40) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax2 = ax.twiny()
    ax2.plot([weights.get(n, 0) for n in names], y, "o", color="#dd8452", label="class weight")
    ax2.set_xlabel("class weight (inverse frequency, mean 1)", color="#dd8452")
    ax2.set_xlim(left=0)
    return _save(fig, path)


def image_sizes(widths: Sequence[int], heights: Sequence[int], path: Path) -> Path:
    """Width against height (one point per image) and the aspect-ratio histogram."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    a.scatter(widths, heights, s=6, alpha=0.4)
    a.set_xlabel("width (px)")
    a.set_ylabel("height (px)")
    a.set_title("image sizes")
    b.hist(np.asarray(widths, float) / np.asarray(heights, float), bins=30, color="#55a868")
    b.set_xlabel("aspect ratio (width / height)")
    b.set_ylabel("images")
    b.set_title("aspect ratios")
    return _save(fig, path)


# ---------------------------------------------------------------- one experiment


def training_curves(history: list[dict], path: Path) -> Path:
    """Loss components, and validation macro-F1 / accuracy, per epoch (from history.csv rows)."""
    epochs = [int(float(r["epoch"])) for r in history]  # history.csv counts from 1

    def col(name: str) -> list[float] | None:
        vals = [r.get(name) for r in history]
        if any(v in (None, "") for v in vals):
            return None
        vals = [float(v) for v in vals]
        return vals if any(vals) else None

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in ("loss", "ce", "kd", "embed"):
        if (vals := col(name)) is not None:
            a.plot(epochs, vals, marker="o", ms=3, label=name, lw=2.5 if name == "loss" else 1.2)
    a.set_xlabel("epoch")
    a.set_title("training loss (per component)")
    a.legend()
    for name, label in (
        ("val_f1", "val macro-F1"),
        ("val_acc", "val accuracy"),
        ("train_acc", "train accuracy"),
    ):
        if (vals := col(name)) is not None:
            b.plot(epochs, vals, marker="o", ms=3, label=label, ls="--" if name == "train_acc" else "-")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    for axis in (a, b):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.set_title("validation")
    b.legend()
    return _save(fig, path)


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> Path:
    """Counts, coloured by the share of each true class (rows sum to 1 in colour)."""
    m = np.asarray(matrix, float)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    int(m[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    labels = [_short(c, 22) for c in classes]
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _save(fig, path)


def per_class_f1(series: dict[str, dict[str, float]], path: Path) -> Path:
    """Grouped bars: per-class F1 of each series (e.g. {"student": {...}, "teacher probe": {...}})."""
    classes = list(next(iter(series.values())))
    k = len(series)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(classes)), 4.2))
    x = np.arange(len(classes))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(
            x + (i - (k - 1) / 2) * width, [vals.get(c) or 0 for c in classes], width, label=_short(name, 30)
        )
    ax.set_xticks(x, [_short(c, 22) for c in classes], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.legend(fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------- many experiments


def trust_figure(points: Sequence, current: int | None = None):
    """The trust chart: our holdout F1 (its 90% interval as a bar) against the server's F1 for every
    graded submission (``kdq.course.scoring.TrustPoint``); on the y = x line the holdout is trusted, and
    the calibration is how far the points sit from it. ``current``: the experiment this page is about."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    if points:
        x = np.array([p.f1 for p in points], float)
        y = np.array([p.server_f1 for p in points], float)
        err = np.array([[p.f1 - p.ci[0], p.ci[1] - p.f1] if p.ci else [0.0, 0.0] for p in points], float).T
        ax.errorbar(x, y, xerr=err, fmt="o", ms=5, capsize=3, color="tab:blue", label="graded submissions")
        for p in points:
            ax.annotate(
                _short(p.label, 20),
                (p.f1, p.server_f1),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        mine = [p for p in points if p.exp_id == current]
        if mine:
            ax.scatter(
                [p.f1 for p in mine],
                [p.server_f1 for p in mine],
                s=140,
                marker="*",
                color="tab:red",
                zorder=3,
                label=f"this experiment ({current})",
            )
        lo, hi = min(x.min(), y.min(), *(p.ci[0] for p in points if p.ci)), max(x.max(), y.max())
        pad = max(0.02, (hi - lo) * 0.1)
    else:
        lo, hi, pad = 0.0, 1.0, 0.0
        ax.text(0.5, 0.5, "no graded submission yet", ha="center", va="center", transform=ax.transAxes)
    edge = [lo - pad, hi + pad]
    ax.plot(edge, edge, "--", color="grey", lw=1, label="y = x (the holdout is right)")
    ax.set_xlim(edge)
    ax.set_ylim(edge)
    ax.set_xlabel("our holdout macro-F1 (90% interval; val F1 where no holdout)")
    ax.set_ylabel("the server's macro-F1")
    ax.set_title("can the holdout be trusted? (graded submissions)")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def trust(points: Sequence, path: Path, current: int | None = None) -> Path:
    """``trust_figure``, saved: the one trust chart of the report, the comparison and ``results --plot``."""
    return _save(trust_figure(points, current), path)


def metric_bars(names: list[str], metrics: dict[str, list[float | None]], path: Path) -> Path:
    """Side-by-side bars: one group per metric, one bar per experiment."""
    k = len(names)
    width = 0.8 / max(k, 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics)), 4))
    x = np.arange(len(metrics))
    for i, name in enumerate(names):
        ax.bar(
            x + (i - (k - 1) / 2) * width,
            [(v[i] or 0) for v in metrics.values()],
            width,
            label=_short(name, 30),
        )
    ax.set_xticks(x, list(metrics))
    ax.legend(fontsize=8)
    return _save(fig, path)
