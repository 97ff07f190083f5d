"""The training contract: what a run folder holds. Every backend writes one; the worker only reads them.

spec.json       the experiment spec (written by the launcher before training starts)
progress.json   updated every epoch: {"epoch", "epochs", "val_f1", "best_f1", "phase", "updated_at"}
checkpoint.pt   the latest epoch, for resuming after a preemption
metrics.json    final metrics of the best epoch
model.pt        TorchScript, fp32, CPU: the best epoch
history.csv     one row per epoch
log.txt         what the training process printed
done.json       written last on success
error.json      written on failure: {"error": ..., "traceback": ...}
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SPEC = "spec.json"
PROGRESS = "progress.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
MODEL = "model.pt"
HISTORY = "history.csv"
LOG = "log.txt"
DONE = "done.json"
ERROR = "error.json"
ARTIFACTS = (MODEL, METRICS, HISTORY)  # what the worker fetches


def write_json(path: Path, data: Any) -> None:
    """Write atomically: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    write_json(run_dir / PROGRESS, {**fields, "updated_at": time.time()})
