"""`kdq enqueue` of a search spec, `kdq search status` and `kdq search report`, in-process."""

import json

import pytest
from spectext import SMALL_SEARCH, tiny_spec
from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.stages import Stage
from kdq.store import Store

runner = CliRunner()

SEARCH = tiny_spec("tiny-search", extra=SMALL_SEARCH)


def kdq(*args):
    return runner.invoke(app, list(map(str, args)), catch_exceptions=False)


@pytest.fixture
def spec(tmp_path, dataset):  # enqueue checks that a local spec's dataset is there
    path = tmp_path / "search.toml"
    path.write_text(SEARCH)
    return path


def test_enqueue_of_a_search_queues_its_first_trials_and_status_shows_them(settings, spec):
    r = kdq("enqueue", spec, "--json")
    assert r.exit_code == 0, r.output
    assert [x["name"] for x in json.loads(r.stdout)] == ["tiny-search#0", "tiny-search#1"]
    with Store.open(settings) as store:
        assert [(e.stage, e.search, e.trial) for e in store.list()] == [
            (Stage.QUEUED, "tiny-search", None)
        ] * 2
    r = kdq("search", "status", "tiny-search", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["made"], s["trials"], s["by_stage"], s["best"]) == (2, 6, {"queued": 2}, None)
    r = kdq("search", "status")
    assert "search tiny-search: 2/6 trials" in r.stdout and "best: no complete trial yet" in r.stdout


def test_a_search_whose_corner_is_invalid_queues_nothing(settings, spec):
    spec.write_text(SEARCH.replace("high = 6", "high = 5000"))
    r = kdq("enqueue", spec)
    assert r.exit_code == 1
    assert "search point" in r.stderr and "epochs=5000" in r.stderr and "nothing was queued" in r.stderr
    assert not settings.db_path.exists() or not Store.open(settings).list()


def test_a_second_search_of_the_same_name_is_refused_even_forced(settings, spec):
    assert kdq("enqueue", spec).exit_code == 0
    r = kdq("enqueue", spec, "--force")
    assert r.exit_code == 1 and "a search of this name exists already" in r.stderr
    with Store.open(settings) as store:
        assert len(store.list()) == 2


def test_every_student_of_the_space_is_size_checked_at_enqueue(settings, spec):
    spec.write_text(
        SEARCH.replace('library = "kdq"\nname = "tiny_cnn"', 'library = "torchvision"\nname = "resnet18"')
        + '"student.name" = ["mobilenet_v3_small", "resnet50"]\n'
    )
    r = kdq("enqueue", spec)
    assert r.exit_code == 1 and "resnet50" in r.stderr and "nothing was queued" in r.stderr


def test_status_of_an_unknown_search_says_which_exist(settings, spec):
    kdq("enqueue", spec)
    r = kdq("search", "status", "nope")
    assert r.exit_code == 1 and "no search named 'nope'; searches: tiny-search" in r.stderr


def test_a_two_sided_search_with_a_pruner_is_refused_in_one_line_and_queues_nothing(settings, spec):
    spec.write_text(
        SEARCH.replace(
            "parallel = 2", 'parallel = 2\nobjective = "f1_and_size"\npruner = "successive_halving"'
        )
    )
    r = kdq("enqueue", spec)
    assert r.exit_code == 1 and "Traceback" not in r.output
    [line] = [x for x in r.stderr.splitlines() if "search.pruner" in x]
    assert str(spec) in line and 'set pruner = "none"' in line and "nothing was queued" in r.stderr
    assert not settings.db_path.exists() or not Store.open(settings).list()
    spec.write_text(SEARCH.replace("parallel = 2", 'parallel = 2\nobjective = "f1_and_size"'))
    assert kdq("enqueue", spec).exit_code == 0  # the two-sided default: no pruner


def test_one_expected_score_per_model_with_its_interval_and_the_told_value_dated(settings, monkeypatch):
    """Status, `kdq show`, `kdq results` and `kdq search status` showed three numbers for one model, an
    asymmetric interval as ±: one expected score everywhere, as ``[lo, hi]``, and the value the study was
    told (before any calibration since) labelled with when it was computed."""
    import re
    from datetime import datetime

    from cli_helpers import in_terminal, kdq_env

    from kdq import runfolder, steps
    from kdq.course.scoring import expected_all
    from kdq.specfile import expand
    from kdq.store import Store
    from tests.search.test_driver import ScriptedBackend, run_search, search_doc

    fetch = ScriptedBackend.fetch

    def lopsided(self, handle, dest):  # a holdout interval 0.15 below its F1 and 0.05 above
        fetch(self, handle, dest)
        m = runfolder.read_json(dest / runfolder.METRICS)
        runfolder.write_json(
            dest / runfolder.METRICS, {**m, "holdout_f1_ci": [m["holdout_f1"] - 0.15, m["holdout_f1"] + 0.05]}
        )

    monkeypatch.setattr(ScriptedBackend, "fetch", lopsided)
    monkeypatch.setattr("kdq.verify.verify_file", lambda path: {"output_shape": [1, 10]})
    raw = search_doc(2)
    raw["search"]["objective"] = "expected_score"
    with Store.open(settings) as store:
        store.add([("s.toml", s) for s in expand(raw, "s.toml")])
        backend = ScriptedBackend()
        run_search(steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend))
        x = expected_all(store, settings, store.list())[1]
    assert x.high - x.score < x.score - x.low  # lopsided, so "±" would be wrong
    whole = f"{x.score:.3f} [{x.low:.3f}, {x.high:.3f}]"
    short = f"{x.score:.2f} [{x.low:.1f}, {x.high:.1f}]"
    env = kdq_env(settings.root)
    screens = {
        "status": in_terminal(["status"], env, cols=80, rows=40),
        "status piped": kdq("status").stdout,
        "show": in_terminal(["show", "1"], env, cols=120, rows=80),
        "results": in_terminal(["results"], env, cols=100, rows=40),
        "search status": in_terminal(["search", "status"], env, cols=120, rows=40),
    }
    assert short in screens["status"] and whole in screens["status piped"], screens
    assert f"expected score {whole} = " in screens["show"], screens["show"]
    assert short in screens["results"], screens["results"]
    assert all("±" not in text for text in screens.values()), screens
    best = next(line for line in screens["search status"].splitlines() if line.startswith("best:"))
    assert f"expected {whole} now" in best, best
    told = re.search(r"expected_score (\d+\.\d+) told to the study at (\d\d:\d\d)", best)
    assert told and told[2] == datetime.now().strftime("%H:%M")  # the old value, and when it was told
    [row] = [line for line in screens["search status"].splitlines() if re.match(r"\W*0\W+1\W", line)]
    assert short in row and f"{told[1]} at {told[2]}" in row, row  # each trial: now, and what was told when
