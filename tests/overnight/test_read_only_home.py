"""KDQ_HOME made read-only under a running worker and a training (a read-only bind mount, as a disk
remounted read-only after an error is): every command says so in one line, and the training's failure,
recorded once the home is writable again, is one line naming the folder and the fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kdq import runfolder
from kdq.stages import Stage


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def read_only(tmp_path):
    """``make(home)`` remounts ``home`` read-only in place; undone at the end. Skips without mount rights."""
    probe = tmp_path / "probe"
    probe.mkdir()
    if os.geteuid() != 0 or not _mount("--bind", str(probe), str(probe)):
        pytest.skip("a read-only bind mount needs root and mount rights")
    subprocess.run(["umount", str(probe)], check=True)
    mounted = []

    def make(home):
        assert _mount("--bind", str(home), str(home)) and _mount("-o", "remount,bind,ro", str(home))
        mounted.append(home)

    def undo():
        while mounted:
            subprocess.run(["umount", str(mounted.pop())], check=True)

    make.undo = undo
    yield make
    undo()


def _one_line(result) -> str:
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


@pytest.mark.slow
def test_a_home_made_read_only_under_a_training_is_one_line_everywhere(overnight, read_only):
    h = overnight()
    [i] = h.enqueue(1, epochs=400, policy="never", train_extra="patience = 1000")
    h.start_worker()
    h.wait(lambda: (h.get(i).progress or {}).get("epoch", 0) >= 1, 180, "the training's first epoch")
    run_dir = h.settings.runs_dir / h.get(i).run_id
    read_only(h.home)

    assert h.cli("status").exit_code == 0  # reading works
    spec = h.tmp / "spec1.toml"
    refused = h.cli("enqueue", spec, "--force", ok=False)
    assert refused.exit_code == 1 and "cannot be written" in _one_line(refused)
    second = subprocess.run(
        [sys.executable, "-c", "from kdq.cli.main import app; app()", "worker"],
        env=h.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0 and "Traceback" not in second.stdout + second.stderr
    assert len((second.stdout + second.stderr).strip().splitlines()) == 1, second.stdout + second.stderr

    h.wait(lambda: not runfolder.is_running(run_dir), 120, "the training to end")
    read_only.undo()
    h.wait(lambda: h.get(i).stage is Stage.FAILED, 120, "the failure to be recorded")
    error = h.get(i).error
    assert "\n" not in error and "Traceback" not in error, error
    assert error.startswith(f"read-only file system (EROFS): cannot write {run_dir}"), error
    assert "writable" in error and "kdq retry ID" in error
    assert h.worker.poll() is None and "Traceback" not in h.log.read_text()
