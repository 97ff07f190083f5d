"""`kdq report`, `kdq compare --html` and `kdq results --plot` draw the one trust chart from the same
points: every graded submission's holdout F1 and interval against the server's F1."""

from __future__ import annotations

from cli_helpers import fill, row
from typer.testing import CliRunner

from kdq import plots
from kdq.cli.main import app


def test_report_compare_and_results_draw_the_same_trust_chart(settings, store, tmp_path, monkeypatch):
    from kdq.course.ledger import Ledger

    metrics = {"val_f1": 0.8, "holdout_f1": 0.78, "holdout_f1_ci": [0.7, 0.85], "model_mb": 2.0}
    a, b = fill(store, [{**row(f"m{i}", "done", 6, 0.8), "metrics": metrics} for i in range(2)])
    Ledger(store).open_submission(a, attempt=1, state="successful", score=7.5, model_size=2.0)
    drawn = []
    monkeypatch.setattr(plots, "trust", lambda points, path, current=None: drawn.append((points, current)))
    runner = CliRunner()
    for args in (
        ["report", str(b), "--out", str(tmp_path / "r")],
        ["compare", str(a), str(b), "--html", str(tmp_path / "c")],
        ["results", "--plot", str(tmp_path / "t.png")],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
    assert [c for _, c in drawn] == [b, None, None]  # the report marks its own experiment
    [points] = {tuple(p) for p, _ in drawn}
    [point] = points
    assert point.exp_id == a and point.f1 == 0.78 and point.ci == (0.7, 0.85)
    assert abs(point.server_f1 - (7.5 + 1 / 24) / 10) < 1e-9  # the score plus the size factor, over 10
