"""Expected score, calibration, chance of being better."""

import pytest

from kdq.course.expected import Calibration, chance_better, expected_score
from kdq.course.size_factor import assumed

PRIOR = assumed()  # 0 at 1 MiB, 1 point at 25 MiB


def test_expected_score_is_ten_f1_minus_the_size_term_with_the_holdout_interval():
    e = expected_score(0.80, (0.78, 0.82), 13.0, PRIOR)
    assert e.score == pytest.approx(7.5) and (e.low, e.high) == pytest.approx((7.3, 7.7))
    assert e.text() == "7.500 [7.300, 7.700]" and e.as_json()["size_term"] == 0.5
    assert expected_score(0.8, None, 13.0, PRIOR, holdout=False).text() == "7.500 (no holdout)"


def test_the_calibration_needs_two_graded_submissions_then_shifts_the_score():
    one = Calibration(((0.80, 0.77),))
    assert not one.active and one.offset == 0.0 and "1 graded of 2" in one.text()
    two = Calibration(((0.80, 0.77), (0.70, 0.69)))
    assert two.active and two.offset == pytest.approx(-0.02) and two.spread == pytest.approx(0.0141, abs=1e-4)
    e = expected_score(0.80, (0.78, 0.82), 1.0, PRIOR, two)
    assert e.f1 == pytest.approx(0.78) and e.score == pytest.approx(7.8)
    assert e.sigma > expected_score(0.80, (0.78, 0.82), 1.0, PRIOR).sigma  # its spread adds doubt


def test_chance_better():
    a = expected_score(0.80, (0.78, 0.82), 1.0, PRIOR)
    assert chance_better(a, a.score, a.sigma) == pytest.approx(0.5)
    assert chance_better(a, a.score - 1.0) > 0.99
    sure = expected_score(0.80, None, 1.0, PRIOR)
    assert chance_better(sure, 7.99) == 1.0 and chance_better(sure, 8.0) == 0.0


def test_the_interval_widens_with_the_size_fits_error_never_below_the_scores_rounding():
    """A fitted size factor is known only to its rows' scatter (at least the board's rounding): the
    expected score's interval and spread carry it, so if_better never trusts the fit more than that."""
    from dataclasses import replace

    from kdq.course import size_factor

    line = [{"f1": 0.9, "score": 9.0 - 0.1 * s, "size_mb": float(s)} for s in range(1, 7)]  # an exact line
    fitted = size_factor.fit(line)
    assert fitted.fit_error == pytest.approx(size_factor.ROUNDING / 2)  # exact rows: still the rounding
    bare = expected_score(0.80, (0.78, 0.82), 3.0, replace(fitted, fit_error=None))
    e = expected_score(0.80, (0.78, 0.82), 3.0, fitted)
    assert e.score == bare.score and e.low < bare.low and e.high > bare.high and e.sigma > bare.sigma
    wide = expected_score(0.80, (0.78, 0.82), 3.0, replace(fitted, fit_error=0.5))
    assert wide.high - wide.low > 1.5  # 2 x 1.645 x 0.5 on top of the F1 interval's 0.4, in quadrature
