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


def two_sided(ctx, trials):  # noqa: F811 (the fixture)
    from kdq.specfile import expand

    from .test_driver import search_doc

    raw = search_doc(trials)
    raw["search"]["objective"] = "f1_and_size"
    ctx.store.add([("s.toml", s) for s in expand(raw, "s.toml")])
    run_search(ctx)


def test_status_of_a_two_sided_search_shows_its_pareto_front_instead_of_one_best(ctx):  # noqa: F811
    import json

    from .test_driver import pareto_front, study_of

    two_sided(ctx, trials=8)
    exps = {e.id: e for e in ctx.store.list()}
    front = pareto_front({i: (e.metrics["holdout_f1"], e.metrics["model_mb"]) for i, e in exps.items()})
    r = CliRunner().invoke(app, ["search", "status", "s", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["objective"] == "f1_and_size" and s["best"] is None and s["by_state"]["complete"] == 8
    assert {f["experiment"] for f in s["front"]} == front and set(s["importances"]) == {"train.lr"}
    assert {f["trial"] for f in s["front"]} == {t.number for t in study_of(ctx).best_trials}
    for f in s["front"]:
        e = exps[f["experiment"]]
        assert f["value"] == [e.metrics["holdout_f1"], e.metrics["model_mb"]]
        assert f["params"] == {"train.lr": e.spec.train.lr}
    assert sorted(f["value"][1] for f in s["front"]) == [f["value"][1] for f in s["front"]]  # small first
    r = CliRunner().invoke(app, ["search", "status", "s"], catch_exceptions=False)
    assert f"pareto front ({len(front)} trials" in r.stdout and "best:" not in r.stdout
    for f in s["front"]:
        assert f"experiment {f['experiment']}: F1 {f['value'][0]:.4f}, {f['value'][1]:.2f} MiB" in r.stdout


def test_report_of_a_two_sided_search_plots_the_pareto_front(ctx, tmp_path):  # noqa: F811
    two_sided(ctx, trials=4)
    out = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["search", "report", "s", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "Pareto front" in page and "Parallel coordinates" in page and "Optimization history" not in page
    assert page.count("data:image/png;base64,") == 2


def test_the_best_trial_shows_one_expected_score_and_labels_the_value_the_study_was_told(ctx):  # noqa: F811
    """`kdq search status` showed the study's value (an expected score told before later calibration) as
    "best … 6.3072" beside a different expected score in `kdq status`: one number, the other labelled."""
    enqueue(ctx.store, trials=3)
    run_search(ctx)
    r = CliRunner().invoke(app, ["search", "status"])
    assert r.exit_code == 0, r.output
    [line] = [x for x in r.stdout.splitlines() if x.startswith("best:")]
    assert "expected " in line and "told to the study at " in line, line
