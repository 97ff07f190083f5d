"""What a Modal run asks for and what it used: memory in a few buckets, GPU containers for a pack of
experiments each, GPU-minutes over attempts."""

from __future__ import annotations

import math

from kdq.backends.modal_gateway import SpawnOptions

PACK = 4  # BackendSpec.pack's default: experiments trained at once on one GPU
MEMORY_BUCKETS_MIB = (16 * 1024, 32 * 1024, 64 * 1024, 128 * 1024)


def memory_mib(images: int, decode_size: int, teacher_size: int | None = 448, pack: int = 1) -> int:
    """Memory to request for a dataset of ``images``: the uint8 decode at ``decode_size`` and, for a
    teacher run, the one at the teacher's input size, times 1.5, plus 4 GiB for Python and torch,
    rounded up to one of a few buckets: each distinct set of options is a container pool of its own
    on Modal, so specs that differ a little must still ask for the same. ``pack`` runs share the
    container, each training process with its own decode."""
    pixels = decode_size**2 + (teacher_size or 0) ** 2
    need = pack * (int(images * 3 * pixels * 1.5 / 2**20) + 4096)
    return next((b for b in MEMORY_BUCKETS_MIB if b >= need), need)


def gpu_minutes(attempts: list[list[float | None]], now: float) -> float:
    """Minutes of every attempt of one call together (``[start, end]``; a running one ends ``now``)."""
    return sum((end if end is not None else now) - start for start, end in attempts) / 60


def containers(max_running: int, pack: int) -> int:
    """GPU containers at most (``max_containers``): ``KDQ_MODAL_MAX_RUNNING`` experiments train at once,
    ``pack`` of them on each GPU."""
    return math.ceil(max_running / pack)


def spawn_options(spec, images: int, max_running: int) -> SpawnOptions:
    """What a spawn of ``spec`` (an ExperimentSpec) on a dataset of ``images`` asks of Modal: only the
    GPU, the pack, a memory bucket and the settings, so that specs alike share one container pool."""
    b, teacher = spec.backend, 448 if spec.teacher.kind == "siglip" else None
    memory = memory_mib(images, spec.data.decode_size, teacher, pack=b.pack)
    return SpawnOptions(
        gpu=b.gpu, memory_mib=memory, pack=b.pack, max_containers=containers(max_running, b.pack)
    )
