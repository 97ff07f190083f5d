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


def local_vs_server(
    points: list[tuple[str, float, float]],
    path: Path,
    xlabel: str = "local validation macro-F1",
    ylabel: str = "server score",
) -> Path:
    """Local validation macro-F1 against the server's score: how far local validation can be trusted."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    if points:
        x = np.array([p[1] for p in points], float)
        y = np.array([p[2] for p in points], float)
        ax.scatter(x, y, s=30)
        for name, xi, yi in points:
            ax.annotate(_short(name, 20), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if len(points) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            slope, icept = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 2)
            r = np.corrcoef(x, y)[0, 1]
            rank = np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1]
            ax.plot(
                xs,
                slope * xs + icept,
                "--",
                color="grey",
                label=f"fit (n = {len(points)}): r = {r:.2f}, rank r = {rank:.2f}",
            )
            ax.legend()
    else:
        ax.text(
            0.5, 0.5, "no experiment has a server score yet", ha="center", va="center", transform=ax.transAxes
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("local validation vs. the server")
    return _save(fig, path)


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
