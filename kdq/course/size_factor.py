"""The leaderboard's size term, ``f(size) = 10 x F1 - score``, estimated from the board itself (pure).

The course does not publish how model size enters the score. Every leaderboard row that shows both a
weighted score and an F1 gives one point of the curve; a monotone (isotonic) fit in size, read with
linear interpolation between its steps and the prior's slope beyond the sizes seen, is the estimate.
With fewer than ``MIN_ROWS`` usable rows kdq falls back to a prior (``KDQ_SIZE_FACTOR``), labelled
"assumed".

    factor = fit(board.rows, prior=parse_prior("1:0,25:1"), snapshot_at=ts)
    factor(4.2)                # points taken off a 4.2 MiB model's score
    factor.method              # "fitted (isotonic, 31 rows)" or "assumed (KDQ_SIZE_FACTOR)"
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kdq.settings import DEFAULT_PRIOR, parse_prior  # KDQ_SIZE_FACTOR's syntax, checked in settings

MIN_ROWS = 5  # fewer usable rows than this: the prior
SHOWN_AT_MIB = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 23.0)  # where `kdq leaderboard` prints the curve
# Scores are printed with 3 decimals and F1 with 4: one row's f(size) is off by up to this much.
ROUNDING = 0.0005 + 10 * 0.00005


@dataclass(frozen=True)
class SizeFactor:
    """A monotone curve through ``points`` ((MiB, points) pairs); beyond its ends it follows the slope
    of ``beyond`` (the prior, for a fit: no row says what lies there), else it is flat."""

    points: tuple[tuple[float, float], ...]
    method: str  # "fitted (...)" or "assumed (...)"
    fit_error: float | None = None  # RMS of the rows around the fit (points); widens expected scores
    rows: int = 0  # leaderboard rows the fit used
    snapshot_at: float | None = None  # the leaderboard snapshot it came from (its time)
    beyond: tuple[tuple[float, float], ...] | None = None

    @property
    def assumed(self) -> bool:
        return self.method.startswith("assumed")

    def __call__(self, size_mib: float) -> float:
        value = _interp(self.points, size_mib)
        lo, hi = self.points[0][0], self.points[-1][0]
        if self.beyond and not lo <= size_mib <= hi:
            edge = lo if size_mib < lo else hi
            value += _interp(self.beyond, size_mib) - _interp(self.beyond, edge)
        return value

    def table(self, sizes: Sequence[float] = SHOWN_AT_MIB) -> list[tuple[float, float]]:
        """The curve at a few sizes, for people."""
        return [(s, round(self(s), 4)) for s in sizes]

    @classmethod
    def from_json(cls, data: dict) -> SizeFactor:
        """The inverse of ``as_json``."""
        points = tuple((float(s), float(v)) for s, v in data["knots"])
        beyond = tuple((float(s), float(v)) for s, v in data["beyond"]) if data.get("beyond") else None
        return cls(points, data["method"], data["fit_error"], data["rows"], data["snapshot_at"], beyond)

    def as_json(self) -> dict:
        return {
            "method": self.method,
            "assumed": self.assumed,
            "points": [{"size_mib": s, "points": v} for s, v in self.table()],
            "knots": [list(p) for p in self.points],
            "fit_error": self.fit_error,
            "rows": self.rows,
            "snapshot_at": self.snapshot_at,
            "beyond": [list(p) for p in self.beyond] if self.beyond else None,
        }


def assumed(prior: str | tuple[tuple[float, float], ...] = DEFAULT_PRIOR, why: str = "") -> SizeFactor:
    points = parse_prior(prior) if isinstance(prior, str) else tuple(prior)
    return SizeFactor(points=points, method="assumed (KDQ_SIZE_FACTOR" + (f"; {why})" if why else ")"))


def observations(rows: Iterable) -> list[tuple[float, float]]:
    """(size MiB, 10 x F1 - score) for every row that shows all three numbers."""
    out = []
    for row in rows:
        f1, score, size = _get(row, "f1"), _get(row, "score"), _get(row, "size_mb")
        if f1 is not None and score is not None and size is not None and size > 0:
            out.append((float(size), 10.0 * float(f1) - float(score)))
    return out


def fit(
    rows: Iterable,
    prior: str | tuple[tuple[float, float], ...] = DEFAULT_PRIOR,
    *,
    snapshot_at: float | None = None,
    min_rows: int = MIN_ROWS,
) -> SizeFactor:
    """The size factor from leaderboard rows (``LeaderboardRow`` or dicts), or the prior if too few."""
    obs = observations(rows)
    if len(obs) < min_rows or len({s for s, _ in obs}) < 2:
        return assumed(prior, why=f"{len(obs)} leaderboard rows with score, F1 and size; {min_rows} needed")
    import numpy as np  # only here: settings validation and `kdq status` import this module
    from sklearn.isotonic import IsotonicRegression

    x, y = np.array(obs).T
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, y)
    knots = tuple((float(a), float(b)) for a, b in zip(iso.X_thresholds_, iso.y_thresholds_))
    if len(knots) == 1:  # every row the same size
        knots = (knots[0], (knots[0][0] + 1.0, knots[0][1]))
    residual = y - iso.predict(x)
    return SizeFactor(
        points=knots,
        method=f"fitted (isotonic, {len(obs)} rows)",
        fit_error=round(max(float(np.sqrt(np.mean(residual**2))), ROUNDING / 2), 6),
        rows=len(obs),
        snapshot_at=snapshot_at,
        beyond=parse_prior(prior) if isinstance(prior, str) else tuple(prior),
    )


def _interp(points: tuple[tuple[float, float], ...], x: float) -> float:
    """The piecewise-linear curve through ``points`` (sorted by size) at ``x``, flat beyond its ends."""
    i = bisect_right([p[0] for p in points], x)
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _get(row, name: str):
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)
