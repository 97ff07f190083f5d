"""Comparing experiments: ``kdq results`` filters and sorting, ``kdq compare`` (table, JSON, HTML)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from test_report import finish, runs, tiny_spec, valid_png  # noqa: F401 — `runs` is a fixture
from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.compare import select, side_by_side, spec_diff

ROWS = [
    {"id": 1, "name": "hinton-t2", "stage": "done", "backend": "local", "val_f1": 0.61, "server_score": 5.5},
    {
        "id": 2,
        "name": "hinton-t4",
        "stage": "ready",
        "backend": "modal",
        "val_f1": 0.72,
        "server_score": None,
    },
    {"id": 3, "name": "dkd-base", "stage": "done", "backend": "modal", "val_f1": 0.55, "server_score": 5.1},
    {
        "id": 4,
        "name": "CE-baseline",
        "stage": "failed",
        "backend": "local",
        "val_f1": None,
        "server_score": None,
    },
]


def ids(rows):
    return [r["id"] for r in rows]


def test_select_filters():
    assert ids(select(ROWS, stage=["done"])) == [1, 3]
    assert ids(select(ROWS, stage=["done", "ready"])) == [1, 2, 3]
    assert ids(select(ROWS, name="hinton-*")) == [1, 2]  # glob
    assert ids(select(ROWS, name="BASE")) == [3, 4]  # substring, any case
    assert ids(select(ROWS, min_f1=0.6)) == [1, 2]


def test_select_sorts_both_ways_with_missing_values_last():
    assert ids(select(ROWS, sort="val_f1")) == [2, 1, 3, 4]
    assert ids(select(ROWS, sort="val_f1", descending=False)) == [3, 1, 2, 4]
    assert ids(select(ROWS, sort="server_score", descending=False)) == [3, 1, 2, 4]
    assert ids(select(ROWS, sort="name", descending=False)) == [4, 3, 1, 2]
    assert ids(select(ROWS, sort="val_f1", limit=2)) == [2, 1]


def test_spec_diff_keeps_only_the_fields_that_differ():
    a, b = tiny_spec("a", 1e-3), tiny_spec("b", 3e-3)
    diff = spec_diff([a.model_dump_json(), b.model_dump_json()])
    assert diff == {"name": ["a", "b"], "train.lr": [1e-3, 3e-3]}
    assert spec_diff([a.model_dump_json(), a.model_dump_json()]) == {}


@pytest.fixture
def two(runs, store):  # noqa: F811
    (sa, da), (sb, db) = runs["slow-lr"], runs["<b>fast</b>-lr"]
    return finish(store, sa, da, server=(5.25, 4, 1)), finish(store, sb, db, server=(4.75, 6, 2))


def test_side_by_side_has_metrics_server_and_per_class_rows(two, store):
    table = side_by_side([store.get(i) for i in two])
    assert {"val_f1", "val_acc", "model_mb", "server_score", "server_rank"} <= set(table)
    assert table["server_score"] == [5.25, 4.75]
    per_class = [k for k in table if k.startswith("F1 ")]
    assert len(per_class) == 10 and all(len(table[k]) == 2 for k in per_class)


def test_cli_compare_table_json_and_html(two, tmp_path):
    a, b = two
    result = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "train.lr" in result.output and "spec differences" in result.output and "val_f1" in result.output
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--json", "--html", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["spec_diff"]["train.lr"] == [1e-3, 3e-3] and out["metrics"]["server_rank"] == [4, 6]
    html = (tmp_path / "cmp" / "index.html").read_text()
    for name in ("metrics.png", "per_class_f1.png", "trust.png"):
        assert valid_png(tmp_path / "cmp" / name) and f'src="{name}"' in html
    assert "&lt;b&gt;fast&lt;/b&gt;-lr" in html and "<b>fast" not in html
    assert "(0 graded)" in html  # the trust chart: graded submissions of the ledger (none here)


def test_cli_compare_needs_two_known_ids(two):
    result = CliRunner().invoke(app, ["compare", str(two[0])])
    assert result.exit_code == 2 and "at least two" in result.output
    result = CliRunner().invoke(app, ["compare", str(two[0]), "999"])
    assert result.exit_code == 1 and "no experiment 999" in result.output


def test_cli_results_filters_sorts_and_plots(two, store, tmp_path):
    a, b = two
    run = lambda *args: CliRunner().invoke(app, ["results", *args])  # noqa: E731
    result = run("--json", "--sort", "server_score")
    assert result.exit_code == 0, result.output
    assert ids(json.loads(result.output)) == [a, b]
    assert ids(json.loads(run("--json", "--sort", "server_score", "--asc").output)) == [b, a]
    assert ids(json.loads(run("--json", "--name", "slow*").output)) == [a]
    assert ids(json.loads(run("--json", "--sort", "id", "--limit", "1").output)) == [b]
    assert json.loads(run("--json", "--backend", "modal").output) == []
    assert json.loads(run("--json", "--stage", "ready").output) == []
    rows = list(csv.DictReader(io.StringIO(run("--csv").output)))
    assert len(rows) == 2 and "server_rank" in rows[0]
    result = run("--plot", str(tmp_path / "trust.png"))
    assert result.exit_code == 0, result.output
    assert valid_png(tmp_path / "trust.png")
    result = run("--stage", "finished")
    assert result.exit_code == 2 and "unknown stage" in result.output
