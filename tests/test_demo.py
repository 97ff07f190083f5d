"""`kdq demo`, as a new user runs it: interrupted once with Ctrl-C, then run again to the end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdq.runfolder import is_running
from kdq.stages import LIVE, Stage
from kdq.store import Store

pytestmark = pytest.mark.slow
KDQ = [sys.executable, "-c", "from kdq.cli.main import app; app()"]


def demo(home: Path, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDQ_")}
    return subprocess.Popen(
        [*KDQ, "demo", "--home", str(home), "--no-watch", "--per-class", "20"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def stages(home: Path) -> list[Stage]:
    if not (home / "kdq.db").exists():
        return []
    with Store(home / "kdq.db") as store:
        return [e.stage for e in store.list()]


def test_demo_survives_ctrl_c_then_runs_to_the_end(tmp_path):
    home = tmp_path / "demo"
    first = demo(home)
    deadline = time.time() + 180
    while Stage.TRAINING not in stages(home) and time.time() < deadline:
        time.sleep(0.2)
    assert Stage.TRAINING in stages(home), "no experiment reached training"
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 130, out
    assert "interrupted" in out
    worker_pid = json.loads(Store(home / "kdq.db").get_meta("worker"))["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)
    runs = list((home / "runs").iterdir())
    assert runs and not any(is_running(r) for r in runs), "a training process outlived the demo"

    second = demo(home)
    out, _ = second.communicate(timeout=480)
    assert second.returncode == 0, out
    with Store(home / "kdq.db") as store:
        exps = store.list()
        assert len(exps) == 3 and not any(e.stage in LIVE for e in exps)
        assert not [e for e in exps if e.stage is Stage.FAILED]
        submitted = sorted((e for e in exps if e.server_score is not None), key=lambda e: e.server_attempt)
        assert submitted and all(e.stage is Stage.DONE for e in submitted)
        assert submitted[-1].server_rank == 1  # the live one (one team); superseded ones keep no rank
        # if_better by expected score: each submission beat the live one (the demo's models are the same
        # size, so by holdout F1); one within the noise of the live one is skipped with the numbers
        f1s = [e.metrics["holdout_f1"] for e in submitted]
        assert f1s == sorted(f1s)
        skipped = [e for e in exps if e.stage is Stage.SKIPPED]
        assert all("chance better" in store.events(e.id)[-1]["message"] for e in skipped)
    assert "kdq-demo" in out and "leaderboard" in out
    assert not [line for line in out.splitlines() if "[debug" in line or "[info" in line]  # its own words
    assert f"export KDQ_HOME={home.resolve()}" in out  # the closing hint holds for every later command
