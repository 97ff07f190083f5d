"""The expected leaderboard score of a model, the local → server calibration, the deadline (pure).

    score = 10 x E[server F1] - f(size in MiB)        E[server F1] = holdout F1 + calibration offset

The interval comes from the holdout F1's 90% bootstrap interval (``holdout_f1_ci``); the chance that
one model beats another reads each score as a normal whose spread is that interval's (plus the
calibration's spread once there is one, and a fitted size factor's error). Older runs without a
holdout use ``val_f1`` and no interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean, stdev
from typing import Literal

from kdq.course.size_factor import SizeFactor

norm = NormalDist()  # the standard normal (stdlib: importing scipy.stats costs `kdq status` ~0.9 s)
Z90 = norm.inv_cdf(0.95)  # a 90% two-sided interval is mean ± Z90 sigma
MIN_PAIRS = 2  # graded submissions needed before the calibration is used


@dataclass(frozen=True)
class Calibration:
    """Server F1 minus local F1 over our graded submissions: ``pairs`` are (local, server)."""

    pairs: tuple[tuple[float, float], ...] = ()

    @property
    def active(self) -> bool:
        return len(self.pairs) >= MIN_PAIRS

    @property
    def offset(self) -> float:
        return fmean(s - loc for loc, s in self.pairs) if self.active else 0.0

    @property
    def spread(self) -> float:
        return stdev(s - loc for loc, s in self.pairs) if self.active else 0.0

    def text(self) -> str:
        if not self.active:
            return f"no calibration yet ({len(self.pairs)} graded of {MIN_PAIRS} needed)"
        return f"server F1 = local {self.offset:+.4f} ± {self.spread:.4f} ({len(self.pairs)} graded)"


NO_CALIBRATION = Calibration()


@dataclass(frozen=True)
class Expected:
    score: float
    low: float
    high: float
    sigma: float  # the score's standard deviation, in points
    f1: float  # E[server F1]
    size_term: float
    holdout: bool  # False: from val_f1, "no holdout"

    def text(self) -> str:
        if self.low == self.high:
            return f"{self.score:.3f} (no holdout)" if not self.holdout else f"{self.score:.3f}"
        return f"{self.score:.3f} [{self.low:.3f}, {self.high:.3f}]" + (
            "" if self.holdout else " (no holdout)"
        )

    def short(self) -> str:
        """``2.73 [1.2, 4.3]``: the form of tables (status, results, search status, the night page)."""
        return (
            f"{self.score:.2f}"
            if self.low == self.high
            else f"{self.score:.2f} [{self.low:.1f}, {self.high:.1f}]"
        )

    def as_json(self) -> dict:
        return {
            "score": round(self.score, 4),
            "interval": [round(self.low, 4), round(self.high, 4)],
            "server_f1": round(self.f1, 4),
            "size_term": round(self.size_term, 4),
            "holdout": self.holdout,
        }


def expected_score(
    f1: float,
    ci: Sequence[float] | None,
    size_mib: float,
    factor: SizeFactor,
    calibration: Calibration = NO_CALIBRATION,
    *,
    holdout: bool = True,
) -> Expected:
    """``f1``: the holdout F1 (or ``val_f1`` with ``holdout=False``); ``ci``: its 90% interval. A fitted
    size factor's error (the rows' scatter around the fit, in points) widens both, in quadrature."""
    off, term, err = calibration.offset, factor(size_mib), factor.fit_error or 0.0
    lo, hi = (float(ci[0]), float(ci[1])) if ci else (f1, f1)
    sigma_f1 = math.hypot((hi - lo) / (2 * Z90), calibration.spread)
    score = 10 * (f1 + off) - term
    return Expected(
        score=score,
        low=score - math.hypot(10 * (f1 - lo), Z90 * err),
        high=score + math.hypot(10 * (hi - f1), Z90 * err),
        sigma=math.hypot(10 * sigma_f1, err),
        f1=f1 + off,
        size_term=term,
        holdout=holdout,
    )


def chance_better(candidate: Expected, score: float, sigma: float = 0.0) -> float:
    """P(candidate's score > a score ~ N(score, sigma²)); a sure answer when neither is uncertain."""
    spread = math.hypot(candidate.sigma, sigma)
    if spread == 0:
        return 1.0 if candidate.score > score else 0.0
    return float(norm.cdf((candidate.score - score) / spread))


# ---------------------------------------------------------------- the deadline

Phase = Literal["open", "final", "closing", "over"]
FINAL_WINDOWS = 4  # the last windows before closing: only the best model by expected score goes
MARGIN_S = 60.0  # the status poll and the server's whole-second clock: look a little early


@dataclass(frozen=True)
class Deadline:
    """``at``: the deadline (epoch seconds). The submission graded last before it is what counts."""

    at: float
    interval_s: float
    grading_s: float  # the longest grading delay seen so far (the interval when none was seen)

    @property
    def reserve_s(self) -> float:
        """Time to see a risky submission graded, then put the best one back and have it graded."""
        return max(self.interval_s, self.grading_s) + self.grading_s + MARGIN_S

    @property
    def closing_at(self) -> float:
        return self.at - self.reserve_s

    @property
    def final_at(self) -> float:
        return self.closing_at - FINAL_WINDOWS * self.interval_s

    def phase(self, now: float) -> Phase:
        if now >= self.at:
            return "over"
        if now >= self.closing_at:
            return "closing"
        return "final" if now >= self.final_at else "open"
