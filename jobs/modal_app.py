"""The Modal app: image, Volume, Hugging Face secret, the training function and what it runs.

Deploy with ``kdq modal deploy`` (it creates the secret the app names, then runs ``python -m modal
deploy -m jobs.modal_app``; the worker does the same by itself when kdq's code changed). Importing
this module builds the objects and makes no network call. The worker spawns ``train`` through
``modal.Function.from_name(app, "train").with_options(gpu=..., timeout=..., memory=...)``: the values
below are only defaults.

In the container ``train`` runs ``jobs.container.run_training``.
"""

from __future__ import annotations

from pathlib import Path

import modal
from modal.file_pattern_matcher import FilePatternMatcher

from jobs.container import run_training
from kdq.backends.modal_gateway import CACHE, MOUNT, live_name
from kdq.settings import Settings

settings = Settings()

PYTHON = "3.11"
DEFAULT_GPU = "H100"
DEFAULT_TIMEOUT_S = 20 * 60  # BackendSpec.attempt_min on Modal; spawns override it per spec
CPU = 8.0
DEFAULT_MEMORY_MIB = 32 * 1024  # spawns ask for what their dataset needs (kdq.backends.modal.memory_mib)
# One retry: a preemption or a vanished training resumes once; a hang or a timeout is not paid twice more.
RETRIES = modal.Retries(max_retries=1, initial_delay=10.0)


# ---------------------------------------------------------------- the image


def torch_packages(torch_version: str) -> tuple[list[str], str | None]:
    """torch and the torchvision built for it (torch 2.M pairs with torchvision 0.(M+15)), and the
    PyTorch index a local build such as ``2.14.1+cu130`` comes from (``None``: PyPI's default build)."""
    release, _, local = torch_version.partition("+")
    major, minor, *rest = release.split(".")
    if major != "2":
        raise ValueError(f"KDQ_MODAL_TORCH = {torch_version!r}: only torch 2.x is supported")
    vision = f"0.{int(minor) + 15}.{rest[0] if rest else 0}" + (f"+{local}" if local else "")
    index = f"https://download.pytorch.org/whl/{local}" if local else None
    return [f"torch=={torch_version}", f"torchvision=={vision}"], index


TORCH, TORCH_INDEX = torch_packages(settings.modal_torch)
# The uv that installs them, pinned: Modal copies uv's `latest` image otherwise, and a new uv can change
# how an unchanged list resolves.
UV_VERSION = "0.13.8"
# kdq's code and the data it reads in the container (the grader's operator list, kdq/data/*.json);
# Modal's default would copy the .py files alone.
SOURCE_IGNORED = ~FilePatternMatcher("**/*.py", "**/*.json")

# What kdq's training imports besides torch, pinned, from PyPI. torch is a setting (KDQ_MODAL_TORCH): it
# writes model.pt, which the course server must be able to load.
PACKAGES = [
    "timm==1.0.31",
    "transformers==5.24.0",
    "huggingface_hub==2.4.0",
    "safetensors==0.8.0",
    "sentencepiece==0.2.3",  # the teacher's text tokenizer (zero-shot prompts)
    "protobuf==7.36.2",
    "numpy==2.4.6",
    "pillow==13.0.0",
    "scikit-learn==1.9.1",
    "scipy==1.17.1",  # kdq.dedup's connected components (the split keeps duplicates together)
    "ImageHash==4.3.2",
    "pydantic==2.14.4",
    "pydantic-settings==2.16.3",
    "structlog==26.1.0",
    "tensorboard==2.21.0",  # each run's curves as event files (kdq/train/curves.py)
]

image = (
    modal.Image.debian_slim(python_version=PYTHON)
    # torch and torchvision in a layer of their own, from their own index: with the PyTorch index as an
    # extra one, uv takes every package that index also hosts (numpy, pillow, ...) from it alone, where
    # the pins below may not exist, and the build fails.
    .uv_pip_install(*TORCH, index_url=TORCH_INDEX, uv_version=UV_VERSION)
    .uv_pip_install(*PACKAGES, uv_version=UV_VERSION)
    .env(
        {
            "HF_HOME": f"{MOUNT}/{CACHE}/huggingface",  # teacher weights downloaded once
            "TORCH_HOME": f"{MOUNT}/{CACHE}/torch",
            "PYTHONUNBUFFERED": "1",
        }
    )
    .add_local_python_source("kdq", "jobs", ignore=SOURCE_IGNORED)
)
volume = modal.Volume.from_name(settings.modal_volume, create_if_missing=True)
# The secret must exist before the first deploy: `kdq modal deploy` creates it (kdq/hf.py fills it).
hf_secret = modal.Secret.from_name(settings.modal_secret)

# Leases and heartbeats, seen by every container and the worker at once (a Volume file only after a
# commit and a reload).
live = modal.Dict.from_name(live_name(settings.modal_app), create_if_missing=True)

# The image carries kdq and jobs (add_local_python_source): no second, automatic copy of this module.
app = modal.App(settings.modal_app, image=image, include_source=False)

FUNCTION_OPTIONS = dict(
    gpu=DEFAULT_GPU,
    # Reserved cores: the JPEG decode, the holdout, the export and Python's dispatch of the student
    # run on them (the default reservation is 1/8 of a core, and a core-hour costs 1/84 of an H100's).
    cpu=CPU,
    memory=DEFAULT_MEMORY_MIB,
    timeout=DEFAULT_TIMEOUT_S,
    retries=RETRIES,
    single_use_containers=True,  # a fresh container per attempt: no state carried between runs
)


@app.function(volumes={MOUNT: volume}, secrets=[hf_secret], **FUNCTION_OPTIONS)
def train(run_id: str, dataset: str, resume_from: str | None = None) -> dict:
    """Train run folder ``runs/<run_id>`` on the Volume; returns a plain dict (see ``run_training``)."""
    return run_training(
        Path(MOUNT),
        run_id,
        dataset,
        resume_from=resume_from,
        call_id=modal.current_function_call_id() or "unknown",
        commit=volume.commit,
        reload=volume.reload,
        live=live,
    )
