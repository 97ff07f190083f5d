"""When the training checkpoints (by a clock, not every epoch) and how a SIGTERM stops it: at the next
step, after a checkpoint of that step, with a status that means "resume me"."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from kdq import runfolder
from kdq.train import loop
from kdq.train.checkpoint import Saver, Stopped
from tests.train.test_loop import rows, spec


def saved_epoch(path) -> int | None:
    """The epochs a checkpoint holds (counted from 1), or None when there is none."""
    return torch.load(path, weights_only=False)["state"]["epoch"] + 1 if path.exists() else None


def test_a_checkpoint_is_written_when_the_clock_says_it_is_due_and_after_the_last_epoch(
    clean_dataset, tmp_path
):
    s = spec(teacher__kind="none", distill__loss="ce", train__epochs=4, train__checkpoint_every_s=250)
    now = [0.0]
    path = tmp_path / "local" / runfolder.CHECKPOINT  # not in the run folder
    saver = Saver(path, s.train.checkpoint_every_s, clock=lambda: now[0])
    seen = []

    def epoch_done(epoch):  # each epoch "takes" 150 s of the injected clock
        seen.append(saved_epoch(path))
        now[0] += 150

    loop.run(s, tmp_path / "run", clean_dataset, tmp_path / "cache", on_epoch=epoch_done, saver=saver)
    # at 0 s and 150 s nothing is due; at 300 s the third epoch's; at 450 s (150 s later) none is due
    assert seen == [None, None, 3, 3]
    assert saved_epoch(path) == 4  # the last epoch's, always: export and scoring resume from it
    assert not (tmp_path / "run" / runfolder.CHECKPOINT).exists()


class StopAt(Saver):
    """A saver whose stop flag rises at the ``at``-th step, as a SIGTERM's handler would raise it."""

    def __init__(self, *args, at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.asked = at, 0

    @property
    def stopping(self) -> bool:
        self.asked += 1
        return self.asked >= self.at

    @stopping.setter
    def stopping(self, value: bool) -> None:
        pass


def test_a_run_stopped_mid_epoch_resumes_at_that_step_and_matches_an_uninterrupted_one(
    clean_dataset, tmp_path
):
    s = spec(teacher__kind="none", distill__loss="ce", train__epochs=3, train__batch_size=8)
    s = s.model_copy(update={"student": s.student.model_copy(update={"drop_rate": 0.5})})  # draws per step
    loop.run(s, tmp_path / "a", clean_dataset, tmp_path / "cache")
    path = tmp_path / "b" / runfolder.CHECKPOINT
    n_train = json.loads((tmp_path / "a" / runfolder.METRICS).read_text())["n_train"]
    steps = -(-n_train // 8)
    with pytest.raises(Stopped, match=f"step 3 of epoch 2; checkpoint {path}"):
        loop.run(s, tmp_path / "b", clean_dataset, tmp_path / "cache", saver=StopAt(path, 300, at=steps + 3))
    state = torch.load(path, weights_only=False)["state"]
    assert state["epoch"] == 0 and state["partial"]["steps"] == 3  # one epoch and 3 steps of the next
    assert [int(r["epoch"]) for r in rows(tmp_path / "b")] == [1]
    loop.run(s, tmp_path / "b", clean_dataset, tmp_path / "cache")
    a, b = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # the cut epoch's sums carried over whole
    assert [r["val_f1"] for r in a] == [r["val_f1"] for r in b]


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_sigterm_checkpoints_the_training_at_the_next_step_and_the_run_resumes_from_it(
    clean_dataset, tmp_path
):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    run_dir.mkdir()
    s = spec(teacher__kind="none", distill__loss="ce", train__epochs=20, train__batch_size=4)
    (run_dir / runfolder.SPEC).write_text(s.model_dump_json())  # checkpoint_every_s: 300, never due here
    local = tmp_path / "local" / runfolder.CHECKPOINT
    cmd = [sys.executable, "-m", "kdq.train", str(run_dir), "--data", str(clean_dataset)]
    cmd += ["--cache", str(cache), "--checkpoint", str(local)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (runfolder.read_json(run_dir / runfolder.PROGRESS) or {}).get("epoch", 0) >= 1)
    assert not local.exists()  # no epoch's checkpoint yet: none is due
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == runfolder.EXIT_STOPPED, out[-3000:]
    assert not (run_dir / runfolder.ERROR).exists() and not (run_dir / runfolder.DONE).exists()
    state = torch.load(local, weights_only=False)["state"]
    cut = state["epoch"] + 2  # the interrupted epoch, counted from 1
    assert 2 <= cut < 20 and state["partial"]["steps"] >= 1
    assert [int(r["epoch"]) for r in rows(run_dir)] == list(range(1, cut))  # epochs done, none half
    assert f"stopped by SIGTERM at step {state['partial']['steps']} of epoch {cut}" in out

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"step {state['partial']['steps']} of epoch {cut}" in again.stdout  # resumed from that step
    assert [int(r["epoch"]) for r in rows(run_dir)] == list(range(1, 21))  # each epoch once
    assert (run_dir / runfolder.DONE).exists() and saved_epoch(local) == 20


def test_a_sigterm_outside_the_epochs_acts_at_once_and_inside_them_waits_for_the_step(tmp_path, monkeypatch):
    """Data, teacher and export have no step to stop at: a SIGTERM there (a cancel during a long
    teacher pass) ends the process as an unhandled one would, not hours later."""
    from kdq.train import checkpoint

    sent = []
    monkeypatch.setattr(checkpoint.signal, "signal", lambda sig, handler: sent.append(("handler", handler)))
    monkeypatch.setattr(checkpoint.os, "kill", lambda pid, sig: sent.append(("kill", sig)))
    saver = Saver(tmp_path / "ck.pt", 300)
    with saver.training():
        saver.request_stop(signal.SIGTERM, None)
    assert saver.stopping and sent == []
    saver.request_stop(signal.SIGTERM, None)
    assert sent == [("handler", signal.SIG_DFL), ("kill", signal.SIGTERM)]
