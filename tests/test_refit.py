"""Refit on every picture (kdq.refit): the refit's spec, its run on generated data, its expected F1."""

import json
import time
import tomllib

import pytest
from conftest import TINY_SPEC

from kdq import refit, runfolder, steps
from kdq.course import scoring
from kdq.spec import ExperimentSpec
from kdq.specfile import expand
from kdq.stages import Stage


def parent_spec(**data) -> ExperimentSpec:
    raw = tomllib.loads(TINY_SPEC)
    raw["data"].update(refit=True, **data)
    raw["submit"]["policy"] = "if_better"
    raw["train"]["patience"] = 1
    return expand(raw, "tiny.toml")[0]


def drive(ctx, exp_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        delay = steps.advance(ctx, exp_id)
        if delay is None:
            return ctx.store.get(exp_id)
        time.sleep(min(delay, 0.2))
    raise AssertionError(f"experiment {exp_id} still {ctx.store.get(exp_id).stage} after {timeout} s")


def test_the_refit_spec_trains_on_every_picture_for_the_best_epoch_count():
    s = refit.spec_for(parent_spec(), best_epoch=7)
    assert (s.data.train_on, s.data.refit, s.train.epochs, s.train.patience) == ("all", False, 7, None)
    assert s.name == "tiny (refit)" and s.student == parent_spec().student  # the rest is the parent's
    with pytest.raises(ValueError, match="data.train_on = 'all' keeps no pictures to validate on"):
        ExperimentSpec.model_validate(
            {"name": "x", "data": {"train_on": "all"}, "train": {"tune_bias": True}}
        )


def test_a_refit_run_trains_on_every_picture_with_out_of_fold_teacher_logits_for_all(tmp_path, monkeypatch):
    import torch

    from kdq.synth import synth
    from kdq.train import loop, teacher

    torch.set_num_threads(1)
    synth(tmp_path / "data", per_class=8, seed=2, size_range=(24, 40))

    raw = tomllib.loads(TINY_SPEC)
    raw["teacher"] = {"model": "tiny", "views": 2}
    raw["distill"] = {"loss": "hinton", "temperature": 2.0, "alpha": 0.5}
    raw["train"].update(device="cpu", patience=None)
    raw["data"].update(train_on="all", decode_size=32)
    seen, real = {}, teacher.prepare

    def prepare(spec, ds, train_idx, val_idx, *a, **k):
        seen.update(n=len(ds.files), train=set(map(int, train_idx)), val=len(val_idx))
        seen["targets"] = real(spec, ds, train_idx, val_idx, *a, **k)
        return seen["targets"]

    monkeypatch.setattr(teacher, "prepare", prepare)
    loop.run(ExperimentSpec.model_validate(raw), tmp_path / "run", tmp_path / "data", tmp_path / "cache")
    m = json.loads((tmp_path / "run" / runfolder.METRICS).read_text())
    assert seen["train"] == set(range(seen["n"])) and seen["val"] == 0  # the probe's folds cover them all
    assert bool((seen["targets"].logits[:, 0].abs().sum(1) > 0).all())  # an out-of-fold logit for each
    assert m["n_train"] == seen["n"] and m["n_val"] == m["n_holdout"] == 0
    assert m["val_f1"] is None and m["holdout_f1"] is None and m["epochs_run"] == m["best_epoch"] == 2


@pytest.mark.slow
def test_a_refit_trains_on_every_picture_and_carries_its_parents_expected_f1(settings, store, dataset):
    settings.poll_interval_s = 0.2
    ctx = steps.Context(settings=settings, store=store)
    [p] = store.add([(None, parent_spec(holdout_fraction=0.25))])
    parent = drive(ctx, p)
    assert parent.stage is Stage.READY, parent.error
    [child] = [e for e in store.list() if e.refit_of == p]
    assert child.stage is Stage.QUEUED and child.spec.train.epochs == parent.metrics["best_epoch"]
    assert scoring.candidates(store, [parent])[0].refit == child.id  # the parent waits for it
    assert "refit queued" in store.events(p)[-1]["message"]

    child = drive(ctx, child.id)
    assert child.stage is Stage.READY, child.error
    m = json.loads((ctx.settings.artifacts_dir / child.run_id / runfolder.METRICS).read_text())
    everything = parent.metrics["n_train"] + parent.metrics["n_val"] + parent.metrics["n_holdout"]
    assert m["n_train"] == everything and m["n_val"] == 0 and m["n_holdout"] == 0
    assert m["holdout_f1"] is None and m["val_f1"] is None  # its own: none
    assert m["epochs_run"] == m["best_epoch"] == parent.metrics["best_epoch"]  # no early stopping
    got, want = scoring.local_f1(child.metrics), scoring.local_f1(parent.metrics)
    assert got == want and want[0] == parent.metrics["holdout_f1"] and want[2] is True
    assert child.summary()["refit_of"] == p and child.metrics["refit_of"] == p
    factor, cal = scoring.outlook(store, settings)
    expected = scoring.expected_of(child, factor, cal), scoring.expected_of(parent, factor, cal)
    assert expected[0].score == pytest.approx(expected[1].score, abs=1e-3)  # the same student, same size
    assert (expected[0].low, expected[0].high) == pytest.approx((expected[1].low, expected[1].high), abs=1e-3)
    assert store.get(p).stage is Stage.DONE  # the refit goes in its place, the parent never
    assert "replaced by its refit" in store.events(p)[-1]["message"]
    assert steps.advance(ctx, child.id) is None and not [e for e in store.list() if e.refit_of == child.id]


def test_a_refit_that_failed_lets_its_parent_go(settings, store):
    [p] = store.add([(None, parent_spec())])
    [c] = store.add([(None, refit.spec_for(parent_spec(), 2))], columns={"refit_of": p})
    assert refit.coming(store) == {p: c}
    store.move(c, Stage.QUEUED, Stage.CANCELLED, "cancelled by the user")
    assert refit.coming(store) == {}
    assert refit.spawn(store, store.get(p), {"best_epoch": 2}) is not None  # a cancelled one is no refit
    assert refit.spawn(store, store.get(p), {"best_epoch": 2}) is None  # ... but one queued is


def test_kdq_show_json_carries_refit_of(settings, store):
    from typer.testing import CliRunner

    from kdq.cli.main import app

    [p] = store.add([(None, parent_spec())])
    [c] = store.add([(None, refit.spec_for(parent_spec(), 2))], columns={"refit_of": p})
    r = CliRunner().invoke(app, ["show", str(c), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["refit_of"] == p
    assert json.loads(CliRunner().invoke(app, ["show", str(p), "--json"]).stdout)["refit_of"] is None


def test_a_refit_on_modal_gets_the_limits_its_own_epochs_need_not_its_parents():
    """The parent's unset ``backend.timeout_min`` was sized to its own recipe; the refit trains another
    number of epochs on more pictures, and sizes its own (a stored parent's included)."""
    raw = {"name": "p", "teacher": {"kind": "none"}, "distill": {"loss": "ce"}, "train": {"epochs": 1000}}
    parent = ExperimentSpec.model_validate({**raw, "backend": {"kind": "modal"}})
    stored = ExperimentSpec.model_validate_json(parent.model_dump_json())
    s = refit.spec_for(stored, best_epoch=5)
    fresh = ExperimentSpec.model_validate({**s.model_dump(), "backend": {"kind": "modal"}})
    assert parent.backend.timeout_min > fresh.backend.timeout_min  # 1,000 epochs need more than 5
    assert (s.backend.timeout_min, s.backend.max_gpu_min) == (
        fresh.backend.timeout_min,
        fresh.backend.max_gpu_min,
    )
