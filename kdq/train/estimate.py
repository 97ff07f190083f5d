"""What a spec costs before it runs: a warning at enqueue, and the recipe's cost at ``--dry-run``.

    for line in slow_cpu_runs(specs) + over_the_limits(specs):
        warn(line)      # a local CPU run that would take hours; a Modal run its own limits would stop
    cost_line(path, spec)               # teacher forwards, student epochs, GPU-minutes on an H100

A ViT forward costs ``2 * layers * (4 T d^2 + 2 T d d_ff + 2 T^2 d)`` FLOPs for T patch tokens of width
d. MedSigLIP (a so400m tower at 448: 1,024 tokens, 27 layers) is about 1 TFLOP per picture; a CPU core
does about ``CPU_GFLOPS_PER_CORE`` in fp32 (measured: see docs/training.md), so 10,000 pictures under
5 views take over a hundred hours on a laptop, minutes on a GPU. Pure arithmetic, except ``has_cuda``.

On an H100 the teacher runs at ``TEACHER_MFU`` of the bf16 peak, and a small student trains at about
``STUDENT_IMAGES_PER_S`` whatever its FLOPs (its step is bound by memory and kernel launches, not by
arithmetic); validation is a forward pass, a third of a training step. These are estimates, not
measurements: docs/training.md gives their sources.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

CPU_GFLOPS_PER_CORE = 36.0  # a ViT-B/16 forward measured at ~72 GFLOP/s on 2 shared cores
COURSE_IMAGES = 10_000  # the course's training set
WARN_HOURS = 1.0
MEDSIGLIP = "random-so400m-448"  # the stand-in with MedSigLIP's shape: Hugging Face ids are costed as it
H100_BF16_FLOPS = 989e12  # dense bf16 peak (NVIDIA's H100 SXM datasheet)
TEACHER_MFU = 0.45  # a ViT at batch 256 in bf16 reaches 35-55% of the peak
STUDENT_IMAGES_PER_S = 5_000  # one small student's bf16 training step on an H100: 4,000-10,000 pictures/s
RUN_OVERHEAD_MIN = 2.0  # container start, imports, data load, export, holdout: minutes per run


def vit_flops(
    hidden_size: int, intermediate_size: int, num_hidden_layers: int, image_size: int, patch_size: int, **_
) -> float:
    """FLOPs of one forward pass of a ViT image tower (matrix products only)."""
    t, d = (image_size // patch_size) ** 2, hidden_size
    macs = num_hidden_layers * (4 * t * d * d + 2 * t * d * intermediate_size + 2 * t * t * d)
    return 2.0 * macs


def teacher_flops(model: str) -> float:
    """FLOPs of one teacher forward: a random stand-in's own shape, MedSigLIP's for a Hugging Face id."""
    from kdq.train.standins import RANDOM

    return vit_flops(**RANDOM.get(model, RANDOM[MEDSIGLIP])[0])


def teacher_cpu_hours(model: str, views: int, n_images: int, cores: int) -> float:
    """Hours for the teacher to embed every picture under the plain view and ``views`` augmented ones."""
    return teacher_flops(model) * n_images * (views + 1) / (CPU_GFLOPS_PER_CORE * 1e9 * cores) / 3600


def pictures(spec) -> int:
    """The pictures a run of ``spec`` sees: the course's, or ``data.limit_per_class`` of each of 10."""
    limit = spec.data.limit_per_class
    return min(COURSE_IMAGES, 10 * limit) if limit else COURSE_IMAGES


@dataclass(frozen=True)
class Cost:
    teacher_forwards: int  # once per dataset and teacher: every later run reads the cache
    teacher_min: float
    epochs: int
    student_min: float

    @property
    def total_min(self) -> float:
        return self.teacher_min + self.student_min + RUN_OVERHEAD_MIN


def recipe_cost(spec) -> Cost:
    """What one run of ``spec`` costs on an H100 with a cold teacher cache."""
    n, d = pictures(spec), spec.data
    views = spec.teacher.views + 1 + getattr(spec.teacher, "mix_views", 0)  # the plain picture is a view
    forwards = 0 if spec.teacher.kind == "none" else n * views
    teacher_s = (
        forwards * (teacher_flops(spec.teacher.model) if forwards else 0) / (H100_BF16_FLOPS * TEACHER_MFU)
    )
    everything = getattr(d, "train_on", "split") == "all"
    n_train = n if everything else round(n * (1 - d.val_fraction - d.holdout_fraction))
    n_val = 0 if everything else round(n * d.val_fraction)
    epoch_s = (n_train + n_val / 3) / STUDENT_IMAGES_PER_S
    return Cost(forwards, teacher_s / 60, spec.train.epochs, spec.train.epochs * epoch_s / 60)


def cost_line(path, spec) -> str:
    """The recipe's cost on an H100; a local spec runs on this machine, and says so (its CPU's hours, if
    they are many, are ``slow_cpu_runs``' warning)."""
    c = recipe_cost(spec)
    where = (
        "GPU-minutes on an H100"
        if spec.backend.kind == "modal"
        else "minutes on an H100-class GPU (a local run: this machine's GPU or CPU sets its time, no credit)"
    )
    return (
        f"{path}: {spec.name}: cost: {c.teacher_forwards:,} teacher forwards (~{c.teacher_min:,.0f} min, "
        f"once per dataset and teacher), {c.epochs} student epochs (~{c.student_min:,.0f} min): "
        f"about {c.total_min:,.0f} {where}"
    )


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def slow_cpu_runs(specs: list, cuda: bool | None = None, cores: int | None = None) -> list[str]:
    """One line per spec that would run its teacher on this machine's CPU for more than WARN_HOURS."""
    local = [
        (p, s)
        for p, s in specs
        if s.backend.kind == "local" and s.teacher.kind != "none" and s.teacher.model != "tiny"
    ]
    if not local:
        return []
    cores = cores or os.cpu_count() or 1
    out = []
    for path, s in local:
        if s.train.device != "cpu" and (has_cuda() if cuda is None else cuda):
            continue
        n = pictures(s)
        hours = teacher_cpu_hours(s.teacher.model, s.teacher.views, n, cores)
        if hours > WARN_HOURS:
            out.append(
                f"{path}: {s.name}: runs on this machine's CPU ({cores} cores): teacher {s.teacher.model} "
                f"needs about {hours:,.0f} hours to embed {n:,} pictures x {s.teacher.views + 1} views "
                "(once per dataset) before the first epoch; set backend.kind = 'modal' for a GPU (minutes), "
                "or teacher.model = 'tiny' to try the pipeline"
            )
    return out


def first_run_min(spec) -> float:
    """GPU-minutes a first run of ``spec`` needs on Modal (it may be the one that builds the teacher
    cache): ``recipe_cost`` plus the run's overhead."""
    return recipe_cost(spec).total_min + RUN_OVERHEAD_MIN


def attempt_limit_min(spec) -> int:
    """A ``backend.timeout_min`` that fits a first run: half again for the estimate's error, in whole
    5 minutes (``BackendSpec`` sizes an unset one so on Modal)."""
    return 5 * math.ceil(first_run_min(spec) * 1.5 / 5)


def over_the_limits(specs: list) -> list[str]:
    """One line per Modal spec whose own limits would stop its run: a first run (it may be the one that
    builds the teacher cache) needs ``recipe_cost`` plus the run's overhead; past ``backend.timeout_min``
    the attempt is killed and retried, past ``backend.max_gpu_min`` the call is cancelled. Both are paid."""
    out = []
    for path, s in specs:
        if s.backend.kind != "modal":
            continue
        need, enough = first_run_min(s), attempt_limit_min(s)
        b = s.backend
        if need > b.attempt_min:
            field = f"backend.timeout_min = {b.attempt_min}"
        elif need > b.max_gpu_min:
            field = f"backend.max_gpu_min = {b.max_gpu_min:g}"
        else:
            continue
        out.append(
            f"{path}: {s.name}: a first run needs about {need:,.0f} GPU-minutes (teacher cache included) but "
            f"{field} stops it before then, and the minutes spent are paid; set backend.timeout_min = "
            f"{enough} and backend.max_gpu_min = {2 * enough} (one retry)"
        )
    return out
