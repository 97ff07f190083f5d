import pytest

from kdq.spec import ExperimentSpec
from kdq.train import estimate


def _spec(**teacher) -> ExperimentSpec:
    return ExperimentSpec.model_validate({"name": "x", "teacher": teacher})


def test_medsiglip_is_about_a_teraflop_per_picture():
    from kdq.train.standins import RANDOM

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


def test_the_recipe_cost_counts_teacher_forwards_student_epochs_and_h100_minutes():
    s = ExperimentSpec.model_validate(
        {
            "name": "r",
            "teacher": {"views": 32, "mix_views": 8},
            "train": {"epochs": 300},
            "backend": {"kind": "modal"},
        }
    )
    c = estimate.recipe_cost(s)
    assert c.teacher_forwards == 10_000 * 41  # every picture, plain + 32 views + 8 mixed, once per dataset
    # 0.97 TFLOP per forward at 45% of the H100's 989 bf16 TFLOP/s: about 446 pictures/s
    assert c.teacher_min == pytest.approx(
        410_000 * estimate.teacher_flops(s.teacher.model) / (989e12 * 0.45) / 60
    )
    assert 12 < c.teacher_min < 18
    n_train, n_val = round(10_000 * 0.77), round(10_000 * 0.15)
    per_epoch_s = (n_train + n_val / 3) / estimate.STUDENT_IMAGES_PER_S
    assert c.epochs == 300 and c.student_min == pytest.approx(300 * per_epoch_s / 60, rel=1e-3)
    assert c.total_min == pytest.approx(c.teacher_min + c.student_min + estimate.RUN_OVERHEAD_MIN)
    line = estimate.cost_line("r.toml", s)
    assert line.startswith("r.toml: r: ") and "410,000 teacher forwards" in line
    assert "300 student epochs" in line and f"{c.total_min:,.0f} GPU-minutes on an H100" in line


def test_a_run_without_a_teacher_costs_its_epochs_alone():
    s = ExperimentSpec.model_validate(
        {"name": "n", "teacher": {"kind": "none"}, "distill": {"loss": "ce"}, "data": {"limit_per_class": 10}}
    )
    c = estimate.recipe_cost(s)
    assert c.teacher_forwards == 0 and c.teacher_min == 0 and c.epochs == s.train.epochs
    assert c.student_min == pytest.approx(s.train.epochs * (77 + 15 / 3) / estimate.STUDENT_IMAGES_PER_S / 60)


def test_enqueue_dry_run_prints_the_cost(home, hw3, tmp_path):
    from typer.testing import CliRunner

    from kdq.cli.main import app

    (tmp_path / "d.toml").write_text('name = "d"\n[backend]\nkind = "modal"\n')
    r = CliRunner().invoke(app, ["enqueue", str(tmp_path / "d.toml"), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "d.toml: d: cost: 410,000 teacher forwards" in r.output.replace("\n", " ")
    assert "GPU-minutes on an H100" in r.output.replace("\n", " ")


def test_a_local_specs_cost_is_not_called_gpu_minutes_it_would_pay_for():
    local = ExperimentSpec.model_validate({"name": "l", "backend": {"kind": "local"}})
    line = estimate.cost_line("l.toml", local)
    assert "GPU-minutes" not in line and "a local run" in line and "no credit" in line


def test_a_modal_run_its_own_limits_would_stop_is_named_with_the_field_and_the_fix():
    # The spec's defaults (32 + 8 views, 300 epochs) need about 27 GPU-minutes on a cold teacher cache;
    # an attempt of 20: the run would time out and be retried, twice paid, nothing trained.
    s = ExperimentSpec.model_validate({"name": "night", "backend": {"kind": "modal", "timeout_min": 20}})
    need = estimate.recipe_cost(s).total_min
    assert need > s.backend.attempt_min
    [line] = estimate.over_the_limits([("n.toml", s)])
    assert line.startswith("n.toml: night: ") and "backend.timeout_min = 20" in line
    fix = int(line.split("set backend.timeout_min = ")[1].split()[0])
    assert fix >= need  # the fix it names is enough
    roomy = s.model_copy(
        update={"backend": s.backend.model_copy(update={"timeout_min": fix, "max_gpu_min": 2 * fix})}
    )
    assert estimate.over_the_limits([("n.toml", roomy)]) == []
    tight_cap = s.model_copy(
        update={"backend": s.backend.model_copy(update={"timeout_min": fix, "max_gpu_min": 10})}
    )
    [line] = estimate.over_the_limits([("n.toml", tight_cap)])
    assert "backend.max_gpu_min = 10" in line
    local = ExperimentSpec.model_validate({"name": "here"})
    assert estimate.over_the_limits([("l.toml", local)]) == []  # the CPU's own warning is slow_cpu_runs


def test_a_modal_specs_default_limits_fit_its_first_run():
    """backend.timeout_min unset on Modal: sized to the recipe's first run (which may build the teacher
    cache), not a fixed 20 minutes the default recipe's first run passes; max_gpu_min unset: two such
    attempts. A cheap recipe keeps 20 and 40; the values in a spec are kept."""
    s = ExperimentSpec.model_validate({"name": "night", "backend": {"kind": "modal"}})
    need = estimate.recipe_cost(s).total_min + estimate.RUN_OVERHEAD_MIN
    assert s.backend.timeout_min >= need > 20 and s.backend.max_gpu_min == 2 * s.backend.timeout_min
    assert estimate.over_the_limits([("n.toml", s)]) == []
    cheap = ExperimentSpec.model_validate(
        {
            "name": "c",
            "teacher": {"kind": "none"},
            "distill": {"loss": "ce"},
            "train": {"epochs": 5},
            "backend": {"kind": "modal"},
        }
    )
    assert (cheap.backend.timeout_min, cheap.backend.max_gpu_min) == (20, 40)
    mine = ExperimentSpec.model_validate({"name": "m", "backend": {"kind": "modal", "timeout_min": 30}})
    assert (mine.backend.timeout_min, mine.backend.max_gpu_min) == (30, 40)
    again = ExperimentSpec.model_validate_json(s.model_dump_json())
    assert again == s  # stored and read back: the same spec
    local = ExperimentSpec.model_validate({"name": "here"})
    assert local.backend.timeout_min is None and local.backend.attempt_min == 240
