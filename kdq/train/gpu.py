"""Which GPU, NVIDIA driver, torch and CUDA build a training runs on, and the rule that a paid GPU is
used or nothing runs.

``describe()`` is recorded in progress.json (from the start) and metrics.json, so every result says
what it ran on. ``require_cuda`` is what the Modal container asks for (``python -m kdq.train --device
cuda``): a torch that cannot use the container's GPU (a CUDA build newer than the driver, no GPU
attached) would otherwise train on the container's CPU for hours while the GPU bills. The error names
all four, and the training ends with error.json: a verdict, which Modal does not retry.
"""

from __future__ import annotations

import subprocess
import warnings
from typing import Any

FIX = (
    "pin a torch whose CUDA build this driver supports (KDQ_MODAL_TORCH, for example 2.14.1+cu128; "
    "docs/modal.md), run `kdq modal deploy`, then `kdq retry ID`"
)


class CudaUnusable(RuntimeError):
    """The GPU this training was given cannot be used: it must not fall back to the CPU."""


def nvidia_smi() -> dict[str, Any]:
    """The first GPU's name and the driver's version, as ``nvidia-smi`` reports them (``None`` and why,
    when it cannot)."""
    query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"gpu": None, "driver": None, "nvidia_smi": f"{type(exc).__name__}: {exc}"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        why = (out.stderr or out.stdout).strip().splitlines()
        return {"gpu": None, "driver": None, "nvidia_smi": why[0] if why else f"exit {out.returncode}"}
    name, _, driver = lines[0].partition(",")
    return {"gpu": name.strip(), "driver": driver.strip()}


def describe() -> dict[str, Any]:
    """``{"gpu", "driver", "torch", "cuda", "cuda_usable", ...}``: the machine as this process sees it.
    ``cuda`` is the CUDA version torch was built for (``None``: a CPU build); ``cuda_error`` says why
    torch cannot use the GPU when it cannot (torch's own warning, such as a driver too old)."""
    import torch

    info: dict[str, Any] = {**nvidia_smi(), "torch": torch.__version__, "cuda": torch.version.cuda}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            info["cuda_usable"] = bool(torch.cuda.is_available())
        except Exception as exc:  # noqa: BLE001 — a broken driver install: the reason is the record
            info["cuda_usable"], info["cuda_error"] = False, f"{type(exc).__name__}: {exc}"
    if info["cuda_usable"]:
        info["device_name"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    elif seen and "cuda_error" not in info:
        info["cuda_error"] = str(seen[0].message).strip().splitlines()[0]
    return info


def unusable(info: dict[str, Any]) -> str | None:
    """What is wrong when the GPU cannot be used, naming GPU, driver, torch and CUDA; ``None`` when it can."""
    if info.get("cuda_usable"):
        return None
    gpu = info.get("gpu") or "none visible"
    driver = info.get("driver") or f"not found ({info.get('nvidia_smi') or 'nvidia-smi gave nothing'})"
    cuda = info.get("cuda") or "none (a CPU-only build)"
    why = f" (torch: {info['cuda_error']})" if info.get("cuda_error") else ""
    return (
        f"CUDA is not usable here, so nothing was trained (a GPU run never falls back to the CPU): "
        f"GPU {gpu}, NVIDIA driver {driver}, torch {info.get('torch')} built for CUDA {cuda}{why}; {FIX}"
    )


def require_cuda(info: dict[str, Any]) -> None:
    if message := unusable(info):
        raise CudaUnusable(message)


MEMORY_FRACTION_ENV = "KDQ_CUDA_MEMORY_FRACTION"  # set by the Modal container for packed runs


def limit_memory(environ: dict[str, str]) -> float | None:
    """Packed runs share one GPU, which isolates no memory between processes: this process takes at
    most its share (``KDQ_CUDA_MEMORY_FRACTION``, 1/pack), so a student that needs more fails alone
    with an out-of-memory error instead of starving its neighbours. Returns the fraction set."""
    if not (raw := environ.get(MEMORY_FRACTION_ENV)):
        return None
    import torch

    fraction = float(raw)
    torch.cuda.set_per_process_memory_fraction(fraction)
    return fraction
