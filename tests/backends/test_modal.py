"""The Modal backend against a fake gateway: the "Volume" is a temporary folder and a spawned call
runs the real container code (``modal_remote.run_training``) on a thread, which runs the real training
entry point (``python -m kdq.train``) in a subprocess, with Modal's retries. Errors are the modal SDK's
own exception classes, raised where the SDK would raise them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from modal import exception as me

from kdq import runfolder, steps
from kdq.backends import modal_remote as remote
from kdq.backends.modal import DEPLOY_META, ModalBackend, classify, upload_dataset
from kdq.backends.modal_gateway import CallState, Entry
from kdq.errors import PermanentError, TransientError
from kdq.spec import ExperimentSpec
from kdq.specfile import expand
from kdq.stages import Stage

TINY = {
    "name": "tiny-modal",
    "student": {"library": "kdq", "name": "tiny_cnn"},
    "teacher": {"kind": "none"},
    "distill": {"loss": "ce"},
    "train": {"epochs": 2, "batch_size": 32, "image_size": 32, "device": "cpu", "patience": None},
    "data": {"dataset": "synth", "decode_size": 40},
    "submit": {"policy": "never"},
    "backend": {"kind": "modal", "gpu": "A100-80GB", "timeout_min": 30},
}


def tiny_spec(**sections) -> ExperimentSpec:
    raw = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return expand(raw, "test")[0]


# ---------------------------------------------------------------- the fake gateway


@dataclass
class Call:
    id: str
    run_id: str
    dataset: str
    gpu: str
    timeout_s: int
    state: str = "running"
    result: dict | None = None
    error: str | None = None
    attempts: int = 0
    cancelled: bool = False
    expired: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class FakeModal:
    """The ``Gateway`` methods over a folder; ``no_credentials`` / ``offline`` make every call fail
    like the SDK does (AuthError at once; ConnectionError after its retries)."""

    def __init__(self, root: Path, retries: int = 2):
        self.root = root
        self.retries = retries
        self.calls: dict[str, Call] = {}
        self.start_delays: list[float] = []  # per spawn: seconds before the container starts
        self.no_credentials = False
        self.offline = False
        self.fail_uploads = 0  # fail the next N uploads with a ConnectionError
        self.deploys = 0
        self.commits = 0
        self.secrets: dict[str, dict] = {}
        self.started_training: list[str] = []  # call ids that really started `python -m kdq.train`

    def _gate(self) -> None:
        if self.no_credentials:
            raise me.AuthError("Token missing. Could not authenticate client. ... run `modal token new`.")
        if self.offline:
            raise me.ConnectionError("Could not connect to the Modal server.")

    # ---- calls
    def spawn(self, run_id: str, dataset: str, *, gpu: str, timeout_s: int) -> str:
        self._gate()
        call = Call(f"fc-{len(self.calls) + 1:04d}", run_id, dataset, gpu, timeout_s)
        self.calls[call.id] = call
        delay = self.start_delays.pop(0) if self.start_delays else 0.0
        threading.Thread(target=self._container, args=(call, delay), daemon=True).start()
        return call.id

    def _container(self, call: Call, delay: float) -> None:
        time.sleep(delay)
        for _ in range(self.retries + 1):
            if call.cancelled:
                break
            call.attempts += 1
            try:
                call.result = remote.run_training(
                    self.root,
                    call.run_id,
                    call.dataset,
                    call_id=call.id,
                    commit=self._commit,
                    heartbeat_s=0.2,
                    log=lambda msg, c=call: self._log(c, msg),
                )
                call.state = "finished"
                break
            except remote.RunDied as exc:  # Modal retries the input (the run resumes)
                call.error = str(exc)
        else:
            call.state = "failed"
        if call.cancelled:
            call.state, call.error = "failed", "InputCancellation: the call was cancelled"
        call.done.set()

    def _log(self, call: Call, msg: str) -> None:
        if " -m kdq.train " in msg:
            self.started_training.append(call.id)

    def _commit(self) -> None:
        self.commits += 1

    def call_state(self, call_id: str) -> CallState:
        self._gate()
        call = self.calls[call_id]
        if call.expired:
            return CallState("expired")
        if call.state == "running":
            return CallState("running")
        if call.state == "failed":
            return CallState("failed", error=call.error)
        return CallState("finished", result=call.result)

    def cancel(self, call_id: str) -> None:
        self._gate()
        call = self.calls[call_id]
        call.cancelled = True
        owner = runfolder.read_json(self.root / remote.run_path(call.run_id) / remote.OWNER) or {}
        if owner.get("call_id") == call_id and owner.get("pid"):
            os.kill(owner["pid"], signal.SIGTERM)

    # ---- the Volume
    def read_file(self, path: str) -> bytes | None:
        self._gate()
        p = self.root / path
        return p.read_bytes() if p.is_file() else None

    def download(self, path: str, dest: Path) -> int:
        self._gate()
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / path, dest)
        return dest.stat().st_size

    def listdir(self, path: str) -> list[Entry] | None:
        self._gate()
        p = self.root / path
        if not p.is_dir():
            return None
        return [
            Entry(str(c.relative_to(self.root)), c.stat().st_size, c.is_dir()) for c in sorted(p.iterdir())
        ]

    def upload(self, items) -> None:
        self._gate()
        if self.fail_uploads:
            self.fail_uploads -= 1
            raise me.ConnectionError("Deadline exceeded")
        for local, path in list(items):
            dest = self.root / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(local if isinstance(local, bytes) else Path(local).read_bytes())

    def deploy(self) -> None:
        self._gate()
        self.deploys += 1

    def put_secret(self, name: str, values: dict[str, str], *, overwrite: bool = True) -> None:
        self._gate()
        if overwrite or name not in self.secrets:
            self.secrets[name] = {**self.secrets.get(name, {}), **values}

    def check(self) -> None:
        self._gate()


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    from kdq.synth import synth

    out = tmp_path_factory.mktemp("synth")
    synth(out, per_class=8, seed=0, size_range=(40, 56), balanced=True)
    return out


@pytest.fixture
def fake(tmp_path: Path, dataset_dir: Path) -> FakeModal:
    gw = FakeModal(tmp_path / "volume")
    upload_dataset(gw, dataset_dir, "synth")
    return gw


@pytest.fixture
def backend(settings, fake) -> ModalBackend:
    return ModalBackend(settings, gateway=fake)


def wait_for(predicate, timeout: float = 120.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def poll_until_done(backend: ModalBackend, handle: dict):
    return wait_for(lambda: (s := backend.poll(handle)).state != "running" and s)


def drive(ctx: steps.Context, exp_id: int, until: set[Stage], timeout: float = 120.0):
    def step():
        steps.advance(ctx, exp_id)
        exp = ctx.store.get(exp_id)
        return exp if exp.stage in until else None

    return wait_for(step, timeout, every=0.1)


@pytest.fixture
def restore_logging():
    """The CLI configures logging onto CliRunner's stderr, which closes after the call: put it back."""
    import logging

    import structlog

    saved, handlers = structlog.get_config(), logging.getLogger().handlers[:]
    yield
    structlog.configure(**saved)
    logging.getLogger().handlers[:] = handlers


# ---------------------------------------------------------------- through the worker's steps


@pytest.mark.slow
def test_queued_to_ready_through_network_loss(settings, store, fake, dataset_dir):
    spec = tiny_spec()
    [exp_id] = store.add([(None, spec)])
    ctx = steps.Context(settings, store, backend_factory=lambda kind, s: ModalBackend(s, gateway=fake))

    fake.offline = True  # the network is down at launch: the experiment waits, nothing is lost
    steps.advance(ctx, exp_id)  # queued -> launching
    steps.advance(ctx, exp_id)
    exp = store.get(exp_id)
    assert exp.stage is Stage.LAUNCHING and not fake.calls
    assert any(e["kind"] == "transient" and "unreachable" in e["message"] for e in store.events(exp_id))

    fake.offline = False
    exp = drive(ctx, exp_id, {Stage.TRAINING})
    assert fake.deploys == 1 and store.get_meta_json(DEPLOY_META)["fingerprint"]
    assert "kdq-hf" in fake.secrets  # the app names the secret: it exists before any token does
    [call] = fake.calls.values()
    assert (call.gpu, call.timeout_s, call.run_id) == ("A100-80GB", 30 * 60, exp.run_id)
    assert exp.handle["call_id"] == call.id

    wait_for(lambda: runfolder.read_json(fake.root / remote.run_path(exp.run_id) / runfolder.PROGRESS))
    fake.offline = True  # lost again while training: polls wait
    steps.advance(ctx, exp_id)
    assert store.get(exp_id).stage is Stage.TRAINING
    fake.offline = False

    exp = drive(ctx, exp_id, {Stage.DONE, Stage.READY, Stage.FAILED})
    assert exp.stage is Stage.DONE, exp.error  # submit.policy = never: ready, then done
    assert exp.progress["epoch"] == 2 and exp.metrics["val_f1"] == exp.val_f1
    for name in runfolder.ARTIFACTS:
        assert (Path(exp.artifacts) / name).stat().st_size > 0
    assert fake.started_training == [call.id] and fake.commits >= 3  # claim, periodic, final
    assert fake.deploys == 1  # the code did not change: no second deploy


@pytest.mark.slow
def test_relaunch_after_a_worker_crash_never_trains_twice(settings, store, fake):
    """The worker dies after spawning but before recording the call: the next launch must not train twice."""
    spec = tiny_spec()
    [exp_id] = store.add([(None, spec)])
    ctx = steps.Context(settings, store, backend_factory=lambda kind, s: ModalBackend(s, gateway=fake))
    steps.advance(ctx, exp_id)  # queued -> launching
    # The first call starts soon and claims the run; the record of its id is lost (upload fails after
    # spawn); the relaunch spawns again before the claim is visible; its container starts later.
    fake.start_delays = [0.3, 1.5]
    orig_spawn = fake.spawn

    def spawn_then_crash(*a, **kw):
        call_id = orig_spawn(*a, **kw)
        if len(fake.calls) == 1:
            fake.fail_uploads = 1  # the "spawned" record never reaches the Volume
        return call_id

    fake.spawn = spawn_then_crash
    steps.advance(ctx, exp_id)
    assert store.get(exp_id).stage is Stage.LAUNCHING and len(fake.calls) == 1
    steps.advance(ctx, exp_id)  # relaunch: no owner visible yet, so it spawns; the guard decides
    exp = drive(ctx, exp_id, {Stage.DONE, Stage.FAILED})
    assert exp.stage is Stage.DONE, exp.error
    assert len(fake.calls) == 2
    assert fake.started_training == ["fc-0001"]  # only the first call trained
    second = fake.calls["fc-0002"].result
    assert second["outcome"] == "done" or (second["outcome"], second["owner"]) == ("duplicate", "fc-0001")


def test_launch_again_reuses_the_recorded_call(backend, fake, settings):
    spec = tiny_spec()
    fake.start_delays = [3600]  # the container never starts during this test
    first = backend.launch("r-1", spec)
    again = backend.launch("r-1", spec)
    assert again["call_id"] == first["call_id"] and len(fake.calls) == 1
    assert json.loads((fake.root / "runs/r-1/spec.json").read_text())["name"] == spec.name
    # a launch record without the call id, but a live owner on the Volume: adopt it
    (fake.root / "runs/r-2").mkdir(parents=True)
    runfolder.write_json(fake.root / "runs/r-2" / remote.LAUNCH, {"state": "spawning"})
    runfolder.write_json(
        fake.root / "runs/r-2" / remote.OWNER, {"call_id": "fc-0001", "heartbeat": time.time()}
    )
    assert backend.launch("r-2", spec)["call_id"] == "fc-0001" and len(fake.calls) == 1


# ---------------------------------------------------------------- preemption, failure, expiry


@pytest.mark.slow
def test_preempted_run_resumes_from_its_checkpoint(backend, fake, tmp_path):
    handle = backend.launch("pre-1", tiny_spec(train={"epochs": 8}))
    run_dir = fake.root / "runs/pre-1"
    wait_for(lambda: (run_dir / runfolder.CHECKPOINT).exists(), every=0.01)
    owner = wait_for(
        lambda: (o := runfolder.read_json(run_dir / remote.OWNER)) and o.get("pid") and o, every=0.01
    )
    os.kill(owner["pid"], signal.SIGKILL)  # the container is preempted mid-training
    status = poll_until_done(backend, handle)
    assert status.state == "succeeded", status.error
    call = fake.calls[handle["call_id"]]
    assert call.attempts == 2 and fake.started_training == [call.id, call.id]
    log = (run_dir / runfolder.LOG).read_text()
    assert "resumed from" in log and "after epoch" in log  # not from epoch 0
    with open(run_dir / runfolder.HISTORY) as f:
        epochs = [int(row.split(",")[0]) for row in f.read().splitlines()[1:]]
    assert epochs == list(range(8))  # every epoch once: the resumed run continued, it did not restart
    backend.fetch(handle, tmp_path / "art")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == sorted(runfolder.ARTIFACTS)


def test_a_failing_run_fails_with_its_error(settings, store, fake, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "README.txt").write_text("no images here")
    upload_dataset(fake, junk, "junk")
    [exp_id] = store.add([(None, tiny_spec(data={"dataset": "junk"}))])
    ctx = steps.Context(settings, store, backend_factory=lambda kind, s: ModalBackend(s, gateway=fake))
    exp = drive(ctx, exp_id, {Stage.FAILED, Stage.DONE})
    assert exp.stage is Stage.FAILED and "DataError" in exp.error and "junk" in exp.error, exp.error
    assert len(fake.calls) == 1 and next(iter(fake.calls.values())).attempts == 1  # a verdict is not retried


def _finished_run(root: Path, run_id: str, outcome: str) -> None:
    run_dir = root / remote.run_path(run_id)
    run_dir.mkdir(parents=True)
    runfolder.write_progress(run_dir, epoch=4, epochs=5, val_f1=0.5)
    (run_dir / runfolder.LOG).write_text("line 1\nlast line\n")
    if outcome == "done":
        runfolder.write_json(run_dir / runfolder.DONE, {"best_f1": 0.5})
    elif outcome == "error":
        runfolder.write_json(run_dir / runfolder.ERROR, {"error": "RuntimeError: CUDA out of memory"})


@pytest.mark.parametrize(
    "outcome, state, needle",
    [
        ("done", "succeeded", None),
        ("error", "failed", "CUDA out of memory"),
        (None, "failed", "expire"),
    ],
)
def test_an_expired_result_is_recovered_from_the_volume(backend, fake, outcome, state, needle):
    _finished_run(fake.root, "old-1", outcome)
    fake.calls["fc-9"] = Call("fc-9", "old-1", "synth", "H100", 60, expired=True)
    status = backend.poll({"run_id": "old-1", "call_id": "fc-9"})
    assert status.state == state and status.progress["epoch"] == 4
    if needle:
        assert needle in status.error and "last line" in status.error


def test_fetch_checks_every_artifact(backend, fake, tmp_path):
    _finished_run(fake.root, "f-1", "done")
    (fake.root / "runs/f-1" / runfolder.MODEL).write_bytes(b"x" * 100)
    with pytest.raises(PermanentError, match="metrics.json"):
        backend.fetch({"run_id": "f-1", "call_id": "fc-1"}, tmp_path / "dest")


# ---------------------------------------------------------------- credentials and errors


def test_missing_credentials_fail_the_launch_with_what_to_run_then_retry_proceeds(settings, store, fake):
    [exp_id] = store.add([(None, tiny_spec())])
    ctx = steps.Context(settings, store, backend_factory=lambda kind, s: ModalBackend(s, gateway=fake))
    fake.no_credentials = True
    exp = drive(ctx, exp_id, {Stage.FAILED})
    assert "modal token new" in exp.error and "kdq retry" in exp.error and not fake.calls
    fake.no_credentials = False  # the user logged in and ran `kdq retry`
    fake.start_delays = [3600]
    store.retry(exp_id)
    exp = drive(ctx, exp_id, {Stage.TRAINING})
    assert len(fake.calls) == 1 and exp.handle["call_id"] == "fc-0001"
    fake.no_credentials = True  # credentials gone while a run lives: wait, never abandon the run
    steps.advance(ctx, exp_id)
    assert store.get(exp_id).stage is Stage.TRAINING
    assert "modal token new" in [e for e in store.events(exp_id) if e["kind"] == "transient"][-1]["message"]


def test_a_dataset_neither_uploaded_nor_local_says_how_to_upload(settings, tmp_path):
    gw = FakeModal(tmp_path / "empty-volume")
    with pytest.raises(PermanentError, match=r"kdq data upload PATH --name synth"):
        ModalBackend(settings, gateway=gw).launch("r-1", tiny_spec())
    assert not gw.calls


def test_upload_is_skipped_when_the_same_dataset_is_there(fake, dataset_dir):
    seen = []
    mark = upload_dataset(fake, dataset_dir, "synth", lambda done, total: seen.append((done, total)))
    assert mark["uploaded"] is False and seen[-1][0] == seen[-1][1] == mark["files"]
    on_volume = sorted(p.name for p in (fake.root / "datasets/synth").rglob("*") if p.is_file())
    assert (
        remote.DATASET_MARK in on_volume
        and "synth_manifest.json" in on_volume
        and "._img_00000.jpg" not in on_volume
    )


@pytest.mark.parametrize(
    "exc, kind, live, needle",
    [
        (me.AuthError("Token missing"), PermanentError, False, "modal token new"),
        (me.AuthError("Token missing"), TransientError, True, "modal token new"),
        (me.ConnectionError("down"), TransientError, False, "unreachable"),
        (me.TimeoutError("slow"), TransientError, True, "unreachable"),
        (me.ServiceError("503"), TransientError, True, "busy"),
        (me.InvalidError("gpu 'X1' is not valid"), PermanentError, False, "gpu 'X1'"),
        (me.NotFoundError("App 'kdq' not found"), PermanentError, False, "kdq modal deploy"),
    ],
)
def test_modal_errors_are_classified(exc, kind, live, needle):
    mapped = classify(exc, live_run=live)
    assert isinstance(mapped, kind) and needle in str(mapped)


def test_a_bug_is_not_mistaken_for_a_modal_problem():
    assert classify(KeyError("x"), live_run=True) is None


def test_cancel_stops_the_training_process(backend, fake):
    handle = backend.launch("c-1", tiny_spec(train={"epochs": 200}))
    run_dir = fake.root / "runs/c-1"
    wait_for(lambda: (o := runfolder.read_json(run_dir / remote.OWNER)) and o.get("pid"), every=0.05)
    backend.cancel(handle)
    status = poll_until_done(backend, handle)
    assert status.state == "failed" and fake.calls[handle["call_id"]].cancelled


def test_a_teacher_run_needs_hugging_face_access_before_it_spawns(backend, fake, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    spec = tiny_spec(teacher={"kind": "siglip", "model": "google/medsiglip-448"}, distill={"loss": "hinton"})
    with pytest.raises(PermanentError, match="no Hugging Face token found.*hf auth login"):
        backend.launch("t-1", spec)
    assert not fake.calls and fake.secrets["kdq-hf"] == {"KDQ_SECRET": "kdq-hf"}


def test_done_reported_but_not_yet_visible_waits(backend, fake):
    fake.calls["fc-7"] = Call(
        "fc-7", "v-1", "synth", "H100", 60, state="finished", result={"outcome": "done", "run_id": "v-1"}
    )
    with pytest.raises(TransientError, match="not visible"):
        backend.poll({"run_id": "v-1", "call_id": "fc-7"})


def test_upload_command_without_credentials_says_what_to_run(home, dataset_dir, restore_logging):
    import modal.config
    from typer.testing import CliRunner

    from kdq.cli.main import app

    if modal.config.config.get("token_id"):
        pytest.skip("this machine has Modal credentials")
    result = CliRunner().invoke(app, ["data", "upload", str(dataset_dir), "--name", "synth"])
    assert result.exit_code == 1 and "modal token new" in result.output


# ---------------------------------------------------------------- the real gateway, offline


def test_the_real_gateway_without_credentials_raises_what_the_backend_maps(settings):
    import modal.config

    from kdq.backends.modal_gateway import ModalGateway

    if modal.config.config.get("token_id"):
        pytest.skip("this machine has Modal credentials")
    backend = ModalBackend(settings, gateway=ModalGateway(settings))
    with pytest.raises(PermanentError, match="modal token new"):
        backend.launch("r-1", tiny_spec())
    with pytest.raises(TransientError, match="modal token new"):  # a run may live: wait, do not fail it
        backend.poll({"run_id": "r-1", "call_id": "fc-1"})


@pytest.mark.parametrize(
    "raised, state, needle",
    [
        (TimeoutError(), "running", None),  # the built-in: no output yet
        (me.OutputExpiredError(), "expired", None),
        (me.FunctionTimeoutError("Function timed out"), "failed", "timeout_min"),
        (ValueError("bad input"), "failed", "ValueError: bad input"),  # raised by the remote function
    ],
)
def test_the_real_gateway_reads_a_call_like_the_sdk_reports_it(settings, monkeypatch, raised, state, needle):
    """``FunctionCall.from_id(...).get(timeout=0)`` cannot run offline; its documented outcomes can."""
    import modal

    from kdq.backends.modal_gateway import ModalGateway

    class Handle:
        error: Exception = raised

        def get(self, timeout=None):
            assert timeout == 0
            raise self.error

    monkeypatch.setattr(modal.FunctionCall, "from_id", staticmethod(lambda call_id: Handle()))
    got = ModalGateway(settings).call_state("fc-1")
    assert got.state == state and (needle is None or needle in got.error)
    Handle.error = me.ConnectionError("down")
    with pytest.raises(me.ConnectionError):  # transport trouble is not a verdict: it reaches the backend
        ModalGateway(settings).call_state("fc-1")


# ---------------------------------------------------------------- deploy when the code changed


def test_the_fingerprint_follows_the_code_that_runs_remotely(settings, tmp_path):
    from kdq.backends.modal import code_fingerprint

    (tmp_path / "kdq" / "train").mkdir(parents=True)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "kdq" / "train" / "loop.py").write_text("EPOCHS = 1\n")
    (tmp_path / "jobs" / "modal_app.py").write_text("GPU = 'H100'\n")
    first = code_fingerprint(settings, tmp_path)
    (tmp_path / "kdq" / "train" / "__pycache__").mkdir()
    (tmp_path / "kdq" / "train" / "__pycache__" / "loop.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "README.md").write_text("docs do not run remotely")
    assert code_fingerprint(settings, tmp_path) == first
    (tmp_path / "kdq" / "train" / "loop.py").write_text("EPOCHS = 2\n")
    assert code_fingerprint(settings, tmp_path) != first
    torch_changed = settings.model_copy(update={"modal_torch": "2.13.0"})
    assert code_fingerprint(torch_changed, tmp_path) != code_fingerprint(settings, tmp_path)


def test_deploys_only_when_the_recorded_fingerprint_differs(settings, store, fake):
    from kdq.backends.modal import ensure_deployed

    assert ensure_deployed(settings, fake) is True
    assert ensure_deployed(settings, fake) is False
    store.set_meta(DEPLOY_META, {**store.get_meta_json(DEPLOY_META), "fingerprint": "older-code"})
    assert ensure_deployed(settings, fake) is True
    assert ensure_deployed(settings, fake, force=True) is True
    assert fake.deploys == 3
