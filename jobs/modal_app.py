"""The Modal app: image, Volume, Hugging Face secret, the training function and what it runs.

Deploy with ``kdq modal deploy`` (it creates the secret the app names, then runs ``python -m modal
deploy -m jobs.modal_app``; the worker does the same by itself when kdq's code changed). Importing
this module builds the objects and makes no network call. The worker spawns one input per experiment:
``modal.Cls.from_name(app, "Trainer").with_options(gpu=, memory=, max_containers=)
.with_concurrency(max_inputs=backend.pack)().train.spawn(...)``, the same options for every spec with
the same GPU and pack, so that their inputs share one container pool and pack onto its GPUs (the
values below are only defaults).

In the container each input runs ``jobs.container.run_training`` (through ``jobs.packing``). Before
the first training on a dataset, the worker spawns the CPU-only ``decode`` function once
(``jobs.decode.decode_dataset``): no GPU bills while JPEGs are decoded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import modal
from modal.file_pattern_matcher import FilePatternMatcher

from jobs.container import run_training
from jobs.decode import decode_dataset
from jobs.packing import Pack, train_input
from kdq.backends.modal_gateway import CACHE, MOUNT, live_name
from kdq.backends.modal_sizing import MEMORY_BUCKETS_MIB, PACK, containers
from kdq.settings import Settings

settings = Settings()

PYTHON = "3.11"
DEFAULT_GPU = "H100"
TIMEOUT_CEILING_S = 24 * 60 * 60  # BackendSpec.timeout_min's upper bound; each input stops at its own
SCALEDOWN_S = 120  # a container idle this long goes: the next trial of a search finds it warm
CPU = 8.0
DEFAULT_MEMORY_MIB = 64 * 1024  # spawns ask for what their pack of runs needs (modal_sizing.memory_mib)
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
    "tenacity==9.2.1",  # jobs/container.py tries the last commit again while a neighbour's file is open
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

CLASS_OPTIONS = dict(
    gpu=DEFAULT_GPU,
    # Reserved cores: the JPEG decode, the holdout, the export and Python's dispatch of the students
    # run on them (the default reservation is 1/8 of a core, and a core-hour costs 1/84 of an H100's).
    cpu=CPU,
    memory=DEFAULT_MEMORY_MIB,
    # Modal's bound on one input, a backstop: each input stops itself at its spec's backend.timeout_min
    # (an option per spawn would put every spec in a container pool of its own, and nothing would pack).
    timeout=TIMEOUT_CEILING_S,
    retries=RETRIES,
    max_containers=containers(settings.modal_max_running, PACK),  # spawns set it from the settings
    scaledown_window=SCALEDOWN_S,
)


@app.cls(volumes={MOUNT: volume}, secrets=[hf_secret], **CLASS_OPTIONS)
@modal.concurrent(max_inputs=PACK)  # spawns set it from backend.pack (with_concurrency)
class Trainer:
    """Up to ``backend.pack`` experiments at once in one GPU container, one input each."""

    @modal.enter()
    def setup(self) -> None:
        self.pack = Pack(Path(tempfile.mkdtemp(prefix="kdq-pack-")))

    @modal.method()
    async def train(
        self,
        run_id: str,
        dataset: str,
        resume_from: str | None = None,
        timeout_s: float | None = None,
        pack: int = PACK,
        teacher_cache_only: bool = False,
    ) -> dict:
        """Train run folder ``runs/<run_id>`` on the Volume (``teacher_cache_only``: build the teacher cache
        its spec needs, for every run, and train nothing); returns a plain dict (see ``run_training``)."""
        self.pack.pack = pack  # every input of this container pool was spawned with the same
        return await train_input(
            run_training,
            root=Path(MOUNT),
            run_id=run_id,
            dataset=dataset,
            resume_from=resume_from,
            call_id=modal.current_function_call_id() or "unknown",
            commit=volume.commit,
            reload=volume.reload,
            live=live,
            pack=self.pack,
            timeout_s=timeout_s,
            teacher_cache_only=teacher_cache_only,
        )


DECODE_OPTIONS = dict(
    cpu=CPU,  # PIL decodes on 8 threads (kdq/train/data.py); no GPU at all
    memory=MEMORY_BUCKETS_MIB[0],  # spawns ask for what their dataset needs (modal_sizing.memory_mib)
    timeout=60 * 60,
    retries=RETRIES,
)


@app.function(volumes={MOUNT: volume}, **DECODE_OPTIONS)
def decode(dataset: str, decode_size: int, limit_per_class: int | None = None) -> dict:
    """Decode dataset ``dataset`` once into the Volume's cache for every run; returns a plain dict (see
    ``decode_dataset``)."""
    return decode_dataset(
        Path(MOUNT),
        dataset,
        decode_size,
        limit_per_class=limit_per_class,
        commit=volume.commit,
        reload=volume.reload,
    )
