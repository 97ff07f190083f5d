"""What runs inside the Modal container: one training run on the Volume, guarded against twins.

No ``modal`` import here: ``jobs/modal_app.py`` passes in the Volume's ``commit``/``reload`` and the
call id, and the tests run this same function against a temporary folder.

The Volume (mounted at ``MOUNT``) holds::

    datasets/<name>/...            uploaded once by ``kdq data upload`` (``DATASET_MARK`` written last)
    cache/                         decode and teacher caches, shared by every run
    runs/<run_id>/                 the run folder (kdq/runfolder.py) plus:
        launch.json                written by the backend before and after it spawns the call
        owner.json                 {"call_id", "heartbeat", "pid"}: which call trains this run now

Exactly one call trains a run: a call that starts while another call's ``owner.json`` heartbeat is
fresh returns ``{"outcome": "duplicate"}`` at once, and a run that already has ``done.json`` is never
trained again. Modal restarts a preempted call on the same input: the owner is then the same call
id, and ``python -m kdq.train`` resumes from ``checkpoint.pt``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdq import runfolder

MOUNT = "/vol"
RUNS = "runs"
DATASETS = "datasets"
CACHE = "cache"
LAUNCH = "launch.json"
OWNER = "owner.json"
DATASET_MARK = ".kdq-dataset.json"
HEARTBEAT_S = 30.0
STALE_S = 180.0  # an owner silent this long is gone (its container died without Modal restarting it)


def run_path(run_id: str) -> str:
    return f"{RUNS}/{run_id}"


def dataset_path(name: str) -> str:
    return f"{DATASETS}/{name}"


class RunDied(RuntimeError):
    """The training process ended without done.json or error.json: let Modal retry (it resumes)."""


def _owner_is_other_and_alive(owner: dict | None, call_id: str, now: float, stale_s: float) -> bool:
    return bool(
        owner and owner.get("call_id") != call_id and now - float(owner.get("heartbeat", 0)) < stale_s
    )


def _result(run_dir: Path, run_id: str, call_id: str, **extra: Any) -> dict[str, Any]:
    outcome = runfolder.outcome(run_dir)
    out: dict[str, Any] = {"run_id": run_id, "call_id": call_id, "outcome": outcome, **extra}
    if outcome == "done":
        out["summary"] = runfolder.read_json(run_dir / runfolder.DONE)
    elif outcome == "error":
        out["error"] = runfolder.error_message(run_dir)
    return out


def run_training(
    root: Path,
    run_id: str,
    dataset: str,
    *,
    call_id: str,
    commit: Callable[[], None] = lambda: None,
    reload: Callable[[], None] = lambda: None,
    heartbeat_s: float = HEARTBEAT_S,
    stale_s: float = STALE_S,
    python: str = sys.executable,
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
) -> dict[str, Any]:
    """Train ``runs/<run_id>`` under ``root`` to the end and return a plain dict (Modal pickles it).

    Returns ``{"outcome": "done" | "error" | "duplicate", ...}``; raises ``RunDied`` when the training
    process vanished without a verdict, so that Modal's retries start it again (it resumes).
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

    def beat(pid: int | None, **extra: Any) -> None:
        runfolder.write_json(
            run_dir / OWNER, {"call_id": call_id, "heartbeat": time.time(), "pid": pid, **extra}
        )

    beat(None, attempt_started_at=time.time())
    commit()  # claim the run before the (long) start of training
    cmd = [python, "-m", "kdq.train", str(run_dir), "--data", str(data_dir), "--cache", str(root / CACHE)]
    log(f"{run_id}: {' '.join(cmd)}")
    with open(run_dir / runfolder.LOG, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        while True:
            try:
                code = proc.wait(timeout=heartbeat_s)
                break
            except subprocess.TimeoutExpired:
                beat(proc.pid)
                try:
                    commit()  # progress.json and checkpoints become visible outside
                except Exception as exc:  # noqa: BLE001 — a failed periodic commit is retried next beat
                    log(f"{run_id}: periodic volume commit failed (will retry): {exc!r}")
    finally:
        if proc.poll() is None:  # cancelled (Modal raises InputCancellation here) or crashing: stop the child
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    beat(None, exit_code=code, ended_at=time.time())
    commit()  # the final commit: every file the run wrote is visible outside before we return
    result = _result(run_dir, run_id, call_id, exit_code=code)
    if result["outcome"] is None:
        raise RunDied(
            f"{run_id}: the training process exited with code {code} without done.json or error.json. "
            f"Last lines of its log:\n{runfolder.log_tail(run_dir)}"
        )
    return result
