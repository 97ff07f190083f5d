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


def test_a_training_stopped_by_sigterm_is_named_as_stopped_after_its_checkpoint(tmp_path):
    """`kdq cancel` (local) sends SIGTERM: the training saves the step it is at and exits 75."""
    (tmp_path / runfolder.CHECKPOINT).write_bytes(b"x")
    runfolder.write_json(tmp_path / runfolder.PROGRESS, {"epoch": 12})
    msg = runfolder.death_message(tmp_path, 75 << 8)  # the wait status of exit(75)
    assert msg == (
        "the training was stopped (SIGTERM) after saving a checkpoint; "
        "`kdq retry ID` resumes from its last checkpoint (epoch 12)"
    )


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

    monkeypatch.setattr(loop, "run", full)  # spec.json holds a valid spec: the defaults
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


def _read_only(path):
    return OSError(errno.EROFS, "Read-only file system", str(path))


def test_a_training_on_a_read_only_home_ends_with_one_line_naming_the_folder_and_the_fix(
    tmp_path, monkeypatch, capsys
):
    """KDQ_HOME made read-only under a training: not even error.json can be written. The training says
    so in one line (no traceback), exits with its own code, and the verdict names the folder and the fix."""
    from kdq.train import __main__ as entry
    from kdq.train import loop

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / runfolder.SPEC).write_text("{}")

    def read_only(*args, **kwargs):
        raise _read_only(run_dir / ".error.json.x.tmp")

    monkeypatch.setattr(loop, "run", read_only)
    monkeypatch.setattr(entry.ExperimentSpec, "model_validate_json", classmethod(lambda cls, text: None))
    monkeypatch.setattr(runfolder, "write_json", read_only)
    code = entry.main([str(run_dir), "--data", str(tmp_path), "--cache", str(tmp_path)])
    assert code == runfolder.EXIT_READ_ONLY
    printed = capsys.readouterr().err.strip()
    assert "Traceback" not in printed and len(printed.splitlines()) == 1
    assert f"read-only file system (EROFS): cannot write {run_dir}" in printed and "writable" in printed
    verdict = runfolder.death_message(run_dir, runfolder.EXIT_READ_ONLY << 8)
    assert verdict.startswith(f"read-only file system (EROFS): cannot write {run_dir}")
    assert "\n" not in verdict and "kdq retry ID" in verdict


def test_a_verdict_that_cannot_be_written_is_left_in_the_log_and_read_back_as_one_line(
    settings, monkeypatch, capsys
):
    """The supervisor cannot write error.json on a read-only home: it prints its verdict into the run's
    log (opened before the home went read-only), and the worker's poll, once the home is writable again,
    fails the run with that one line, not the log's tail."""
    from kdq.backends.local import LocalBackend

    run_dir = settings.runs_dir / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / runfolder.LOG).write_text("epoch 1\nTraceback (most recent call last):\n  boom\n")
    verdict = runfolder.death_message(run_dir, runfolder.EXIT_READ_ONLY << 8)
    real_write = runfolder.write_json

    def read_only(path, data):
        raise _read_only(path)

    monkeypatch.setattr(runfolder, "write_json", read_only)
    runfolder.record_verdict(run_dir, verdict, runfolder.EXIT_READ_ONLY << 8)
    with open(run_dir / runfolder.LOG, "a") as log:
        log.write(capsys.readouterr().err)
    monkeypatch.setattr(runfolder, "write_json", real_write)
    status = LocalBackend(settings).poll({"run_dir": str(run_dir), "pid": os.getpid()})
    assert status.state == "failed" and status.error == verdict


def test_a_vanished_training_on_a_read_only_home_is_named(settings, monkeypatch):
    from kdq.backends import local

    run_dir = settings.runs_dir / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / runfolder.LOG).write_text("Traceback (most recent call last):\n  boom\n")
    monkeypatch.setattr(local, "read_only_at", lambda path: runfolder.read_only_line(path), raising=False)
    status = local.LocalBackend(settings).poll({"run_dir": str(run_dir), "pid": os.getpid()})
    assert status.state == "failed" and "\n" not in status.error
    assert status.error.startswith(f"read-only file system (EROFS): cannot write {run_dir}")
