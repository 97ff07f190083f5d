from kdq.experiment import local_f1

HOLDOUT = {"val_f1": 0.9, "holdout_f1": 0.80, "holdout_f1_ci": [0.78, 0.82], "model_mb": 13.0}


def test_local_f1_is_the_holdout_when_there_is_one_else_val_f1():
    assert local_f1(HOLDOUT) == (0.80, (0.78, 0.82), True)
    assert local_f1({"val_f1": 0.7}) == (0.7, None, False)
    assert local_f1(None) == (None, None, False)


def test_a_refit_carries_its_parents_holdout_f1_and_interval():
    refit = {"val_f1": 0.95, "parent_f1": 0.8, "parent_f1_ci": [0.7, 0.9], "parent_holdout": True}
    assert local_f1(refit) == (0.8, (0.7, 0.9), True)
