"""The [search] table: validated like every spec, all or nothing, its first trials drawn up front."""

import tomllib

import pytest
from spectext import SMALL_SEARCH, tiny_spec

from kdq.search.spec import corners, params_of, students
from kdq.specfile import SpecError, expand

SEARCH = tiny_spec("tiny-search", epochs=4, extra=SMALL_SEARCH + '"distill.label_smoothing" = [0.0, 0.1]\n')


def load(text=SEARCH, **search):
    raw = tomllib.loads(text)
    raw["search"].update(search)
    return expand(raw, "s.toml")


def problems(text=SEARCH, **search):
    with pytest.raises(SpecError) as info:
        load(text, **search)
    return "\n".join(info.value.problems)


def test_a_search_queues_its_first_parallel_trials_with_points_of_its_space():
    specs = load()
    assert [s.name for s in specs] == ["tiny-search#0", "tiny-search#1"]
    for spec in specs:
        p = params_of(spec)
        assert 1e-4 <= p["train.lr"] <= 1e-2 and 2 <= p["train.epochs"] <= 6
        assert isinstance(p["train.epochs"], int) and p["distill.label_smoothing"] in (0.0, 0.1)
        assert spec.search.name == "tiny-search" and spec.search.trials == 6
    assert params_of(specs[0]) != params_of(specs[1])
    assert params_of(load()[0]) == params_of(specs[0])  # seeded: the same document, the same trials


def test_a_space_key_must_be_a_real_field():
    text = SEARCH.replace('"train.epochs"', '"train.epoch"')
    assert 'search.space."train.epoch": not a field of the spec; fields at train: epochs' in problems(text)
    assert "a section, not a field" in problems(SEARCH.replace('"train.epochs"', '"train"'))
    assert "not a field" in problems(SEARCH.replace('"train.epochs"', '"name"'))


def test_ranges_must_make_sense():
    assert "needs low < high" in problems(SEARCH.replace("low = 2, high = 6", "low = 6, high = 2"))
    assert "log = true needs low > 0" in problems(SEARCH.replace("low = 1e-4", "low = 0.0"))
    assert "whole number" in problems(SEARCH.replace("low = 2, high = 6", "low = 2.5, high = 6"))
    assert "an empty list" in problems(SEARCH.replace("[0.0, 0.1]", "[]"))


def test_every_point_of_the_space_must_be_a_valid_spec():
    text = SEARCH.replace("low = 2, high = 6", "low = 2, high = 5000")
    found = problems(text)
    assert "s.toml (search point" in found and "epochs=5000" in found and "train.epochs" in found


def test_the_search_table_itself_is_checked():
    assert "search.trials = 0" in problems(trials=0)
    assert "search.parallel = 3 is more than search.trials = 2" in problems(trials=2, parallel=3)
    assert "search.objective" in problems(objective="accuracy")
    assert "search.pruner" in problems(pruner="asha")
    assert load(pruner="hyperband")[0].search.pruner == "hyperband"
    assert "search.trails: unknown key" in problems(trails=3)
    raw = tomllib.loads(SEARCH)
    raw["sweep"] = {"train.seed": [1, 2]}
    with pytest.raises(SpecError, match=r"\[sweep\] .* or \[search\] .*, not both"):
        expand(raw, "s.toml")


def test_every_student_of_the_space_is_listed_for_the_size_check():
    text = SEARCH.replace(
        '"distill.label_smoothing" = [0.0, 0.1]',
        '"student.library" = ["kdq", "torchvision"]\n"student.name" = ["tiny_cnn", "resnet18"]',
    )
    with pytest.raises(SpecError, match="resnet18.*is not a kdq model"):  # kdq + resnet18 is a corner
        load(text)
    ok = text.replace('["kdq", "torchvision"]', '["torchvision"]')
    ok = ok.replace('["tiny_cnn", "resnet18"]', '["resnet18", "mobilenet_v3_small"]')
    [first, *_] = load(ok)
    assert sorted(s.name for s in students(first)) == ["mobilenet_v3_small", "resnet18"]


def test_corners_are_every_end_of_every_range_in_every_combination():
    [spec, _] = load()
    points = corners(spec.search)
    assert len(points) == 8
    assert {(p["train.lr"], p["train.epochs"]) for p in points} == {
        (1e-4, 2),
        (1e-4, 6),
        (1e-2, 2),
        (1e-2, 6),
    }


def test_a_bad_space_and_a_bad_field_are_reported_together():
    text = SEARCH.replace('"train.epochs"', '"train.epoch"').replace("epochs = 4", "epochs = 0")
    found = problems(text)
    assert 'search.space."train.epoch": not a field' in found and "train.epochs = 0" in found


def test_the_two_sided_objective_is_never_pruned_by_default_and_refuses_a_pruner():
    [spec, _] = load(objective="f1_and_size")
    assert spec.search.objective == "f1_and_size" and spec.search.pruner == "none"
    found = problems(objective="f1_and_size", pruner="successive_halving")
    assert found.count("\n") == 0 and found.startswith("s.toml: search.pruner = ")
    assert '"successive_halving"' in found and 'set pruner = "none"' in found
    assert load(objective="holdout_f1")[0].search.pruner == "hyperband"  # the default stays


def test_each_trial_on_modal_gets_the_limits_its_own_recipe_needs_not_the_first_trials():
    """A Modal spec's unset ``backend.timeout_min`` is sized to its recipe. A trial is made from an
    earlier trial's stored spec: it must size its own, or a trial of 1,000 epochs would inherit
    the 20 minutes of one of 5, time out twice and train nothing (and a short one pay for a long bound)."""
    from kdq.search.spec import document, trial_spec
    from kdq.spec import ExperimentSpec

    raw = {
        "name": "limits",
        "teacher": {"kind": "none"},
        "distill": {"loss": "ce"},
        "train": {"epochs": 5},
        "backend": {"kind": "modal"},
        "search": {"name": "limits", "trials": 2, "space": {"train.epochs": [5, 1000]}},
    }
    first = ExperimentSpec.model_validate(raw)
    stored = ExperimentSpec.model_validate_json(first.model_dump_json())  # as the queue reads it back
    long = trial_spec(document(stored), {"train.epochs": 1000}, 1)
    fresh = ExperimentSpec.model_validate({**raw, "train": {"epochs": 1000}})
    assert fresh.backend.timeout_min > first.backend.timeout_min  # the recipe's own size differs
    assert (long.backend.timeout_min, long.backend.max_gpu_min) == (
        fresh.backend.timeout_min,
        fresh.backend.max_gpu_min,
    )
    mine = ExperimentSpec.model_validate({**raw, "backend": {"kind": "modal", "timeout_min": 33}})
    kept = trial_spec(document(ExperimentSpec.model_validate_json(mine.model_dump_json())), {}, 2)
    assert kept.backend.timeout_min == 33  # a value the user wrote is kept
