"""What the Modal container runs for one experiment: ``run_training``.

It claims the run folder on the Volume (owner.json, committed before the training starts), runs
``python -m kdq.train --device cuda`` (which resumes from checkpoint.pt when Modal restarts a
preempted call), and every ``HEARTBEAT_S`` seconds copies what the training wrote to the Volume and
commits it, so progress.json and the log are visible outside; the last commit comes before it
returns. A Volume commit (and the reload it ends with) fails while any file on the Volume is open, a
packed neighbour's included, and a file open for writing is left out of it: so the training reads and
writes only the container's own disk (its run folder, its log and lock, its cache folder: the
Volume's caches seen through links), and this code copies the run folder (jobs/mirror.py), the log
(jobs/watch.py) and new caches (jobs/cacheview.py) onto the Volume whole, under the lock the
container's inputs commit under, before each commit. A training that shows no progress and writes
nothing for ``STALL_S`` is stopped with an error naming its phase. A preemption (SIGINT) or a
SIGTERM to this process stops the training with SIGTERM: it checkpoints at its next step, and that
checkpoint reaches the Volume before the last commit, so the restarted input resumes from it.
Several runs share one container (jobs/packing.py). Nothing here imports modal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from jobs import preempt
from jobs.cacheview import CacheView
from jobs.mirror import Mirror
from jobs.packing import Pack, wait_or_stop
from jobs.watch import LogCopy, Watchdog, echo, last_commit, stall_error, stop_child
from kdq import runfolder
from kdq.backends.modal_gateway import (
    CACHE,
    DATASET_MARK,
    LAUNCH,
    OWNER,
    RUNS,
    dataset_path,
    lease_key,
    run_key,
    run_path,
)

HEARTBEAT_S = 30.0
STALE_S = 180.0  # an owner silent this long is gone (its container died without Modal restarting it)
STALL_S = 10 * 60.0  # no progress.json and no log output this long: the training hangs, stop it
STOP_GRACE_S = 15.0  # of Modal's ~30 s after a preemption: the training's checkpoint at its next step
# A commit is refused while any file on the mount is open, a packed neighbour's included (its teacher
# cache being written, the teacher being downloaded): the last commit tries again for this long, or
# for the rest of a preemption's grace when the run was stopped.
LAST_COMMIT_S = 180.0
STOPPED_COMMIT_S = 10.0


class Live(Protocol):
    """What this code uses of a ``modal.Dict``: seen by every container and the worker at once."""

    def put(self, key: str, value: Any, *, skip_if_exists: bool = False) -> bool: ...

    def get(self, key: str, default: Any = None) -> Any: ...

    def pop(self, key: str, default: Any = None) -> Any: ...


class _Unshared:
    """No shared dict: every lease is granted, nothing is published (the container code alone)."""

    def put(self, key: str, value: Any, *, skip_if_exists: bool = False) -> bool:
        return True

    def get(self, key: str, default: Any = None) -> Any:
        return default

    def pop(self, key: str, default: Any = None) -> Any:
        return default


class RunDied(RuntimeError):
    """The training process ended without done.json or error.json: let Modal retry (it resumes)."""


class AttemptTimedOut(RunDied):
    """The attempt ran past ``backend.timeout_min``: stopped, and retried by Modal like a timeout."""


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


class _Heartbeat:
    """owner.json on the Volume and the same record, with the training's progress.json (``progress``:
    on the container's disk), in the app's ``modal.Dict``."""

    def __init__(self, run_dir: Path, run_id: str, call_id: str, attempts: list, live: Live, log):
        self.run_dir, self.run_id, self.call_id, self.attempts = run_dir, run_id, call_id, attempts
        self.live, self.log, self.progress = live, log, run_dir / runfolder.PROGRESS

    def __call__(self, pid: int | None, outcome: str | None = None, **extra: Any) -> None:
        record = {"call_id": self.call_id, "heartbeat": time.time(), "pid": pid, "attempts": self.attempts}
        runfolder.write_json(self.run_dir / OWNER, {**record, **extra})
        progress = runfolder.read_json(self.progress)
        try:
            self.live.put(run_key(self.run_id), {**record, **extra, "progress": progress})
        except Exception as exc:  # noqa: BLE001 — the Volume still carries it; the next beat tries again
            self.log(f"{self.run_id}: publishing the heartbeat failed: {exc!r}")


def _refusal(
    root: Path, run_id: str, dataset: str, call_id: str, live: Live, stale_s: float, commit, log
) -> dict[str, Any] | None:
    """Why this call must not train the run (done already, not launched, another call has it, no
    dataset), as the result to return; ``None``: it trains."""
    run_dir, out = root / run_path(run_id), {"run_id": run_id, "call_id": call_id}
    if runfolder.outcome(run_dir) == "done":
        log(f"{run_id}: already done, not training again")
        return _result(run_dir, run_id, call_id)
    if not (run_dir / runfolder.SPEC).exists():
        error = f"{run_path(run_id)}/{runfolder.SPEC} is not on the Volume: launch the run with kdq"
        return {**out, "outcome": "error", "error": error}
    taken = live.put(lease_key(run_id), call_id, skip_if_exists=True)
    if not taken and (holder := live.get(lease_key(run_id))) != call_id:  # a second call (lost reply)
        log(f"{run_id}: call {holder} holds this run's lease; this call {call_id} stands down")
        return {**out, "outcome": "duplicate", "owner": holder}
    owner = runfolder.read_json(run_dir / OWNER)
    if _owner_is_other_and_alive(owner, call_id, time.time(), stale_s):
        log(f"{run_id}: call {owner['call_id']} is training this run; this call {call_id} stands down")
        return {**out, "outcome": "duplicate", "owner": owner["call_id"]}
    if not (root / dataset_path(dataset) / DATASET_MARK).exists():
        error = (
            f"dataset {dataset!r} is not on the Volume ({dataset_path(dataset)}): "
            f"run `kdq data upload PATH --name {dataset}`, then `kdq retry`"
        )
        runfolder.write_json(run_dir / runfolder.ERROR, {"error": error, "traceback": ""})
        commit()
        return {**out, "outcome": "error", "error": error}
    return None


def _supervise(proc, run_dir: Path, beat: _Heartbeat, copies, watchdog: Watchdog, commit, timing, log):
    """Wait for the training process, copying, beating and committing every ``heartbeat_s``; stop it
    when the watchdog says it hangs (its error.json names the phase). Returns its exit code. A SIGTERM
    to this process interrupts the wait (``preempt.sigterm_interrupts``). ``run_dir``: the training's
    own, on the container's disk."""
    with preempt.sigterm_interrupts():
        return _wait(proc, run_dir, beat, copies, watchdog, commit, timing, log)


def _wait(proc, run_dir: Path, beat: _Heartbeat, copies, watchdog: Watchdog, commit, timing, log):
    """``timing``: (heartbeat_s, stop: the input was cancelled, deadline past which the attempt stops)."""
    heartbeat_s, stop, deadline = timing
    while True:
        if (code := wait_or_stop(proc, heartbeat_s, stop)) is not None:
            return code
        if deadline is not None and time.monotonic() > deadline[0]:
            stop_child(proc, STOP_GRACE_S)
            raise AttemptTimedOut(
                f"{run_dir.name}: ran past its timeout (backend.timeout_min = {deadline[1]:g})"
            )
        if watchdog.stalled():
            stop_child(proc, STOP_GRACE_S)
            error = stall_error(run_dir, watchdog.stall_s)
            log(f"{run_dir.name}: {error}")
            runfolder.write_json(run_dir / runfolder.ERROR, {"error": error, "traceback": ""})
            return proc.returncode
        copies()
        beat(proc.pid)
        try:
            commit()  # progress.json, checkpoints, caches and the log become visible outside
        except Exception as exc:  # noqa: BLE001 — a failed periodic commit is retried next beat
            log(f"{run_dir.name}: periodic volume commit failed (will retry): {exc!r}")


def _start(cmd: list[str], local: Path, env: dict[str, str], log) -> subprocess.Popen:
    """The training process, its output into the local log (which only it keeps open)."""
    lock = local / "train.lock"
    log(f"{' '.join(cmd)} --lock {lock}")
    with open(local / runfolder.LOG, "ab") as out:
        return subprocess.Popen(
            [*cmd, "--lock", str(lock)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            start_new_session=True,  # a preemption's SIGINT reaches this process; it stops the child
        )


def _last(proc, run_dir: Path, beat: _Heartbeat, copies, commit, ended: bool, retry_s: float, log) -> None:
    """The last copies, heartbeat and commit of a training that stopped (``ended``: by itself; else
    cancelled, preempted or crashing, when a failed commit must not mask what stopped it). ``run_dir``:
    on the Volume, the copies made."""
    copies()
    beat.attempts[-1][1] = time.time()
    beat(None, runfolder.outcome(run_dir), exit_code=proc.returncode, ended_at=time.time())
    try:  # every file the run wrote is visible outside before the input returns
        last_commit(commit, LAST_COMMIT_S if ended else STOPPED_COMMIT_S, retry_s)
    except Exception as exc:  # noqa: BLE001 — on the way out of a cancel or a crash: do not mask it
        if ended:
            raise
        log(f"{run_dir.name}: the last volume commit failed: {exc!r}")


def _command(python: str, root: Path, mine: Path, data: Path, local: Path, device: str, resume_from):
    """The training's command line: its run folder (``mine``) and cache folder on this container's disk."""
    cmd = [python, "-m", "kdq.train", str(mine), "--data", str(data), "--cache", str(local / CACHE)]
    cmd += ["--device", device]
    return cmd + (["--resume-from", str(root / run_path(resume_from))] if resume_from else [])


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
    stall_s: float = STALL_S,
    live: Live = _Unshared(),  # noqa: B008 — stateless
    device: str = "cuda",
    env: dict[str, str] | None = None,
    python: str = sys.executable,
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
    echo: Callable[[bytes], None] = echo,
    pack: Pack | None = None,
    stop: threading.Event | None = None,
    timeout_s: float | None = None,
    commit_retry_s: float = 1.0,
    teacher_cache_only: bool = False,
) -> dict[str, Any]:
    """Train ``runs/<run_id>`` under ``root`` to the end and return a plain dict (Modal pickles it).

    Returns ``{"outcome": "done" | "error" | "duplicate", ...}``; raises ``RunDied`` when the training
    process vanished without a verdict, so that Modal's retries start it again (it resumes).
    ``local_dir``: the container's own disk (lock, live log, pictures). ``resume_from``: an earlier run
    whose checkpoint the training starts from (``kdq retry``). ``live``: the app's ``modal.Dict``: the
    run's lease (first writer wins, at once: owner.json is seen only after a commit and a reload) and
    each heartbeat, which the worker reads even while commits fail. ``device``: what the training must
    run on (a GPU container: ``cuda``, never a silent CPU fallback); ``env``: added to its environment.
    ``pack``: what the container's inputs share; ``stop``: set on a cancel; ``timeout_s``: the attempt's;
    ``commit_retry_s``: the first wait before the last commit is tried again; ``teacher_cache_only``:
    build the teacher cache the spec needs (for every run: kdq/backends/modal_cache.py), train nothing.
    """
    deadline = (time.monotonic() + timeout_s, timeout_s / 60) if timeout_s else None
    pack = pack or Pack(Path(local_dir or tempfile.mkdtemp(prefix=f"kdq-{run_id}-")))
    commit, reload = pack.locked(commit), pack.locked(reload)  # one input of the container at a time
    reload()  # see what other containers committed: an owner, a finished run
    if (refused := _refusal(root, run_id, dataset, call_id, live, stale_s, commit, log)) is not None:
        return refused
    run_dir, data_dir = root / run_path(run_id), root / dataset_path(dataset)
    attempts = _attempts(runfolder.read_json(run_dir / OWNER), call_id, time.time())
    beat = _Heartbeat(run_dir, run_id, call_id, attempts, live, log)
    beat(None)
    commit()  # claim the run before the (long) start of training
    local = Path(local_dir or tempfile.mkdtemp(prefix=f"kdq-{run_id}-"))
    local.mkdir(parents=True, exist_ok=True)
    mine = local / RUNS / run_id  # the training's run folder, mirrored onto the Volume's
    run_copy = Mirror(mine, run_dir, skip=(runfolder.LOG, OWNER, LAUNCH))
    run_copy.pull()  # the spec, and the checkpoint a restarted input resumes from
    beat.progress = mine / runfolder.PROGRESS
    view = CacheView(root / CACHE, local / CACHE)  # what the Volume holds now, the decode's tensor included
    parts = (LogCopy(local / runfolder.LOG, run_dir / runfolder.LOG, echo), run_copy, view)
    copies = pack.locked(lambda: [copy() for copy in parts])  # no neighbour commits while one is open
    watchdog = Watchdog((mine / runfolder.PROGRESS, local / runfolder.LOG), stall_s)
    data = pack.stage(data_dir, dataset_path(dataset))  # once per container, named as on the Volume
    cmd = _command(python, root, mine, data, local, device, resume_from)
    cmd += ["--teacher-cache-only"] if teacher_cache_only else []
    proc = _start(cmd, local, {**pack.env(), **(env or {})}, lambda msg: log(f"{run_id}: {msg}"))
    code: int | None = None
    try:
        code = _supervise(proc, mine, beat, copies, watchdog, commit, (heartbeat_s, stop, deadline), log)
    finally:
        stop_child(proc, STOP_GRACE_S)  # cancelled, preempted (SIGINT, SIGTERM) or crashing: stop the child
        _last(proc, run_dir, beat, copies, commit, code is not None, commit_retry_s, log)
    result = _result(run_dir, run_id, call_id, exit_code=code)
    if result["outcome"] is None:
        raise RunDied(
            f"{run_id}: the training process exited with code {code} without done.json or error.json. "
            f"Last lines of its log:\n{runfolder.log_tail(run_dir)}"
        )
    return result
