"""The Modal app: image, Volume, Hugging Face secret, the training function and what it runs.

Deploy with ``kdq modal deploy`` (it creates the secret the app names, then runs ``python -m modal
deploy -m jobs.modal_app``; the worker does the same by itself when kdq's code changed). Importing
this module builds the objects and makes no network call. The worker spawns ``train`` through
``modal.Function.from_name(app, "train").with_options(gpu=..., timeout=..., memory=...)``: the values
below are only defaults.

In the container ``train`` runs ``run_training``: it claims the run folder on the Volume, runs
``python -m kdq.train`` (which resumes from checkpoint.pt when Modal restarts a preempted call), and
every ``HEARTBEAT_S`` seconds copies the training log to the Volume and commits it, so progress.json
and the log are visible outside. A Volume commit (and the reload it ends with) fails while any file on
the Volume is open, and a file open for writing is left out of it: so the training process's lock and
its live output stay on the container's own disk, and every file this code writes on the Volume is
closed again before it commits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import modal

from kdq import runfolder
from kdq.backends.modal_gateway import CACHE, DATASET_MARK, MOUNT, OWNER, dataset_path, run_path
from kdq.settings import Settings

settings = Settings()

PYTHON = "3.11"
DEFAULT_GPU = "H100"
DEFAULT_TIMEOUT_S = 240 * 60  # BackendSpec.timeout_min's default; spawns override it per spec
DEFAULT_MEMORY_MIB = 32 * 1024  # spawns ask for what their dataset needs (kdq.backends.modal.memory_mib)
RETRIES = modal.Retries(max_retries=2, initial_delay=30.0, backoff_coefficient=2.0)
HEARTBEAT_S = 30.0
STALE_S = 180.0  # an owner silent this long is gone (its container died without Modal restarting it)
STOP_GRACE_S = 3.0  # Modal's grace period after a preemption is a few seconds: stop the child fast


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
# What kdq's training imports, pinned. torch is a setting (KDQ_MODAL_TORCH): it writes model.pt,
# which the course server must be able to load.
PACKAGES = [
    *TORCH,
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
    .uv_pip_install(*PACKAGES, extra_index_url=TORCH_INDEX)
    .env(
        {
            "HF_HOME": f"{MOUNT}/{CACHE}/huggingface",  # teacher weights downloaded once
            "TORCH_HOME": f"{MOUNT}/{CACHE}/torch",
            "PYTHONUNBUFFERED": "1",
        }
    )
    .add_local_python_source("kdq", "jobs")
)
volume = modal.Volume.from_name(settings.modal_volume, create_if_missing=True)
# The secret must exist before the first deploy: `kdq modal deploy` creates it (kdq/hf.py fills it).
hf_secret = modal.Secret.from_name(settings.modal_secret)

# The image carries kdq and jobs (add_local_python_source): no second, automatic copy of this module.
app = modal.App(settings.modal_app, image=image, include_source=False)

FUNCTION_OPTIONS = dict(
    gpu=DEFAULT_GPU,
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
    )


# ---------------------------------------------------------------- in the container


class RunDied(RuntimeError):
    """The training process ended without done.json or error.json: let Modal retry (it resumes)."""


def _owner_is_other_and_alive(owner: dict | None, call_id: str, now: float, stale_s: float) -> bool:
    return bool(
        owner and owner.get("call_id") != call_id and now - float(owner.get("heartbeat", 0)) < stale_s
    )


def _attempts(owner: dict | None, call_id: str, now: float) -> list[list[float | None]]:
    """This call's attempts so far (``[start, end]``, seconds), closed, plus a new one from ``now``. An
    attempt a preemption cut off ends at its last heartbeat."""
    if not owner or owner.get("call_id") != call_id:
        return [[now, None]]
    done = [
        [start, end if end is not None else owner.get("heartbeat")]
        for start, end in owner.get("attempts", [])
    ]
    return [*done, [now, None]]


def _result(run_dir: Path, run_id: str, call_id: str, **extra: Any) -> dict[str, Any]:
    outcome = runfolder.outcome(run_dir)
    out: dict[str, Any] = {"run_id": run_id, "call_id": call_id, "outcome": outcome, **extra}
    if outcome == "done":
        out["summary"] = runfolder.read_json(run_dir / runfolder.DONE)
    elif outcome == "error":
        out["error"] = runfolder.error_message(run_dir)
    return out


class _LogCopy:
    """Appends what the training process wrote to its local log onto the Volume's log.txt, each time
    opening and closing that file (a commit leaves out, and its reload fails on, an open file)."""

    def __init__(self, local: Path, remote: Path):
        self.local, self.remote, self.done = local, remote, 0

    def __call__(self) -> None:
        if not self.local.exists():
            return
        with open(self.local, "rb") as f:
            f.seek(self.done)
            new = f.read()
        if new:
            with open(self.remote, "ab") as out:
                out.write(new)
            self.done += len(new)


def run_training(
    root: Path,
    run_id: str,
    dataset: str,
    *,
    call_id: str,
    commit: Callable[[], None] = lambda: None,
    reload: Callable[[], None] = lambda: None,
    local_dir: Path | None = None,
    resume_from: str | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    stale_s: float = STALE_S,
    device: str = "cuda",
    env: dict[str, str] | None = None,
    python: str = sys.executable,
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
) -> dict[str, Any]:
    """Train ``runs/<run_id>`` under ``root`` to the end and return a plain dict (Modal pickles it).

    Returns ``{"outcome": "done" | "error" | "duplicate", ...}``; raises ``RunDied`` when the training
    process vanished without a verdict, so that Modal's retries start it again (it resumes).
    ``local_dir``: the container's own disk, for the training lock and the live log. ``resume_from``:
    an earlier run on the Volume whose checkpoint the training starts from (``kdq retry``). ``device``:
    what the training must run on (a GPU container: ``cuda``, never a silent CPU fallback); ``env``:
    added to the training process's environment.
    """
    reload()  # see what other containers committed: an owner, a finished run
    run_dir = root / run_path(run_id)
    if runfolder.outcome(run_dir) == "done":
        log(f"{run_id}: already done, not training again")
        return _result(run_dir, run_id, call_id)
    if not (run_dir / runfolder.SPEC).exists():
        return {
            "run_id": run_id,
            "call_id": call_id,
            "outcome": "error",
            "error": f"{run_path(run_id)}/{runfolder.SPEC} is not on the Volume: launch the run with kdq",
        }
    owner = runfolder.read_json(run_dir / OWNER)
    if _owner_is_other_and_alive(owner, call_id, time.time(), stale_s):
        log(f"{run_id}: call {owner['call_id']} is training this run; this call {call_id} stands down")
        return {"run_id": run_id, "call_id": call_id, "outcome": "duplicate", "owner": owner["call_id"]}
    data_dir = root / dataset_path(dataset)
    if not (data_dir / DATASET_MARK).exists():
        error = (
            f"dataset {dataset!r} is not on the Volume ({dataset_path(dataset)}): "
            f"run `kdq data upload PATH --name {dataset}`, then `kdq retry`"
        )
        runfolder.write_json(run_dir / runfolder.ERROR, {"error": error, "traceback": ""})
        commit()
        return {"run_id": run_id, "call_id": call_id, "outcome": "error", "error": error}

    attempts = _attempts(owner, call_id, time.time())

    def beat(pid: int | None, **extra: Any) -> None:
        record = {"call_id": call_id, "heartbeat": time.time(), "pid": pid, "attempts": attempts, **extra}
        runfolder.write_json(run_dir / OWNER, record)

    beat(None)
    commit()  # claim the run before the (long) start of training
    local = Path(local_dir or tempfile.mkdtemp(prefix=f"kdq-{run_id}-"))
    local.mkdir(parents=True, exist_ok=True)
    copy_log = _LogCopy(local / runfolder.LOG, run_dir / runfolder.LOG)
    lock = local / "train.lock"
    cmd = [python, "-m", "kdq.train", str(run_dir), "--data", str(data_dir), "--cache", str(root / CACHE)]
    cmd += ["--device", device]
    cmd += ["--resume-from", str(root / run_path(resume_from))] if resume_from else []
    log(f"{run_id}: {' '.join(cmd)} --lock {lock}")
    with open(local / runfolder.LOG, "ab") as out:  # only the child keeps it open
        proc = subprocess.Popen(
            [*cmd, "--lock", str(lock)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    code: int | None = None
    try:
        while code is None:
            try:
                code = proc.wait(timeout=heartbeat_s)
            except subprocess.TimeoutExpired:
                copy_log()
                beat(proc.pid)
                try:
                    commit()  # progress.json, checkpoints and the log become visible outside
                except Exception as exc:  # noqa: BLE001 — a failed periodic commit is retried next beat
                    log(f"{run_id}: periodic volume commit failed (will retry): {exc!r}")
    finally:
        if proc.poll() is None:  # cancelled, preempted (SIGINT) or crashing: stop the child, fast
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        copy_log()
        attempts[-1][1] = time.time()
        beat(None, exit_code=proc.returncode, ended_at=time.time())
        try:
            commit()  # the final commit: every file the run wrote is visible outside before we return
        except Exception as exc:  # noqa: BLE001 — on the way out of a cancel or a crash: do not mask it
            if code is not None:
                raise
            log(f"{run_id}: the last volume commit failed: {exc!r}")
    result = _result(run_dir, run_id, call_id, exit_code=code)
    if result["outcome"] is None:
        raise RunDied(
            f"{run_id}: the training process exited with code {code} without done.json or error.json. "
            f"Last lines of its log:\n{runfolder.log_tail(run_dir)}"
        )
    return result
