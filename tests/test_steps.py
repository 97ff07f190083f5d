"""The worker's steps, driven directly (no queue) with the real local backend and real training."""

import os
import signal
import time
import tomllib
from pathlib import Path

import pytest
from conftest import TINY_SPEC

from kdq import runfolder, steps
from kdq.backends import RunStatus
from kdq.errors import PermanentError, TransientError
from kdq.specfile import expand
from kdq.stages import Stage
from kdq.store import Store, StoreError


def tiny(**overrides):
    raw = tomllib.loads(TINY_SPEC)
    for key, value in overrides.items():
        section, field = key.split("__")
        raw.setdefault(section, {})[field] = value
    return expand(raw, "tiny.toml")[0]


def drive(ctx, exp_id, timeout=120):
    """Advance until the worker has nothing more to do, sleeping through the waits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        delay = steps.advance(ctx, exp_id)
        if delay is None:
            return ctx.store.get(exp_id)
        time.sleep(min(delay, 0.2))
    raise AssertionError(f"experiment {exp_id} still {ctx.store.get(exp_id).stage} after {timeout} s")


@pytest.fixture
def ctx(settings, store):
    settings.poll_interval_s = 0.2
    return steps.Context(settings=settings, store=store)


def test_run_id_is_fixed_by_instance_experiment_and_attempt(ctx):
    [i] = ctx.store.add([(None, tiny())])
    assert steps.run_id_for("abcd1234", ctx.store.get(i)) == f"abcd1234-e{i}-a1"


def test_tiny_experiment_goes_from_queued_to_done_with_a_verified_model(ctx, dataset):
    [i] = ctx.store.add([(None, tiny())])
    exp = drive(ctx, i)
    assert exp.stage is Stage.DONE, exp.error
    assert 0 <= exp.val_f1 <= 1 and exp.metrics["verify"]["output_shape"][-1] == 10
    assert exp.artifacts == str(ctx.settings.artifacts_dir / exp.run_id)  # keyed by the run id, never reused
    assert (ctx.settings.artifacts_dir / exp.run_id / runfolder.MODEL).exists()
    kinds = [e["stage"] for e in ctx.store.events(i) if e["kind"] == "stage"]
    assert kinds == ["launching", "training", "fetching", "validating", "ready", "done"]


def test_policy_other_than_never_stops_at_ready_for_the_scheduler(ctx, dataset):
    [i] = ctx.store.add([(None, tiny(submit__policy="if_better"))])
    assert drive(ctx, i).stage is Stage.READY
    assert steps.advance(ctx, i) is None


def test_missing_dataset_fails_with_the_fix(ctx):
    [i] = ctx.store.add([(None, tiny(data__dataset="nowhere"))])
    exp = drive(ctx, i)
    assert exp.stage is Stage.FAILED
    assert "dataset 'nowhere' not found" in exp.error and "kdq data synth" in exp.error


def test_crashing_training_fails_with_its_log_tail(ctx):
    empty = ctx.settings.datasets_dir / "empty" / "1. Eczema"
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    [i] = ctx.store.add([(None, tiny(data__dataset="empty"))])
    exp = drive(ctx, i)
    assert exp.stage is Stage.FAILED
    assert "found no class folders with images" in exp.error
    assert "Traceback" in exp.error  # the log tail came along


def test_cancel_stops_a_running_training(ctx, dataset):
    [i] = ctx.store.add([(None, tiny(train__epochs=200))])
    steps.advance(ctx, i)  # queued → launching
    steps.advance(ctx, i)  # launching → training
    exp = ctx.store.get(i)
    assert exp.stage is Stage.TRAINING
    ctx.store.request_cancel(i)
    assert steps.advance(ctx, i) is None
    assert ctx.store.get(i).stage is Stage.CANCELLED
    from pathlib import Path

    from kdq.runfolder import is_running

    run_dir = Path(exp.handle["run_dir"])
    deadline = time.time() + 20
    while is_running(run_dir) and time.time() < deadline:
        time.sleep(0.1)
    assert not is_running(run_dir)


def test_relaunch_after_lost_state_does_not_start_a_second_run(ctx, dataset):
    [i] = ctx.store.add([(None, tiny(train__epochs=200))])
    steps.advance(ctx, i)
    steps.advance(ctx, i)
    first = ctx.store.get(i).handle
    # a worker that crashed after launching but before recording it would launch again:
    again = ctx.backend("local").launch(ctx.store.get(i).run_id, ctx.store.get(i).spec)
    assert again["pid"] == first["pid"]
    ctx.backend("local").cancel(first)


class FlakyBackend:
    name = "local"

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def launch(self, run_id, spec):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return {"run_id": run_id}

    def poll(self, handle):
        return RunStatus("running", {"epoch": 1, "epochs": 5})

    def cancel(self, handle):
        pass


def test_transient_trouble_waits_and_retries_then_permanent_trouble_fails(settings, store):
    settings.local_max_running = 2  # the first one keeps training while the second launches
    backend = FlakyBackend([TransientError("network down"), TransientError("still down"), {"ok": 1}])
    ctx = steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend)
    [i] = store.add([(None, tiny())])
    steps.advance(ctx, i)
    assert steps.advance(ctx, i) == steps.TRANSIENT_BACKOFF_S[0]
    assert steps.advance(ctx, i) == steps.TRANSIENT_BACKOFF_S[1]
    assert store.get(i).stage is Stage.LAUNCHING
    steps.advance(ctx, i)
    exp = store.get(i)
    assert exp.stage is Stage.TRAINING and backend.calls == 3
    steps.advance(ctx, i)
    assert store.get(i).progress == {"epoch": 1, "epochs": 5}

    backend2 = FlakyBackend([PermanentError("no credentials: run `modal token new`")])
    ctx2 = steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend2)
    [j] = store.add([(None, tiny(train__seed=1))])
    steps.advance(ctx2, j)
    assert steps.advance(ctx2, j) is None
    assert store.get(j).stage is Stage.FAILED and "modal token new" in store.get(j).error


def test_a_step_that_crashes_fails_the_experiment_and_keeps_it(settings, store):
    backend = FlakyBackend([ZeroDivisionError("bug")])
    ctx = steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend)
    [i] = store.add([(None, tiny())])
    steps.advance(ctx, i)
    assert steps.advance(ctx, i) is None
    exp = store.get(i)
    assert exp.stage is Stage.FAILED and "ZeroDivisionError" in exp.error
    assert store.retry(i).stage is Stage.QUEUED


def test_due_for_redrive_finds_only_overdue_worker_stages(store):
    a, b, c = store.add([(None, tiny(train__seed=s)) for s in (1, 2, 3)])
    now = time.time()
    store.update(a, next_check_at=now - 100)
    store.update(b, next_check_at=now + 100)
    store.move(c, Stage.QUEUED, Stage.CANCELLED)
    assert steps.due_for_redrive(store, now, grace_s=30) == [a]


class CountingBackend:
    """Trainings that run for a few polls; counts how many run at once."""

    def __init__(self, polls=3):
        self.polls, self.alive, self.launched, self.most = polls, {}, [], 0

    def launch(self, run_id, spec):
        self.alive[run_id] = self.polls
        self.launched.append(run_id)
        self.most = max(self.most, len(self.alive))
        return {"run_id": run_id}

    def poll(self, handle):
        self.alive[handle["run_id"]] -= 1
        if self.alive[handle["run_id"]] > 0:
            return RunStatus("running", {"epoch": 1, "epochs": 2})
        del self.alive[handle["run_id"]]
        return RunStatus("failed", {}, "stopped by the test")

    def cancel(self, handle):
        self.alive.pop(handle["run_id"], None)


def test_a_sweep_trains_one_at_a_time_locally_and_priority_goes_first(settings, store):
    backend = CountingBackend()
    ctx = steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend)
    sweep = store.add([(None, tiny(train__seed=s)) for s in range(12)])
    [urgent] = store.add([(None, tiny(train__seed=99))], priority=100)
    ids = [*sweep, urgent]
    for _ in range(200):
        live = [i for i in ids if steps.advance(ctx, i) is not None]
        training = [i for i in ids if store.get(i).stage in (Stage.LAUNCHING, Stage.TRAINING)]
        assert len(training) <= settings.local_max_running == 1
        if not live:
            break
    assert {store.get(i).stage for i in ids} == {Stage.FAILED}
    assert backend.most == 1 and len(backend.launched) == 13
    assert backend.launched[0] == f"{store.instance}-e{urgent}-a1"


def test_modal_trainings_run_up_to_their_own_limit(settings, store, monkeypatch):
    monkeypatch.setenv("KDQ_MODAL_MAX_RUNNING", "3")
    from kdq.settings import Settings

    settings = Settings()
    backend = CountingBackend(polls=50)
    ctx = steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend)
    ids = store.add([(None, tiny(train__seed=s, backend__kind="modal")) for s in range(5)])
    for _ in range(4):
        for i in ids:
            steps.advance(ctx, i)
    assert backend.most == 3
    assert [store.get(i).stage for i in ids].count(Stage.QUEUED) == 2


def test_a_deleted_database_never_lets_a_new_experiment_overwrite_old_artifacts(settings, store, dataset):
    settings.poll_interval_s = 0.2
    old = drive(steps.Context(settings=settings, store=store), store.add([(None, tiny())])[0])
    assert old.stage is Stage.DONE, old.error
    old_model = Path(old.artifacts) / runfolder.MODEL
    before = old_model.read_bytes()
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.db_path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreError, match="no kdq.db"):
        Store.open(settings)  # the worker and the CLI refuse the home as it is
    with Store.open(settings, force=True) as fresh:  # `kdq worker --force`
        [new_id] = fresh.add([(None, tiny(train__seed=7))])
        assert new_id == old.id  # the new database numbers from 1 again ...
        new = drive(steps.Context(settings=settings, store=fresh), new_id)
    assert new.stage is Stage.DONE, new.error
    assert new.run_id != old.run_id and new.artifacts != old.artifacts  # ... but its run id is new
    assert old_model.read_bytes() == before


def _trainer_pids(pid: int) -> list[int]:
    """The launched process and its descendants (the training itself may be a child of a supervisor)."""
    out = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return out
    for kid in kids:
        out += _trainer_pids(int(kid))
    return out


def _kill_once_checkpointed(ctx, exp_id, sig, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps.advance(ctx, exp_id)
        exp = ctx.store.get(exp_id)
        if (
            exp.stage is Stage.TRAINING
            and (ctx.settings.runs_dir / exp.run_id / runfolder.CHECKPOINT).exists()
        ):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the training never wrote a checkpoint")
    os.kill(_trainer_pids(exp.handle["pid"])[-1], sig)  # the training process itself, as the OOM killer does
    return exp


def test_a_killed_training_says_which_signal_and_retry_resumes_from_its_checkpoint(ctx, dataset):
    [i] = ctx.store.add([(None, tiny(train__epochs=8, train__patience=None, train__checkpoint_every_s=0))])
    first = _kill_once_checkpointed(ctx, i, signal.SIGKILL)
    failed = drive(ctx, i)
    assert failed.stage is Stage.FAILED
    assert "killed by SIGKILL" in failed.error and "kdq retry" in failed.error
    resumed = drive(ctx, ctx.store.retry(i).id)
    assert resumed.stage is Stage.DONE, resumed.error
    log = (ctx.settings.runs_dir / resumed.run_id / runfolder.LOG).read_text()
    assert f"resumed from run {first.run_id}: its last checkpoint copied here" in log
    assert "after epoch" in log  # the training loop took the checkpoint up


def test_retry_fresh_starts_again_from_epoch_one(ctx, dataset):
    [i] = ctx.store.add([(None, tiny(train__epochs=8, train__patience=None))])
    _kill_once_checkpointed(ctx, i, signal.SIGKILL)
    assert drive(ctx, i).stage is Stage.FAILED
    exp = ctx.store.retry(i, fresh=True)
    assert exp.resume_from is None
    ctx.store.move(i, Stage.QUEUED, Stage.CANCELLED, "enough")  # only the choice matters here
    again = ctx.store.retry(i)
    assert again.resume_from is None  # a cancelled attempt that never ran has nothing to resume


def test_a_launch_through_the_gate_is_one_log_line_like_every_move(settings, store):
    from structlog.testing import capture_logs

    from kdq import log as kdqlog

    kdqlog.configure(json=True)
    ctx = steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: CountingBackend())
    [i] = store.add([(None, tiny(train__seed=7))])
    with capture_logs() as logs:
        steps.advance(ctx, i)
    assert f"{i} tiny: queued → launching" in [e["event"] for e in logs]


def test_a_database_locked_for_long_fails_no_experiment_and_says_so_once(settings, monkeypatch):
    """A `BEGIN EXCLUSIVE` held past every busy timeout (a `sqlite3` shell, a backup) is transient: the
    step waits, says so in one log line, and looks again; nothing fails."""
    import sqlite3

    from kdq import store as store_module
    from kdq.spec import ExperimentSpec

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(store_module, "BUSY_WAIT_S", 0.3, raising=False)
    said = []
    monkeypatch.setattr(store_module.log, "warning", lambda *a, **k: said.append(a[0]), raising=False)
    with Store.open(settings) as store:
        [i] = store.add([(None, ExperimentSpec(name="a"))])
        other = sqlite3.connect(settings.db_path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        context = steps.Context(settings=settings, store=store)
        try:
            delay = steps.advance(context, i)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert delay is not None and store.get(i).stage is Stage.QUEUED
        assert steps.advance(context, i) == 0 and store.get(i).stage is Stage.LAUNCHING
    assert len(said) == 1 and "is busy: another process holds its write lock" in said[0]


def test_a_missing_credential_pauses_the_queue_says_so_once_and_fails_nothing(settings, store):
    """No Modal login (or no Hugging Face token) is the machine's trouble, not the experiments': like the
    VPN, the queue waits with one line in the log and in `kdq status`, and goes on once it is fixed."""
    from structlog.testing import capture_logs

    from kdq import log as kdqlog
    from kdq import pause
    from kdq.errors import CredentialError

    kdqlog.configure(json=True)
    settings.local_max_running = 3
    no_login = CredentialError("modal", "Modal has no valid credentials: run `modal token new`")
    backend = FlakyBackend([no_login] * 3 + [{"ok": 1}] * 3)
    ctx = steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend)
    ids = store.add([(None, tiny(train__seed=k, backend__kind="modal")) for k in range(3)])
    with capture_logs() as logs:
        for _ in range(4):  # queued → launching, refused: back in line, then waiting quietly (a try a minute)
            delays = [steps.advance(ctx, i) for i in ids]
    assert [store.get(i).stage for i in ids] == [Stage.QUEUED] * 3  # waiting, in no launch slot; not failed
    assert all(d == steps.PAUSED_RECHECK_S for d in delays)
    [line] = [e["event"] for e in logs if "paused" in e["event"]]
    assert "modal token new" in line and "kdq doctor" in line
    assert (
        list(pause.active(store)) == ["modal"]
        and "modal token new" in pause.active(store)["modal"]["message"]
    )
    pause.clear(store, ["modal"])  # the login is back: `kdq doctor` passed (or the minute's try worked)
    for i in ids:
        steps.advance(ctx, i)
        steps.advance(ctx, i)
    assert [store.get(i).stage for i in ids] == [Stage.TRAINING] * 3
    assert pause.active(store) == {}


def test_a_look_due_far_in_the_future_is_overdue_after_the_clock_went_back(store):
    """next_check_at is wall-clock: after a -1 h step every look is "an hour away". No step asks for more
    than minutes, so one due further ahead than the longest wait is re-driven now."""
    from kdq.spec import ExperimentSpec

    [a, b] = store.add([(None, ExperimentSpec(name="a")), (None, ExperimentSpec(name="b"))], force=True)
    now = time.time()
    store.update(a, next_check_at=now + 3600)
    store.update(b, next_check_at=now + 5)
    assert steps.due_for_redrive(store, now, grace_s=30) == [a]


def test_a_step_that_meets_a_read_only_home_fails_nothing_and_looks_again(settings, store):
    """KDQ_HOME read-only (a remount, a full quota) is the machine's trouble: the step looks again
    later, nothing fails, and the experiment goes on once the home is writable."""
    import errno

    read_only = OSError(errno.EROFS, "Read-only file system", str(settings.runs_dir / "r1"))
    backend = FlakyBackend([read_only, {"ok": 1}])
    ctx = steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend)
    [i] = store.add([(None, tiny())])
    steps.advance(ctx, i)
    assert steps.advance(ctx, i) not in (None, 0)
    assert store.get(i).stage is Stage.LAUNCHING and store.get(i).error in (None, "")
    steps.advance(ctx, i)
    assert store.get(i).stage is Stage.TRAINING
