"""The size factor estimated from leaderboard rows, and its prior."""

import numpy as np
import pytest

from kdq.course.models import LeaderboardRow
from kdq.course.size_factor import DEFAULT_PRIOR, assumed, fit, parse_prior


def capped(size: float) -> float:
    """The previous homework's term: 1 point, the size normalised between 1 and 23 MiB."""
    return (min(max(size, 1.0), 23.0) - 1.0) / 22.0


def board(sizes, f1s, term=capped):
    """Rows as the page prints them: score with 3 decimals, F1 with 4, size with 2."""
    return [
        LeaderboardRow(team=f"t{i}", f1=round(f1, 4), score=round(10 * f1 - term(s), 3), size_mb=round(s, 2))
        for i, (s, f1) in enumerate(zip(sizes, f1s))
    ]


def test_the_fit_recovers_a_hidden_capped_factor_from_rounded_rows():
    rng = np.random.default_rng(0)
    sizes = rng.uniform(0.5, 24.0, 30)
    factor = fit(board(sizes, rng.uniform(0.5, 0.9, 30)), snapshot_at=123.0)
    assert (
        not factor.assumed and factor.method == "fitted (isotonic, 30 rows)" and factor.snapshot_at == 123.0
    )
    for size in (2.0, 10.0, 20.0):
        assert factor(size) == pytest.approx(capped(size), abs=0.05)
    assert factor.fit_error < 0.01


def test_beyond_the_sizes_on_the_board_the_fit_follows_the_priors_slope():
    rng = np.random.default_rng(10)
    sizes = rng.uniform(4.0, 18.0, 12)  # nobody below 4 MiB or above 18 MiB
    factor = fit(board(sizes, rng.uniform(0.5, 0.9, 12)), prior="1:0,23:1")
    for size in (2.0, 20.0):
        assert factor(size) == pytest.approx(capped(size), abs=0.01)
    flat = fit(board(sizes, rng.uniform(0.5, 0.9, 12)), prior="1:0,2:0")  # a prior flat out there
    assert flat(2.0) == pytest.approx(flat.points[0][1], abs=1e-9)


def test_the_fit_is_monotone_even_when_rounding_makes_the_rows_zigzag():
    sizes = np.linspace(1.0, 23.0, 12)
    factor = fit(board(sizes, np.full(12, 0.7), term=lambda s: 0.001 * s))  # below the rounding
    values = [factor(s) for s in np.linspace(0, 25, 50)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_too_few_rows_fall_back_to_the_prior_labelled_assumed():
    rows = board([2.0, 10.0], [0.8, 0.8]) + [LeaderboardRow(team="no f1", score=7.0, size_mb=3.0)]
    factor = fit(rows)
    assert factor.assumed and "2 leaderboard rows" in factor.method and factor.fit_error is None
    assert factor(1.0) == 0.0 and factor(25.0) == 1.0 and factor(13.0) == pytest.approx(0.5)
    assert factor(40.0) == 1.0  # flat beyond the ends


def test_the_prior_is_a_setting_of_size_points_pairs():
    assert parse_prior(DEFAULT_PRIOR) == ((1.0, 0.0), (25.0, 1.0))
    assert assumed("25:2, 1:0")(13.0) == pytest.approx(1.0)
    for bad, says in (
        ("1-0,25-1", "is not MiB:points"),
        ("5:1", "two different sizes"),
        ("1:1,25:0", "fall"),
    ):
        with pytest.raises(ValueError, match=says):
            parse_prior(bad)


def test_as_json_gives_points_and_method():
    data = assumed().as_json()
    assert data["method"].startswith("assumed") and data["assumed"] is True
    assert {"size_mib": 25.0, "points": 1.0} not in data["points"]
    assert {"size_mib": 1.0, "points": 0.0} in data["points"]


def test_kdq_leaderboard_json_reports_the_stand_ins_hidden_factor(make_server, token, home, monkeypatch):
    """30 teams on a stand-in whose scores hide a capped size term: the fit is within 0.05 points."""
    import json
    from datetime import UTC, datetime
    from pathlib import Path

    import structlog
    from typer.testing import CliRunner

    from kdq.cli.main import app
    from kdq.course.fake_server.course import Submission

    srv = make_server(size_curve="capped", size_factor=1.0)
    rng = np.random.default_rng(1)
    for i, (size, f1) in enumerate(zip(rng.uniform(0.8, 24.0, 30), rng.uniform(0.4, 0.9, 30))):
        sub = Submission(
            f"team {i}", 1, "m.pt", Path("m.pt"), round(size, 4), datetime.now(UTC), "successful"
        )
        sub.f1, sub.score = f1, round(10 * f1 - srv.course.size_term(sub.size_mb), 4)
        srv.course.submissions.append(sub)
    monkeypatch.setenv("KDQ_SERVER_URL", srv.url)
    monkeypatch.setenv("KDQ_TOKEN", token)
    result = CliRunner().invoke(app, ["leaderboard", "--json"])
    structlog.reset_defaults()
    assert result.exit_code == 0, result.output
    factor = json.loads(result.stdout)["size_factor"]
    assert factor["method"] == "fitted (isotonic, 30 rows)" and not factor["assumed"]
    at = {p["size_mib"]: p["points"] for p in factor["points"]}
    for size in (2.0, 10.0, 20.0):
        assert abs(at[size] - srv.course.size_term(size)) < 0.05, (size, at[size])
    table = CliRunner().invoke(app, ["leaderboard"])
    structlog.reset_defaults()
    assert "size factor, fitted (isotonic, 30 rows)" in table.stdout and "10 MiB 0.4" in table.stdout


def test_the_settings_default_is_the_prior_and_a_bad_one_is_one_line(home, monkeypatch):
    from kdq.settings import SettingsError, get_settings

    assert get_settings().size_factor == DEFAULT_PRIOR
    monkeypatch.setenv("KDQ_SIZE_FACTOR", "1-0")
    with pytest.raises(
        SettingsError, match=r"^bad setting in .*KDQ_SIZE_FACTOR='1-0': '1-0' is not MiB:points"
    ):
        get_settings()


def test_the_curve_reads_like_numpy_interp_inside_and_flat_beyond_its_ends():
    import random

    from kdq.course.size_factor import _interp

    rng = random.Random(0)
    for _ in range(500):
        xs = sorted(rng.sample(range(100), rng.randint(1, 6)))
        points = tuple((float(x), rng.uniform(-3, 3)) for x in xs)
        x = float(rng.choice(xs)) if rng.random() < 0.2 else rng.uniform(-10, 110)
        want = np.interp(x, [p[0] for p in points], [p[1] for p in points])
        assert _interp(points, x) == pytest.approx(float(want), abs=1e-12)
