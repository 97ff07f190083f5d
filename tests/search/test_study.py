"""The Optuna side: the objective's value, the pruner's first look, the sampler's seeds, the study file."""

import optuna
import pytest
from optuna.trial import TrialState

from kdq.search import study as studies
from kdq.search.space import SearchSpec


def spec(**kw):
    return SearchSpec(name="s", trials=4, space={"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, **kw)


def test_holdout_f1_falls_back_to_val_f1_for_a_run_without_a_holdout():
    assert studies.objective_value("holdout_f1", {"val_f1": 0.7, "holdout_f1": 0.65}) == 0.65
    assert studies.objective_value("holdout_f1", {"val_f1": 0.7}) == 0.7
    assert studies.objective_value("holdout_f1", {"val_f1": 0.7, "holdout_f1": None}) == 0.7
    assert studies.objective_value("expected_score", {"val_f1": 0.7}, 6.5) == 6.5
    with pytest.raises(ValueError, match="expected score is not available"):
        studies.objective_value("expected_score", {"val_f1": 0.7}, None)


def test_the_pruner_looks_first_at_a_quarter_of_the_epochs():
    assert [studies.first_look(n) for n in (1, 3, 8, 60)] == [1, 1, 2, 15]
    assert type(studies.pruner(spec(pruner="none"), 60)).__name__ == "NopPruner"


def test_hyperband_runs_two_brackets_an_eager_one_and_one_that_looks_first_at_half_the_epochs():
    """Hyperband's min resource is a sixth of the epochs (rounded up), its max the epochs, reduction
    factor 3 (Optuna's default): 12 epochs give two brackets, one looking at epochs 2 and 6, one at 6."""
    assert [studies.hyperband_first_look(n) for n in (1, 3, 9, 12, 13, 60)] == [1, 1, 2, 2, 3, 10]
    hb = studies.pruner(spec(pruner="hyperband"), 12)
    assert type(hb).__name__ == "HyperbandPruner"
    assert (hb._min_resource, hb._max_resource, hb._reduction_factor) == (2, 12, 3)
    assert type(studies.pruner(spec(), 12)).__name__ == "HyperbandPruner"  # the default
    study = optuna.create_study(study_name="s", direction="maximize", pruner=hb)
    firsts = set()
    for _ in range(24):  # each trial worse than every one before it: pruned at its bracket's first look
        trial, pruned = study.ask(), False
        for epoch in range(1, 13):
            trial.report(-trial.number, epoch)
            if trial.should_prune():
                firsts.add(epoch)
                pruned = True
                break
        study.tell(trial, state=TrialState.PRUNED) if pruned else study.tell(trial, -trial.number)
    assert firsts == {2, 6}


def test_each_point_of_a_study_has_its_own_seed_and_the_same_one_every_time(tmp_path):
    a = [studies.ask(studies.open_study(tmp_path / "a", spec(), 9), spec()).params for _ in range(3)]
    b = [studies.ask(studies.open_study(tmp_path / "b", spec(), 9), spec()).params for _ in range(3)]
    assert a == b and len({p["train.lr"] for p in a}) == 3


def test_the_study_file_name_is_safe_for_any_search_name(tmp_path):
    path = studies.study_path(tmp_path, "my search/../x")
    assert path.parent == tmp_path / "search" and "/" not in path.name and path.suffix == ".journal"
    assert studies.load_study(tmp_path, "never made") is None


def test_the_two_sided_objective_is_holdout_f1_up_and_file_size_down_with_nsga_ii(tmp_path):
    two = spec(objective="f1_and_size", pruner="none")
    metrics = {"val_f1": 0.7, "holdout_f1": 0.65, "model_mb": 3.5}
    assert studies.objective_value("f1_and_size", metrics) == [0.65, 3.5]
    assert studies.objective_value("f1_and_size", {"val_f1": 0.7, "model_mb": 1.0}) == [0.7, 1.0]
    with pytest.raises(KeyError):
        studies.objective_value("f1_and_size", {"val_f1": 0.7})
    study = studies.open_study(tmp_path, two, 9)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert type(studies.sampler(two)).__name__ == "NSGAIISampler"
    assert type(studies.sampler(spec())).__name__ == "TPESampler"
    a = [studies.ask(studies.open_study(tmp_path / "a", two, 9), two).params for _ in range(3)]
    b = [studies.ask(studies.open_study(tmp_path / "b", two, 9), two).params for _ in range(3)]
    assert a == b and len({p["train.lr"] for p in a}) == 3  # seeded like TPE: per point of the study


def test_a_trial_reports_its_best_validation_f1_so_far_the_epoch_it_will_keep():
    assert studies.intermediate({"epoch": 5, "val_f1": 0.31, "best_f1": 0.44}) == 0.44
    assert studies.intermediate({"epoch": 5, "val_f1": 0.31}) == 0.31  # a run that does not say
    assert studies.intermediate({"epoch": 0, "val_f1": None, "best_f1": None}) is None


def test_a_trial_may_be_pruned_until_its_last_epoch_not_at_it():
    assert studies.prunable({"epoch": 7, "epochs": 8}) and not studies.prunable({"epoch": 8, "epochs": 8})
    assert not studies.prunable({"epoch": 0, "epochs": 8}) and studies.prunable({"epoch": 3})


def test_a_trial_completed_after_a_kill_inside_ask_does_not_share_its_guess_with_the_next(tmp_path):
    """A worker killed inside ``ask`` leaves a trial without parameters; the next tick completes it and
    then asks for the next trial. Each must be drawn with its own seed, or both get the same guess."""
    study = studies.open_study(tmp_path, spec(), 9)
    studies.ask(study, spec())
    bare = study.ask()  # trial 1 written, the worker killed before its parameters
    assert studies.complete(study, study.get_trials(deepcopy=False)[bare.number], spec())
    following = studies.ask(study, spec())
    lrs = [t.params["train.lr"] for t in study.get_trials()]
    assert len(set(lrs)) == 3, lrs
    assert following.number == 2
