from kdq.spec import ExperimentSpec
from kdq.train import estimate


def _spec(**teacher) -> ExperimentSpec:
    return ExperimentSpec.model_validate({"name": "x", "teacher": teacher})


def test_medsiglip_is_about_a_teraflop_per_picture():
    from kdq.train.teacher import RANDOM

    assert 0.8e12 < estimate.vit_flops(**RANDOM["random-so400m-448"][0]) < 1.2e12
    assert 30e9 < estimate.vit_flops(**RANDOM["random-b16-224"][0]) < 40e9  # ViT-B/16: ~35 GFLOPs


def test_a_local_cpu_run_with_medsiglip_is_flagged_in_hours():
    lines = estimate.slow_cpu_runs([("a.toml", _spec())], cuda=False, cores=8)
    assert len(lines) == 1
    line = lines[0]
    assert (
        line.startswith("a.toml: x: runs on this machine's CPU (8 cores)")
        and "backend.kind = 'modal'" in line
    )
    hours = float(line.split("about ")[1].split(" hours")[0].replace(",", ""))
    assert hours > 10  # "tens of hours" at least


def test_gpu_modal_tiny_and_teacherless_runs_are_not_flagged():
    none = {"name": "n", "teacher": {"kind": "none"}, "distill": {"loss": "ce"}}
    specs = [
        ("gpu.toml", _spec()),
        ("tiny.toml", _spec(model="tiny")),
        ("none.toml", ExperimentSpec.model_validate(none)),
        ("modal.toml", ExperimentSpec.model_validate({"name": "m", "backend": {"kind": "modal"}})),
    ]
    assert estimate.slow_cpu_runs(specs, cuda=True, cores=8) == []
    assert [line.split(":")[0] for line in estimate.slow_cpu_runs(specs, cuda=False, cores=8)] == ["gpu.toml"]
    forced = ExperimentSpec.model_validate({"name": "c", "train": {"device": "cpu"}})
    assert len(estimate.slow_cpu_runs([("c.toml", forced)], cuda=True, cores=8)) == 1


def test_enqueue_says_so_and_queues_all_the_same(home, hw3, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kdq.cli.main import app

    monkeypatch.setattr(estimate, "has_cuda", lambda: False)
    (tmp_path / "cpu.toml").write_text('name = "cpu"\n[student]\nname = "shufflenet_v2_x0_5"\n')
    r = CliRunner().invoke(app, ["enqueue", str(tmp_path / "cpu.toml"), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert (
        "warning: " in r.output
        and "hours to embed 10,000 pictures" in r.output
        and "would queue cpu" in r.output
    )
