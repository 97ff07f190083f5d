"""The local backend: ``python -m kdq.train`` in a detached subprocess on this machine.

The run folder is ``$KDQ_HOME/runs/<run_id>``. The training process holds ``train.lock`` while it
lives, so "running" is a question the folder answers, even after the worker restarts; it runs in
its own session, so a worker killed with SIGKILL does not take the training down with it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kdq import hf, runfolder
from kdq.backends.base import RunStatus
from kdq.errors import PermanentError, disk_full_at, read_only_at
from kdq.spec import ExperimentSpec

STARTUP_TIMEOUT_S = 60


class LocalBackend:
    def __init__(self, settings):
        self.settings = settings

    def run_dir(self, run_id: str) -> Path:
        return self.settings.runs_dir / run_id

    def data_dir(self, spec: ExperimentSpec) -> Path:
        return self.settings.datasets_dir / spec.data.dataset

    def launch(self, run_id: str, spec: ExperimentSpec, resume_from: str | None = None) -> dict[str, Any]:
        """Start the training; ``resume_from``: an earlier run of this home to take the checkpoint of."""
        run_dir = self.run_dir(run_id)
        handle = {"run_id": run_id, "run_dir": str(run_dir)}
        if runfolder.is_running(run_dir) or runfolder.outcome(run_dir):  # launched before: never twice
            launched = runfolder.read_json(run_dir / "launch.json") or {}
            # backend.timeout_min counts from the training's start, not from this relaunch
            started = launched.get("started_at", time.time())
            return {**handle, "pid": launched.get("pid"), "started_at": started}
        data = self.data_dir(spec)
        if not data.is_dir():
            raise PermanentError(
                f"dataset {spec.data.dataset!r} not found at {data}: put the course's train_dataset there "
                f"(unzipped), or generate one with `kdq data synth {data}`"
            )
        if hf.on_the_hub(spec.teacher):
            hf.before_local_training(self.settings, spec.teacher.model)  # a denial: failed now, for good
        run_dir.mkdir(parents=True, exist_ok=True)
        runfolder.write_json(run_dir / runfolder.SPEC, spec.model_dump(mode="json"))
        cmd = [
            sys.executable,
            "-m",
            "kdq.train",
            str(run_dir),
            "--data",
            str(data),
            "--cache",
            str(self.settings.cache_dir),
            "--supervise",  # a killed training is reported with its signal
            *(["--resume-from", str(self.run_dir(resume_from))] if resume_from else []),
        ]
        with open(run_dir / runfolder.LOG, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        started = time.time()
        runfolder.write_json(run_dir / "launch.json", {"pid": proc.pid, "started_at": started, "cmd": cmd})
        # Wait until the child holds its lock (or has already ended), so a poll never mistakes a
        # process that is still starting for one that died.
        while (
            not runfolder.is_running(run_dir)
            and proc.poll() is None
            and time.time() - started < STARTUP_TIMEOUT_S
        ):
            time.sleep(0.05)
        return {**handle, "pid": proc.pid, "started_at": started}

    def poll(self, handle: dict[str, Any]) -> RunStatus:
        run_dir = Path(handle["run_dir"])
        progress = runfolder.read_json(run_dir / runfolder.PROGRESS) or {}
        outcome = runfolder.outcome(run_dir)
        if outcome == "done":
            return RunStatus("succeeded", progress)
        if outcome == "error":
            tail = runfolder.log_tail(run_dir)
            return RunStatus("failed", progress, f"{runfolder.error_message(run_dir)}\n{tail}".strip())
        if runfolder.is_running(run_dir):
            spec = ExperimentSpec.model_validate_json((run_dir / runfolder.SPEC).read_text())
            if time.time() - handle.get("started_at", time.time()) > spec.backend.attempt_min * 60:
                self.cancel(handle)
                return RunStatus(
                    "failed", progress, f"training ran past backend.timeout_min = {spec.backend.attempt_min}"
                )
            return RunStatus("running", progress)
        tail = runfolder.log_tail(run_dir)
        if verdict := runfolder.unwritten_verdict(run_dir):  # a full or read-only disk took error.json
            return RunStatus("failed", progress, verdict)
        if full := disk_full_at(run_dir):  # not even error.json could be written
            return RunStatus("failed", progress, f"{full}; free space, then `kdq retry ID` (it resumes)")
        if read_only := read_only_at(run_dir):
            return RunStatus("failed", progress, read_only)
        return RunStatus(
            "failed", progress, f"the training process ended without a result. Last lines of its log:\n{tail}"
        )

    def fetch(self, handle: dict[str, Any], dest: Path) -> None:
        run_dir = Path(handle["run_dir"])
        dest.mkdir(parents=True, exist_ok=True)
        for name in runfolder.ARTIFACTS:
            src = run_dir / name
            if not src.exists():
                raise PermanentError(f"the run finished but {src} is missing")
            shutil.copy2(src, dest / name)

    def cancel(self, handle: dict[str, Any]) -> None:
        """Stop the run's training; a handle may hold only the run id (a launch that never completed)."""
        run_dir = Path(handle.get("run_dir") or self.run_dir(handle["run_id"]))
        pid = handle.get("pid") or (runfolder.read_json(run_dir / "launch.json") or {}).get("pid")
        if pid and runfolder.is_running(run_dir):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def running(self) -> list[dict[str, Any]]:
        """Handles of every run of this home whose training process is alive or still starting."""
        if not self.settings.runs_dir.is_dir():
            return []
        handles = []
        for run_dir in sorted(self.settings.runs_dir.iterdir()):
            pid = (runfolder.read_json(run_dir / "launch.json") or {}).get("pid")
            if runfolder.is_running(run_dir) or (pid and not runfolder.outcome(run_dir) and _alive(pid)):
                handles.append({"run_dir": str(run_dir), "pid": pid})
        return handles

    def stop_all(self, grace_s: float = 15.0) -> int:
        """End every live training run of this home: SIGTERM, then SIGKILL after ``grace_s``; how many."""
        handles = [h for h in self.running() if h["pid"]]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for handle in handles:
                try:
                    os.killpg(handle["pid"], sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + grace_s
            while time.time() < deadline and any(_alive(h["pid"]) for h in handles):
                time.sleep(0.1)
        return len(handles)


def _alive(pid: int) -> bool:
    from kdq.homelock import alive

    return alive(pid)  # a zombie (a finished child of this worker, not reaped yet) is not
