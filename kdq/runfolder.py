"""The training contract: what a run folder holds. Every backend writes one; the worker only reads them.

spec.json       the experiment spec (written by the launcher before training starts)
progress.json   updated every epoch: {"epoch", "epochs", "val_f1", "best_f1", "phase", "gpu", "updated_at"}
checkpoint.pt   the latest epoch, for resuming after a preemption
metrics.json    final metrics of the best epoch
model.pt        TorchScript, fp32, CPU: the best epoch
history.csv     one row per epoch
events.out.tfevents.*  the same curves for TensorBoard (kdq/train/curves.py)
log.txt         what the training process printed
done.json       written last on success
error.json      written on failure: {"error": ..., "traceback": ...}
train.lock      locked (flock) by the training process while it lives: the folder says whether it runs
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from kdq.errors import read_only_line

SPEC = "spec.json"
PROGRESS = "progress.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
MODEL = "model.pt"
HISTORY = "history.csv"
LOG = "log.txt"
DONE = "done.json"
ERROR = "error.json"
LOCK = "train.lock"  # held by the training process while it lives
EXIT_STOPPED = 75  # the training's exit status when a SIGTERM stopped it after a checkpoint (EX_TEMPFAIL)
EXIT_DISK_FULL = 28  # the training's exit status when not even error.json could be written (errno ENOSPC)
EXIT_READ_ONLY = 30  # the same on a read-only file system (errno EROFS)
VERDICT = "verdict (error.json could not be written): "  # how such a verdict is left in log.txt
ARTIFACTS = (MODEL, METRICS, HISTORY)  # what the worker fetches
EVENTS = "events.out.tfevents."  # TensorBoard's own file names (one per training process): fetched too


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; when the block ends without an error it replaces
    ``path`` in one step, so readers see the old file or the new one, never half of one. On an error
    (a full disk among them) the temporary file goes and ``path`` is untouched. The one way kdq writes a
    file that someone may read while it is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


# ---------------------------------------------------------------- the run lock


def hold_lock(run_dir: Path, lock: Path | None = None) -> IO | None:
    """Take the run's lock (``RUN_DIR/train.lock`` unless ``lock`` names another file) for this process's
    lifetime: keep the returned file open. ``None`` when another process holds it (trains this run now)."""
    f = open(lock or Path(run_dir) / LOCK, "a")  # held open until the process ends
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def is_running(run_dir: Path) -> bool:
    """Whether a training process holds this run folder's lock right now."""
    path = Path(run_dir) / LOCK
    try:
        try:
            f = open(path, "a")
        except OSError as exc:  # a read-only home: a read-only handle can test the lock as well
            f = open(path, "rb") if exc.errno == errno.EROFS else None
            if f is None:
                raise
        with f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False


def read_json(path: Path) -> Any | None:
    """The file's JSON, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def outcome(run_dir: Path) -> str | None:
    """``"done"``, ``"error"`` or ``None`` (still running, or never finished)."""
    if (run_dir / DONE).exists():
        return "done"
    if (run_dir / ERROR).exists():
        return "error"
    return None


def error_message(run_dir: Path) -> str:
    data = read_json(run_dir / ERROR) or {}
    return str(data.get("error") or "training failed without a message")


def log_tail(run_dir: Path, lines: int = 20) -> str:
    try:
        text = (run_dir / LOG).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def write_progress(run_dir: Path, **fields: Any) -> None:
    """Update progress.json: ``fields`` replace those of the same name, the others stay (the ``gpu``
    record written when the training starts, among them)."""
    path = Path(run_dir) / PROGRESS
    write_json(path, {**(read_json(path) or {}), **fields, "updated_at": time.time()})


# ---------------------------------------------------------------- a killed training, and resuming it


def supervise(run_dir: Path) -> int | None:
    """Fork: the child returns ``None`` and trains; the parent waits for it and returns its exit status.

    A process killed by a signal (SIGKILL from the out-of-memory killer, a ``kill``) writes nothing, so
    the parent writes ``error.json`` for it, naming the signal. The parent ignores SIGTERM and SIGINT
    (they reach the child through the process group) so that it can say what happened; it holds the run
    lock taken before the fork until the verdict is written.
    """
    pid = os.fork()
    if pid == 0:
        return None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    _, status = os.waitpid(pid, 0)
    if outcome(run_dir) is None:
        record_verdict(run_dir, death_message(run_dir, status), status)
    return os.waitstatus_to_exitcode(status) % 256


def record_verdict(run_dir: Path, message: str, status: int) -> None:
    """Write ``error.json``; on a full or read-only disk print the verdict instead (stderr is log.txt,
    opened before the trouble began), where ``unwritten_verdict`` finds it."""
    try:
        write_json(Path(run_dir) / ERROR, {"error": message, "status": status})
    except OSError:
        print(VERDICT + message, file=sys.stderr, flush=True)


def unwritten_verdict(run_dir: Path) -> str | None:
    """The one-line verdict a training left in its log when it could not write ``error.json``."""
    last = [line for line in log_tail(Path(run_dir), 5).splitlines() if line.startswith(VERDICT)]
    return last[-1].removeprefix(VERDICT) if last else None


def death_message(run_dir: Path, status: int) -> str:
    """What to tell the user about a training that ended without a verdict of its own."""
    epoch = (read_json(Path(run_dir) / PROGRESS) or {}).get("epoch")
    resume = (
        f"`kdq retry ID` resumes from its last checkpoint (epoch {epoch})"
        if epoch and (Path(run_dir) / CHECKPOINT).exists()
        else "`kdq retry ID` starts it again"
    )
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_STOPPED:
        return f"the training was stopped (SIGTERM) after saving a checkpoint; {resume}"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_DISK_FULL:
        return f"disk full (ENOSPC): the training in {run_dir} could not write; free space, then {resume}"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_READ_ONLY:
        return read_only_line(run_dir).replace("`kdq retry ID` (it resumes)", resume)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status))
        why = " (the kernel's out-of-memory killer sends it: a smaller train.batch_size needs less)"
        return (
            f"the training process was killed by {sig.name}{why if sig is signal.SIGKILL else ''}; {resume}"
        )
    return (
        f"the training process exited with status {os.waitstatus_to_exitcode(status)} and no result; {resume}"
    )


def take_checkpoint(earlier: Path, run_dir: Path, dest: Path | None = None) -> str:
    """Start ``run_dir`` from the last checkpoint of ``earlier`` (an earlier attempt of the same spec).

    Returns the line to log. Nothing is taken from a run of another spec (its weights would not fit, or
    would mean something else) nor when this run has a checkpoint of its own (it resumes from that).
    ``dest``: where this run keeps its checkpoint (default its run folder's checkpoint.pt).
    """
    earlier, run_dir = Path(earlier), Path(run_dir)
    dest = Path(dest or run_dir / CHECKPOINT)
    if dest.exists():
        return f"not taking run {earlier.name}'s checkpoint: this run has its own"
    theirs, ours = read_json(earlier / SPEC) or {}, read_json(run_dir / SPEC) or {}
    if {**theirs, "name": None} != {**ours, "name": None}:
        return f"not resuming from run {earlier.name}: its spec differs (or is gone); starting from epoch 1"
    if not (earlier / CHECKPOINT).exists():
        return f"run {earlier.name} left no checkpoint; starting from epoch 1"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(earlier / CHECKPOINT, tmp)
    return f"resumed from run {earlier.name}: its last checkpoint copied here"
