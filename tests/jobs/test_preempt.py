"""The container's side of a preemption (jobs/preempt.py), in a real container process: a SIGTERM to it
reaches the training (in a session of its own) as a SIGTERM, the container waits for the checkpoint
of the training's next step, and that checkpoint is on the Volume when the container ends."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kdq import runfolder
from kdq.backends.modal_gateway import DATASET_MARK, dataset_path, run_path

# Stands in for ``python`` in the container's ``python -m kdq.train RUN_DIR ... --checkpoint PATH``: it
# says it started, and on SIGTERM takes 0.5 s (the step it is in), writes its checkpoint, exits 75.
TRAINER = """#!{python}
import os, pathlib, signal, sys, time
args = sys.argv
run = pathlib.Path(args[3])
ck = pathlib.Path(args[args.index("--checkpoint") + 1]) if "--checkpoint" in args else run / "checkpoint.pt"

def stop(signum, frame):
    time.sleep(0.5)
    ck.with_name(".ck.tmp").write_bytes(b"the step after the SIGTERM")
    os.replace(ck.with_name(".ck.tmp"), ck)
    sys.exit(75)

signal.signal(signal.SIGTERM, stop)
pathlib.Path({started!r}).write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""

CONTAINER = """
import sys
from pathlib import Path
from jobs import container
container.run_training(
    Path(sys.argv[1]), "sg-1", "synth", call_id="fc-1", local_dir=Path(sys.argv[2]), heartbeat_s=3600,
    python=sys.argv[3], device="cpu",
)
"""


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_sigterm_to_the_container_reaches_the_training_whose_last_checkpoint_reaches_the_volume(tmp_path):
    root, local, started = tmp_path / "volume", tmp_path / "local", tmp_path / "started"
    run_dir = root / run_path("sg-1")
    runfolder.write_json(run_dir / runfolder.SPEC, {"name": "sg", "teacher": {"kind": "none"}})
    runfolder.write_json(root / dataset_path("synth") / DATASET_MARK, {})
    trainer = tmp_path / "python"
    trainer.write_text(TRAINER.format(python=sys.executable, started=str(started)))
    trainer.chmod(0o755)
    proc = subprocess.Popen(
        [sys.executable, "-c", CONTAINER, str(root), str(local), str(trainer)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: started.exists() and started.read_text())
        proc.send_signal(signal.SIGTERM)  # as Modal stops a container
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        child = int(started.read_text()) if started.exists() and started.read_text() else None
        if child and Path(f"/proc/{child}").exists():
            os.kill(child, signal.SIGKILL)
    assert (run_dir / runfolder.CHECKPOINT).read_bytes() == b"the step after the SIGTERM", out[-2000:]
    assert "KeyboardInterrupt: SIGTERM to the container" in out  # not a verdict: Modal runs it again
    assert proc.returncode != 0 and runfolder.outcome(run_dir) is None
