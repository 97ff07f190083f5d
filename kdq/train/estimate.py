"""How long the teacher's one-off embedding pass takes where a run would do it: a warning at enqueue.

    for line in slow_cpu_runs(specs):   # [(path, spec)] -> one line per local CPU run that would take hours
        warn(line)

A ViT forward costs ``2 * layers * (4 T d^2 + 2 T d d_ff + 2 T^2 d)`` FLOPs for T patch tokens of width
d. MedSigLIP (a so400m tower at 448: 1,024 tokens, 27 layers) is about 1 TFLOP per picture; a CPU core
does about ``CPU_GFLOPS_PER_CORE`` in fp32 (measured: see docs/training.md), so 10,000 pictures under
5 views take over a hundred hours on a laptop, minutes on a GPU. Pure arithmetic, except ``has_cuda``.
"""

from __future__ import annotations

import os

CPU_GFLOPS_PER_CORE = 36.0  # a ViT-B/16 forward measured at ~72 GFLOP/s on 2 shared cores
COURSE_IMAGES = 10_000  # the course's training set
WARN_HOURS = 1.0
MEDSIGLIP = "random-so400m-448"  # the stand-in with MedSigLIP's shape: Hugging Face ids are costed as it


def vit_flops(
    hidden_size: int, intermediate_size: int, num_hidden_layers: int, image_size: int, patch_size: int, **_
) -> float:
    """FLOPs of one forward pass of a ViT image tower (matrix products only)."""
    t, d = (image_size // patch_size) ** 2, hidden_size
    macs = num_hidden_layers * (4 * t * d * d + 2 * t * d * intermediate_size + 2 * t * t * d)
    return 2.0 * macs


def teacher_cpu_hours(model: str, views: int, n_images: int, cores: int) -> float:
    """Hours for the teacher to embed every picture under the plain view and ``views`` augmented ones."""
    from kdq.train.teacher import RANDOM

    vision = RANDOM.get(model, RANDOM[MEDSIGLIP])[0]
    return vit_flops(**vision) * n_images * (views + 1) / (CPU_GFLOPS_PER_CORE * 1e9 * cores) / 3600


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
        n = min(COURSE_IMAGES, 10 * s.data.limit_per_class) if s.data.limit_per_class else COURSE_IMAGES
        hours = teacher_cpu_hours(s.teacher.model, s.teacher.views, n, cores)
        if hours > WARN_HOURS:
            out.append(
                f"{path}: {s.name}: runs on this machine's CPU ({cores} cores): teacher {s.teacher.model} "
                f"needs about {hours:,.0f} hours to embed {n:,} pictures x {s.teacher.views + 1} views "
                "(once per dataset) before the first epoch; set backend.kind = 'modal' for a GPU (minutes), "
                "or teacher.model = 'tiny' to try the pipeline"
            )
    return out
