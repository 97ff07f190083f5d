"""What a Modal run asks for and what it used: memory in a few buckets, GPU-minutes over attempts."""

from __future__ import annotations

MEMORY_BUCKETS_MIB = (16 * 1024, 32 * 1024, 64 * 1024, 128 * 1024)


def memory_mib(images: int, decode_size: int, teacher_size: int | None = 448) -> int:
    """Memory to request for a dataset of ``images``: the uint8 decode at ``decode_size`` and, for a
    teacher run, the one at the teacher's input size, times 1.5, plus 4 GiB for Python and torch,
    rounded up to one of a few buckets: each distinct set of options is a container pool of its own
    on Modal, so specs that differ a little must still ask for the same."""
    pixels = decode_size**2 + (teacher_size or 0) ** 2
    need = int(images * 3 * pixels * 1.5 / 2**20) + 4096
    return next((b for b in MEMORY_BUCKETS_MIB if b >= need), need)


def gpu_minutes(attempts: list[list[float | None]], now: float) -> float:
    """Minutes of every attempt of one call together (``[start, end]``; a running one ends ``now``)."""
    return sum((end if end is not None else now) - start for start, end in attempts) / 60
