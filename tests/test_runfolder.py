"""The run folder's helpers: the atomic write, the lock, a killed or disk-starved training's verdict."""

import errno
import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from kdq import runfolder
from kdq.errors import disk_full


def test_atomic_path_leaves_the_old_file_on_an_error(tmp_path):
    target = tmp_path / "metrics.json"
    runfolder.write_json(target, {"v": 1})
    with pytest.raises(OSError), runfolder.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_the_lock_is_held_by_one_process_only(tmp_path):
    held = runfolder.hold_lock(tmp_path)
    assert held is not None and runfolder.is_running(tmp_path)
    other = subprocess.run(
        [sys.executable, "-c", f"from kdq import runfolder; print(runfolder.hold_lock({str(tmp_path)!r}))"],
        capture_output=True,
        text=True,
    )
    assert other.stdout.strip() == "None"
    held.close()
    assert not runfolder.is_running(tmp_path)


def test_a_signal_death_is_named_with_the_resume_hint(tmp_path):
    (tmp_path / runfolder.CHECKPOINT).write_bytes(b"x")
    runfolder.write_json(tmp_path / runfolder.PROGRESS, {"epoch": 36})
    status = signal.SIGKILL  # a wait status for "killed by SIGKILL"
    msg = runfolder.death_message(tmp_path, status)
    assert msg.startswith("the training process was killed by SIGKILL")
    assert "resumes from its last checkpoint (epoch 36)" in msg


def test_a_full_disk_is_named_with_enospc_and_the_path(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    assert disk_full(OSError(errno.ENOSPC, "No space left on device", str(path))) == (
        f"disk full (ENOSPC): no space left to write {path}"
    )
    wrapped = RuntimeError(
        "[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file"
    )
    assert disk_full(wrapped, tmp_path) is None  # torch says nothing of the disk: look at the disk itself
    monkeypatch.setattr(runfolder.shutil, "disk_usage", lambda p: SimpleNamespace(free=4096))
    assert disk_full(wrapped, tmp_path) == (
        f"disk full (ENOSPC): no space left to write {tmp_path} (4 KiB free on its disk)"
    )
    monkeypatch.setattr(runfolder.shutil, "disk_usage", lambda p: SimpleNamespace(free=10 << 30))
    assert disk_full(wrapped, tmp_path) is None  # plenty of room: it was something else


def test_a_training_that_runs_out_of_disk_names_enospc_and_the_path(tmp_path, monkeypatch):
    from kdq.train import __main__ as entry
    from kdq.train import loop

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runfolder.write_json(run_dir / runfolder.SPEC, {"name": "x"})
    ckpt = run_dir / ".checkpoint.pt.tmp"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(ckpt))

    monkeypatch.setattr(loop, "run", full)
    monkeypatch.setattr(entry.ExperimentSpec, "model_validate_json", classmethod(lambda cls, text: None))
    assert entry.main([str(run_dir), "--data", str(tmp_path), "--cache", str(tmp_path)]) == 1
    error = runfolder.read_json(run_dir / runfolder.ERROR)["error"]
    assert error == f"disk full (ENOSPC): no space left to write {ckpt}"


def test_a_training_that_cannot_even_write_its_error_exits_with_the_disk_full_code(tmp_path, monkeypatch):
    from kdq.train import __main__ as entry
    from kdq.train import loop

    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "history.csv"))

    monkeypatch.setattr(loop, "run", full)
    monkeypatch.setattr(entry.ExperimentSpec, "model_validate_json", classmethod(lambda cls, text: None))
    (run_dir / runfolder.SPEC).write_text("{}")
    monkeypatch.setattr(runfolder, "write_json", full)
    assert (
        entry.main([str(run_dir), "--data", str(tmp_path), "--cache", str(tmp_path)]) == entry.EXIT_DISK_FULL
    )
    status = entry.EXIT_DISK_FULL << 8  # the wait status of that exit
    assert runfolder.death_message(run_dir, status).startswith(
        f"disk full (ENOSPC): the training in {run_dir}"
    )


def test_a_vanished_training_on_a_full_disk_is_named(settings, monkeypatch, tmp_path):
    from kdq.backends.local import LocalBackend

    run_dir = settings.runs_dir / "r1"
    run_dir.mkdir(parents=True)
    monkeypatch.setattr(runfolder.shutil, "disk_usage", lambda p: SimpleNamespace(free=0))
    status = LocalBackend(settings).poll({"run_dir": str(run_dir), "pid": os.getpid()})
    assert status.state == "failed"
    assert status.error.startswith(f"disk full (ENOSPC): no space left to write {run_dir}")
