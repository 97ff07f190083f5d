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
