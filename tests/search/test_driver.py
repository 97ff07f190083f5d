"""The worker's search tick, driven directly with a scripted backend: adopt, report, prune, tell, ask."""

import tomllib

import pytest
from optuna.trial import TrialState
from spectext import tiny_spec

from kdq import runfolder, steps
from kdq.backends import RunStatus
from kdq.search import driver
from kdq.search import study as studies
from kdq.search.spec import params_of
from kdq.specfile import expand
from kdq.stages import LIVE, Stage

SEARCH = """
[search]
trials = {trials}
parallel = 2
pruner = "{pruner}"
[search.space]
"train.lr" = {{ low = 1e-4, high = 1e-1, log = true }}
"""


def search_doc(trials: int, pruner: str = "none", epochs: int = 9) -> dict:
    """A search over the tiny spec's learning rate, as a parsed document."""
    return tomllib.loads(tiny_spec("s", epochs=epochs, extra=SEARCH.format(trials=trials, pruner=pruner)))


def curve(lr: float, epoch: int) -> float:
    """A made-up validation F1: best near lr = 1e-2, rising with epochs."""
    import math

    return max(0.0, 0.9 - 0.15 * abs(math.log10(lr) + 2)) * (1 - 0.5 / (epoch + 1))


class ScriptedBackend:
    """Trainings whose validation F1 follows `curve`; one epoch per poll. Records overlap and cancels."""

    def __init__(self, fail=()):
        self.runs, self.cancelled, self.most, self.fail = {}, [], 0, set(fail)
        self.linger = False  # True: the last epoch is seen once still training, as the export runs

    def launch(self, run_id, spec):
        self.runs[run_id] = {"spec": spec, "epoch": 0}
        self.most = max(self.most, sum(1 for r in self.runs.values() if not r.get("over")))
        return {"run_id": run_id}

    def poll(self, handle):
        run = self.runs[handle["run_id"]]
        if run.get("over"):
            return RunStatus("failed", {}, "cancelled")
        spec = run["spec"]
        if spec.name in self.fail:
            run["over"] = True
            return RunStatus("failed", {}, "boom")
        run["epoch"] = min(run["epoch"] + 1, spec.train.epochs)
        progress = {"epoch": run["epoch"], "epochs": spec.train.epochs, "phase": "training"}
        progress["val_f1"] = curve(spec.train.lr, run["epoch"])
        last = run["epoch"] == spec.train.epochs
        if not last or (self.linger and not run.get("lingered")):
            run["lingered"] = last
            return RunStatus("running", progress)
        run["over"] = True
        return RunStatus("succeeded", {**progress, "phase": "done"})

    def fetch(self, handle, dest):
        run = self.runs[handle["run_id"]]
        dest.mkdir(parents=True, exist_ok=True)
        (dest / runfolder.MODEL).write_bytes(b"model")
        f1 = curve(run["spec"].train.lr, run["epoch"])
        runfolder.write_json(
            dest / runfolder.METRICS,
            {"val_f1": f1, "holdout_f1": f1 - 0.01, "model_mb": run["spec"].train.lr * 1e3},
        )

    def cancel(self, handle):
        self.cancelled.append(handle["run_id"])
        self.runs[handle["run_id"]]["over"] = True


@pytest.fixture
def ctx(settings, store, monkeypatch):
    import kdq.verify

    monkeypatch.setattr(kdq.verify, "verify_file", lambda path: {"output_shape": [1, 10]})
    settings.local_max_running = 2
    backend = ScriptedBackend()
    return steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend)


def enqueue(store, trials=6, pruner="none"):
    specs = expand(search_doc(trials, pruner), "s.toml")
    return store.add([("s.toml", s) for s in specs])


def run_search(ctx, rounds=400):
    """Advance every live experiment and tick, as the worker would, until nothing is left to do."""
    most_live = 0
    for _ in range(rounds):
        for exp in ctx.store.live():
            steps.advance(ctx, exp.id)
        driver.tick(ctx)
        most_live = max(most_live, len(ctx.store.live()))
        if not ctx.store.live():
            return most_live
    raise AssertionError("the search did not finish")


def study_of(ctx):
    [first, *_] = ctx.store.list()
    return studies.open_study(ctx.settings.root, first.spec.search, first.spec.train.epochs)


def test_a_search_runs_its_trials_to_the_total_two_at_a_time(ctx):
    ids = enqueue(ctx.store, trials=6)
    assert len(ids) == 2 and all(ctx.store.get(i).trial is None for i in ids)
    most_live = run_search(ctx)
    exps = ctx.store.list()
    assert len(exps) == 6 and most_live <= 2 and ctx.backend("local").most <= 2
    assert sorted(e.trial for e in exps) == list(range(6))
    assert [e.name for e in sorted(exps, key=lambda e: e.trial)] == [f"s#{n}" for n in range(6)]
    trials = study_of(ctx).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    for e in exps:  # each study trial is its experiment: same parameters, value = the holdout F1
        t = trials[e.trial]
        assert t.params == params_of(e.spec) and t.value == pytest.approx(e.metrics["holdout_f1"])
    assert [t.params for t in trials[:2]] == [params_of(ctx.store.get(i).spec) for i in ids]


@pytest.mark.parametrize(
    "pruner, looks",  # 9 epochs: first look at 2; halving keeps half at 2, 4, 8, Hyperband a third at 2, 6
    [("successive_halving", {2, 4, 8}), ("hyperband", {2, 6})],
)
def test_the_pruner_stops_bad_trials_at_its_looks_and_cancels_their_runs(ctx, pruner, looks):
    enqueue(ctx.store, trials=12, pruner=pruner)
    run_search(ctx)
    exps = ctx.store.list()
    pruned = [e for e in exps if e.stage is Stage.PRUNED]
    assert len(exps) == 12 and pruned and len(pruned) < 12
    assert {e.progress["epoch"] for e in pruned} <= looks
    backend = ctx.backend("local")
    assert sorted(backend.cancelled) == sorted(e.run_id for e in pruned)
    trials = study_of(ctx).get_trials()
    assert {trials[e.trial].state for e in pruned} == {TrialState.PRUNED}
    assert all(f"pruned by {pruner} at epoch" in ctx.store.events(e.id)[-1]["message"] for e in pruned)
    epochs = sum((e.progress or {}).get("epoch", 0) for e in exps)
    assert epochs < 12 * 9


def test_a_worker_killed_between_ask_and_row_loses_no_trial_and_makes_none_twice(ctx):
    enqueue(ctx.store, trials=4)
    study = study_of(ctx)
    study.enqueue_trial(params_of(ctx.store.list()[0].spec), user_attrs={driver.EXP_ATTR: 1})
    study.ask()  # adopted in the study, the row never numbered (killed right here)
    orphan = study.ask(studies.distributions(ctx.store.list()[0].spec.search))  # asked, no row written
    driver.tick(ctx)
    exps = ctx.store.list()
    assert sorted(e.trial for e in exps if e.trial is not None) == [0, 1, 2]
    assert ctx.store.get(1).trial == 0
    assert [e for e in exps if e.trial == orphan.number][0].spec.train.lr == orphan.params["train.lr"]
    run_search(ctx)
    assert sorted(e.trial for e in ctx.store.list()) == [0, 1, 2, 3]
    assert len(study_of(ctx).get_trials()) == 4


def test_failed_trials_count_toward_the_total(ctx):
    ctx.backend("local").fail = {"s#0", "s#1"}
    enqueue(ctx.store, trials=3)
    run_search(ctx)
    states = [t.state for t in study_of(ctx).get_trials()]
    assert states.count(TrialState.FAIL) == 2 and len(states) == 3


def test_a_spent_gpu_budget_stops_new_trials(ctx, monkeypatch):
    raw = search_doc(6, "none")
    raw["search"]["gpu_hours"] = 0.5
    ctx.store.add([("s.toml", s) for s in expand(raw, "s.toml")])
    monkeypatch.setattr(driver, "training_seconds", lambda events, now: 3600.0)
    run_search(ctx)
    assert len(ctx.store.list()) == 2 and not any(e.stage in LIVE for e in ctx.store.list())


def test_training_seconds_add_up_every_stay_in_training():
    events = [
        {"kind": "stage", "stage": "launching", "ts": 0},
        {"kind": "stage", "stage": "training", "ts": 10},
        {"kind": "transient", "stage": None, "ts": 20},
        {"kind": "stage", "stage": "failed", "ts": 40},
        {"kind": "stage", "stage": "queued", "ts": 50},
        {"kind": "stage", "stage": "training", "ts": 60},
    ]
    assert driver.training_seconds(events, now=100) == 30 + 40


def test_the_expected_score_objective_scores_trials_as_the_submission_policy_does(ctx):
    from kdq.course.scoring import expected_of, outlook

    raw = search_doc(3, "none")
    raw["search"]["objective"] = "expected_score"
    ctx.store.add([("s.toml", s) for s in expand(raw, "s.toml")])
    run_search(ctx)
    factor, calibration = outlook(ctx.store, ctx.settings)
    trials = study_of(ctx).get_trials()
    for e in ctx.store.list():  # model size differs by trial (scripted): the size term counts
        assert trials[e.trial].value == pytest.approx(expected_of(e, factor, calibration).score)
        assert trials[e.trial].value != pytest.approx(e.metrics["holdout_f1"])


def test_every_trial_gets_its_own_parameters_across_ticks_and_restarts(ctx):
    enqueue(ctx.store, trials=8)
    run_search(ctx)  # every tick opens the study afresh, as every worker start does
    lrs = [e.spec.train.lr for e in ctx.store.list()]
    assert len(set(lrs)) == 8, lrs


def test_a_worker_killed_inside_ask_leaves_a_trial_that_is_trained_as_the_study_records_it(ctx):
    enqueue(ctx.store, trials=4)
    driver.tick(ctx)  # the two enqueued trials adopted
    study = study_of(ctx)
    bare = study.ask()  # Optuna wrote the trial, then the worker died before any parameter
    driver.tick(ctx)
    trial = study_of(ctx).get_trials()[bare.number]
    [exp] = [e for e in ctx.store.list() if e.trial == bare.number]
    assert set(trial.params) == {"train.lr"} and exp.spec.train.lr == trial.params["train.lr"]
    run_search(ctx)
    trials = study_of(ctx).get_trials()
    assert len(trials) == 4 and all(set(t.params) == {"train.lr"} for t in trials)
    assert {t.params["train.lr"] for t in trials} == {e.spec.train.lr for e in ctx.store.list()}


def pareto_front(points: dict[int, tuple[float, float]]) -> set[int]:
    """The ids whose (F1, MiB) no other point beats on both sides (higher F1, smaller file)."""
    return {
        i
        for i, (f1, mb) in points.items()
        if not any(g >= f1 and m <= mb and (g, m) != (f1, mb) for g, m in points.values())
    }


def test_a_two_sided_search_runs_to_its_total_and_tells_every_trial_its_f1_and_size(ctx):
    raw = search_doc(8, "none")
    raw["search"]["objective"] = "f1_and_size"
    ctx.store.add([("s.toml", s) for s in expand(raw, "s.toml")])
    most_live = run_search(ctx)
    exps = ctx.store.list()
    assert len(exps) == 8 and most_live <= 2 and not ctx.backend("local").cancelled
    study = study_of(ctx)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    for e in exps:  # the scripted model's size grows with lr: the two sides pull apart
        assert trials[e.trial].values == pytest.approx([e.metrics["holdout_f1"], e.metrics["model_mb"]])
    assert len({e.spec.train.lr for e in exps}) == 8
    front = pareto_front({e.trial: (e.metrics["holdout_f1"], e.metrics["model_mb"]) for e in exps})
    assert {t.number for t in study.best_trials} == front and 1 < len(front) < 8


def test_a_training_trial_is_judged_by_its_best_epoch_so_far_not_by_a_dip(ctx):
    backend = ctx.backend("local")
    poll = backend.poll

    def dipping(handle):  # every other epoch's F1 falls by 0.2; progress.json's best_f1 keeps the best
        status = poll(handle)
        p = status.progress
        if p.get("val_f1") is not None:
            run = backend.runs[handle["run_id"]]
            p["val_f1"] -= 0.2 * (p["epoch"] % 2)
            run["best"] = p["best_f1"] = max(run.get("best", 0.0), p["val_f1"])
        return status

    backend.poll = dipping
    enqueue(ctx.store, trials=2)
    run_search(ctx)
    for t in study_of(ctx).get_trials():
        values = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        assert values and values == sorted(values), values  # what was reported never fell


def test_a_trial_at_its_last_epoch_is_never_pruned(ctx, monkeypatch):
    """Stopping a trial that trained every epoch saves nothing and throws its model away. With 8 epochs
    the pruner's rungs are at epochs 2, 4 and 8: the last epoch is a rung. The curves cross (a high lr
    leads early, a low one late), so a trial that passed epoch 4 can be among the worse at epoch 8."""
    import math

    monkeypatch.setitem(globals(), "curve", lambda lr, epoch: 0.6 + 0.02 * math.log10(lr) * (epoch - 5))
    ctx.backend("local").linger = True
    ctx.store.add([("s.toml", s) for s in expand(search_doc(12, "successive_halving", epochs=8), "s.toml")])
    run_search(ctx)
    exps = ctx.store.list()
    pruned = [e for e in exps if e.stage is Stage.PRUNED]
    assert len(exps) == 12 and pruned
    assert all(e.progress["epoch"] < 8 for e in pruned), [e.progress["epoch"] for e in pruned]
    assert all(e.stage is Stage.DONE for e in exps if e.progress["epoch"] == 8)


def test_a_search_with_refit_refits_its_best_trial_once_every_trial_has_ended(ctx):
    doc = search_doc(4)
    doc["data"]["refit"] = True
    ctx.store.add([("s.toml", s) for s in expand(doc, "s.toml")])
    run_search(ctx)
    driver.tick(ctx)  # a tick more: still one refit
    refits = [e for e in ctx.store.list() if e.refit_of is not None]
    assert len(refits) == 1 and ctx.store.get(refits[0].refit_of).trial == study_of(ctx).best_trial.number
    r = refits[0]
    assert r.search is None and r.spec.data.train_on == "all" and r.stage is Stage.DONE
    assert len(study_of(ctx).get_trials()) == 4  # the refit is no trial of the study
