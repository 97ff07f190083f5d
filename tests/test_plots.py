"""The one trust chart: holdout F1 (with its interval) against the server's F1, the y = x line, the
current experiment marked; and every page that shows it draws it from the same points."""

from __future__ import annotations

from matplotlib.container import ErrorbarContainer

from kdq import plots
from kdq.course.scoring import TrustPoint

POINTS = [
    TrustPoint(1, "1 #2", 0.80, (0.75, 0.85), 0.78),
    TrustPoint(2, "2 #3", 0.60, None, 0.50),
    TrustPoint(3, "3 #4", 0.70, (0.66, 0.74), 0.71),
]


def test_the_trust_chart_has_the_diagonal_the_intervals_and_the_current_experiment():
    fig = plots.trust_figure(POINTS, current=2)
    [ax] = fig.axes
    assert any(list(line.get_xdata()) == list(line.get_ydata()) for line in ax.lines), "no y = x line"
    [bars] = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert bars.has_xerr  # the holdout intervals
    assert "holdout" in ax.get_xlabel() and "server" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("this experiment" in t and "2" in t for t in legend), legend
    assert not any("r =" in t for t in legend)  # no fit through a handful of points
