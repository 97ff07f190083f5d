"""The Modal app: image, Volume, Hugging Face secret and the training function.

Deploy with ``kdq modal deploy`` (the worker also redeploys by itself when kdq's code changed), or
``modal deploy -m jobs.modal_app``. Importing this module builds the objects and makes no network
call. The worker spawns ``train`` through ``modal.Function.from_name(app, "train")
.with_options(gpu=spec.backend.gpu, timeout=...)``: the GPU below is only the default.

Inside the container ``train`` runs ``kdq.backends.modal_remote.run_training``: it claims the run
folder on the Volume, runs ``python -m kdq.train`` (which resumes from checkpoint.pt when Modal
restarts a preempted call), commits the Volume every ``HEARTBEAT_S`` seconds so progress.json is
visible outside, and commits once more before it returns.
"""

from __future__ import annotations

from pathlib import Path

import modal

from kdq.backends import modal_remote as remote
from kdq.settings import Settings

settings = Settings()

PYTHON = "3.11"
DEFAULT_GPU = "H100"
DEFAULT_TIMEOUT_S = 240 * 60  # BackendSpec.timeout_min's default; spawns override it per spec
RETRIES = modal.Retries(max_retries=2, initial_delay=30.0, backoff_coefficient=2.0)


def torchvision_for(torch_version: str) -> str:
    """The torchvision release built for a torch release (torch 2.M pairs with torchvision 0.(M+15))."""
    major, minor, *rest = torch_version.split(".")
    if major != "2":
        raise ValueError(f"modal_torch = {torch_version!r}: only torch 2.x is supported")
    return f"0.{int(minor) + 15}.{rest[0] if rest else 0}"


# What kdq's training imports, pinned. torch is a setting (KDQ_MODAL_TORCH): it writes model.pt,
# which the course server must be able to load.
PACKAGES = [
    f"torch=={settings.modal_torch}",
    f"torchvision=={torchvision_for(settings.modal_torch)}",
    "timm==1.0.31",
    "transformers==5.24.0",
    "huggingface_hub==2.4.0",
    "safetensors==0.8.0",
    "numpy==2.4.6",
    "pillow==13.0.0",
    "scikit-learn==1.9.1",
    "ImageHash==4.3.2",
    "pydantic==2.14.4",
    "pydantic-settings==2.16.3",
    "structlog==26.1.0",
]

image = (
    modal.Image.debian_slim(python_version=PYTHON)
    .uv_pip_install(*PACKAGES)
    .env(
        {
            "HF_HOME": f"{remote.MOUNT}/{remote.CACHE}/huggingface",  # teacher weights downloaded once
            "TORCH_HOME": f"{remote.MOUNT}/{remote.CACHE}/torch",
            "PYTHONUNBUFFERED": "1",
        }
    )
    .add_local_python_source("kdq", "jobs")
)
volume = modal.Volume.from_name(settings.modal_volume, create_if_missing=True)
hf_secret = modal.Secret.from_name(settings.modal_secret)  # kept in sync by kdq (kdq/hf.py)

# The image carries kdq and jobs (add_local_python_source): no second, automatic copy of this module.
app = modal.App(settings.modal_app, image=image, include_source=False)


@app.function(
    gpu=DEFAULT_GPU,
    volumes={remote.MOUNT: volume},
    secrets=[hf_secret],
    timeout=DEFAULT_TIMEOUT_S,
    retries=RETRIES,
    single_use_containers=True,  # a fresh container per attempt: no state carried between runs
)
def train(run_id: str, dataset: str) -> dict:
    """Train run folder ``runs/<run_id>`` on the Volume; returns a plain dict (see modal_remote)."""
    return remote.run_training(
        Path(remote.MOUNT),
        run_id,
        dataset,
        call_id=modal.current_function_call_id() or "unknown",
        commit=volume.commit,
        reload=volume.reload,
    )
