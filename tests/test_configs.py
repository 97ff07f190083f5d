"""Every shipped spec validates, and its student is under the size limit."""

from pathlib import Path

import pytest

from kdq.specfile import load_file

CONFIGS = sorted(Path(__file__).parents[1].joinpath("configs").rglob("*.toml"))


def test_there_are_competition_and_demo_configs():
    names = {p.relative_to(p.parents[1]).as_posix() if p.parent.name == "demo" else p.name for p in CONFIGS}
    assert {"baseline.toml", "hinton-shufflenet.toml", "sweep-temperature-alpha.toml"} <= names
    assert any(p.parent.name == "demo" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_and_says_what_it_tests(path):
    specs = load_file(path)
    assert specs
    assert path.read_text().startswith("#"), "each config opens with a comment saying what it tests"
    for spec in specs:
        if path.parent.name == "demo":
            assert spec.backend.kind == "local" and spec.train.epochs <= 5
        elif path.name == "local-example.toml":  # the user's own dataset, trained on this machine
            assert spec.backend.kind == "local" and spec.data.dataset == "hw3"
        else:
            assert spec.backend.kind == "modal" and spec.data.dataset == "hw3"


def test_sweep_over_temperature_and_alpha_expands_to_nine():
    [path] = [p for p in CONFIGS if p.name == "sweep-temperature-alpha.toml"]
    specs = load_file(path)
    assert {(s.distill.temperature, s.distill.alpha) for s in specs} == {
        (t, a) for t in (2.0, 4.0, 8.0) for a in (0.1, 0.3, 0.5)
    }


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.parent.name != "demo"], ids=lambda p: p.name)
def test_competition_students_fit_the_size_limit(path):
    from kdq.train.students import build, check_size

    for spec in load_file(path):
        model = build(spec.student.model_copy(update={"pretrained": False}), num_classes=10)
        assert check_size(model, spec.student.name, spec.export.weights) < 23.0


@pytest.mark.slow
def test_the_local_example_trains_on_this_machine_on_the_users_dataset(settings, synth_dataset):
    """configs/local-example.toml as its comment says: the dataset at .kdq/datasets/hw3, `kdq enqueue`,
    then the local backend trains it (shortened here: one epoch on small pictures)."""
    import time

    from typer.testing import CliRunner

    from kdq import runfolder
    from kdq.backends.local import LocalBackend
    from kdq.cli.main import app
    from kdq.store import Store

    [path] = [p for p in CONFIGS if p.name == "local-example.toml"]
    # This machine is offline: the example's ImageNet weights cannot be fetched (a failed fetch fails the run)
    short = ["train.epochs=1", "train.image_size=64", "data.decode_size=72", "train.device=cpu"]
    short.append("student.pretrained=false")
    args = ["enqueue", str(path), *(a for s in short for a in ("--set", s))]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "data.dataset = 'hw3': no dataset at" in refused.stderr
    settings.datasets_dir.mkdir(parents=True)
    (settings.datasets_dir / "hw3").symlink_to(synth_dataset, target_is_directory=True)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    with Store.open(settings) as store:
        [exp] = store.list()
    backend = LocalBackend(settings)
    handle = backend.launch("example-1", exp.spec)
    deadline = time.time() + 300
    while (state := backend.poll(handle).state) == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert state == "succeeded", backend.poll(handle).error
    metrics = runfolder.read_json(backend.run_dir("example-1") / runfolder.METRICS)
    assert metrics["model_mb"] < 25 and metrics["best_epoch"] == 1


def test_the_recipe_is_a_real_night_and_enqueues_with_its_cost(home, hw3):
    """configs/recipe.toml uses every lever of a real night, and `kdq enqueue --dry-run` prices it."""
    from typer.testing import CliRunner

    from kdq.cli.main import app

    [path] = [p for p in CONFIGS if p.name == "recipe.toml"]
    [s] = load_file(path)
    assert s.student.pretrained and not s.student.allow_scratch and s.teacher.views >= 32
    assert s.teacher.mix_views > 0
    assert s.distill.loss in ("dist", "dkd") and s.distill.kd_warmup_epochs > 0
    assert s.train.epochs >= 100 and s.train.patience is None and s.train.ema_decay
    assert s.data.decode_size >= 320 and s.data.refit and s.backend.kind == "modal"
    r = CliRunner().invoke(app, ["enqueue", str(path), "--dry-run"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert (
        "would queue recipe" in out and "810,000 teacher forwards" in out and "GPU-minutes on an H100" in out
    )
