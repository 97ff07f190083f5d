"""Helpers for the CLI tests: a store that looks like a morning after a night of runs, a pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

KDQ = [sys.executable, "-c", "from kdq.cli.main import app; app()"]
LONG_ERROR = (
    "training exited with code 1: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total "
    "capacity; 13.10 GiB already allocated); lower train.batch_size or data.decode_size, then kdq retry 11"
)


def row(name, stage, epoch=None, f1=None, phase=None, **server) -> dict:
    """One experiment as a worker would have left it; ``server``: server_score, server_rank, ..., error."""
    progress = (
        None if epoch is None else {"epoch": epoch, "epochs": 60, **({"phase": phase} if phase else {})}
    )
    return {"name": name, "stage": stage, "backend": "local", "progress": progress, "val_f1": f1, **server}


MORNING = [
    *[row(f"baseline-{i}", "done", 60, 0.70 + i / 100) for i in range(9)],
    row("hinton-sweep[temperature=4.0,alpha=0.3]", "done", 60, 0.8012, server_score=7.912, server_rank=3),
    row("dkd-mobilenetv3-large-long", "failed", 3, error=LONG_ERROR),
    row("dkd-mobilenetv3", "ready", 60, 0.7955),
    row("embed-logit-efficientnet", "evaluating", 60, 0.8100),
    row("hinton-shufflenet-v2-x1.5", "training", 22, 0.7710, phase="training"),
    row("crd-resnet18-teacher-cache", "training", 0, phase="teacher"),
    row("hinton-sweep[temperature=8.0,alpha=0.5]", "queued"),
]
MORNING[9]["server_attempt"] = 9


def fill(store, rows=MORNING) -> list[int]:
    """Experiments in the given stages, as if a worker had moved them there (most recent last)."""
    from kdq.spec import ExperimentSpec

    ids = store.add([(None, ExperimentSpec(name=r["name"], train={"seed": i})) for i, r in enumerate(rows)])
    now = time.time()
    with store.transaction() as db:
        for k, (i, r) in enumerate(zip(ids, rows)):
            values = {**r, "progress": json.dumps(r["progress"]) if r["progress"] else None}
            if "metrics" in values:
                values["metrics"] = json.dumps(values["metrics"])
            values.pop("name")
            values["updated_at"] = now - 3600 + 60 * k
            sets = ", ".join(f"{key} = ?" for key in values)
            db.execute(f"update experiments set {sets} where id = ?", [*values.values(), i])
    return ids


GRACE_S = 10.0  # after Ctrl-C, then after SIGTERM: how long a child may take to go


def in_terminal(
    args, env: dict, cols: int = 80, rows: int = 24, seconds: float | None = None, until: str | None = None
) -> str:
    """Run ``kdq ARGS`` on a pseudo-terminal of ``cols`` x ``rows``; its screen output, escape codes removed.

    ``until``: send Ctrl-C (SIGINT) once the screen shows this text (``--watch``: a frame is drawn, however
    slow the machine); ``seconds``: send it after that long. Without either, wait for the end. Nothing
    waits forever: a child still there ``GRACE_S`` after Ctrl-C gets SIGTERM, then SIGKILL, and one that
    never shows ``until`` (or never ends) is stopped the same way after 120 s.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**env, "TERM": "xterm-256color"}
    for var in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR"):
        env.pop(var, None)
    proc = subprocess.Popen(
        [*KDQ, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
        # A suite run as a background job starts with SIGINT ignored, and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(slave)
    out = b""
    interrupt = until is not None or seconds is not None
    stops = [signal.SIGINT] * interrupt + [signal.SIGTERM, signal.SIGKILL]
    deadline = time.monotonic() + (seconds if seconds is not None else 120)
    while True:
        shown = until is not None and until in strip_escapes(out.decode("utf-8", "replace"))
        if proc.poll() is None and stops and (shown or time.monotonic() > deadline):
            proc.send_signal(stops.pop(0))
            until, deadline = None, time.monotonic() + GRACE_S
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    try:
        proc.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    os.close(master)
    return strip_escapes(out.decode("utf-8", "replace"))


def strip_escapes(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r", "", text)


def kdq_env(home: Path) -> dict:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("KDQ_")}, "KDQ_HOME": str(home)}


def readme_morning(store) -> None:
    """The README's status sample: the morning store, a live worker, a reachable server, one graded upload."""
    import os as _os

    from kdq.course.ledger import Ledger

    now = time.time()
    ids = fill(store)
    store.set_meta("worker", {"pid": _os.getpid(), "host": "h", "started_at": now - 9 * 3600, "ts": now})
    Ledger(store, clock=lambda: now - 12).record_server(True, "ok")
    ledger = Ledger(store, lambda: now - 540, lambda: time.monotonic() - 540)  # both clocks, 9 min ago
    ledger.open_submission(ids[9], attempt=9, state="successful", score=7.912, rank=3)
    ledger.note_submit(now - 540)


def normalized(text: str) -> str:
    """Status output with its clock-dependent seconds fixed, for comparing two runs."""
    text = re.sub(r"^home: .*$", "home: ~/hw3/.kdq", text, count=1, flags=re.M)  # a fresh folder each run
    return re.sub(r"\(\d+s ago\)", "(12s ago)", text)


if __name__ == "__main__":  # python tests/cli/cli_helpers.py: the README's status sample, as kdq prints it
    import tempfile

    os.environ["KDQ_HOME"] = tempfile.mkdtemp()
    from kdq.settings import Settings
    from kdq.store import Store

    home = Settings().root
    with Store.open(Settings()) as store:
        readme_morning(store)
    print(normalized(in_terminal(["status"], kdq_env(home))), end="")
