"""What `kdq search status` and `kdq search report` show, after a scripted search ran to the end."""

from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.search.summary import searches, summarize

from .test_driver import ctx, enqueue, run_search  # noqa: F401 (ctx is a fixture used by name)


def test_summary_counts_trials_and_finds_the_best(ctx):  # noqa: F811 (the fixture)
    enqueue(ctx.store, trials=6, pruner="successive_halving")
    run_search(ctx)
    [(name, trials)] = searches(ctx.store).items()
    s = summarize(ctx.store, ctx.settings.root, name, trials)
    assert s["made"] == 6 and s["by_state"]["complete"] + s["by_state"]["pruned"] == 6
    values = [r["value"] for r in s["rows"] if r["study_state"] == "complete"]
    assert s["best"]["value"] == max(values)
    assert s["epochs"] == sum(r["epochs"] for r in s["rows"]) > 0
    assert set(s["importances"]) <= {"train.lr"}


def test_report_writes_optunas_plots_into_one_html_page(ctx, tmp_path):  # noqa: F811
    enqueue(ctx.store, trials=4)
    run_search(ctx)
    out = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["search", "report", "s", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "Optimization history" in page and "Parallel coordinates" in page
    assert page.count("data:image/png;base64,") == 3
