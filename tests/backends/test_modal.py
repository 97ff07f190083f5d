"""The Modal backend against a stand-in of the modal SDK that behaves like Modal where it matters.

``FakeModal`` is the real ``ModalGateway`` with its three SDK objects (the Volume, the function, a
function call) replaced, so the gateway's own code (reading a call, streaming Volume blocks) runs as
it does for real. The stand-ins behave like modal 1.6.4:

- each container attempt mounts its own copy of the Volume; what it writes is visible to
  ``read_file`` only after a ``commit``, and a commit or reload fails while a file under the mount is
  open (by the container or its training process), as ``Volume.reload`` does;
- ``deploy`` is slow and fails when two run at once;
- a cancelled call makes ``get()`` raise ``RemoteError('')``, an out-of-memory kill
  ``RemoteError(...)``; a preemption is ``KeyboardInterrupt`` (SIGINT) in the container, and Modal
  restarts the same input; a training process that dies is retried (``retries``);
- Volume block downloads can fail halfway with aiohttp's errors.

A spawned call runs the real container code (``jobs.container.run_training``) on a thread, which
runs the real training entry point (``python -m kdq.train``) in a subprocess.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from modal import exception as me
from modal.volume import FileEntry, FileEntryType

from jobs import container, decode, packing
from kdq import runfolder, steps
from kdq.backends import modal_cache
from kdq.backends import modal_gateway as vol
from kdq.backends.modal import DEPLOY_META, ModalBackend
from kdq.backends.modal import code_fingerprint as real_fingerprint
from kdq.backends.modal_data import upload_dataset
from kdq.backends.modal_errors import classify
from kdq.backends.modal_gateway import ModalGateway
from kdq.errors import CredentialError, PermanentError, TransientError
from kdq.spec import ExperimentSpec
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
    return ExperimentSpec.model_validate(raw)


# ---------------------------------------------------------------- the Volume


def _open_files_under(folder: Path) -> list[str]:
    """Files under ``folder`` open in this process or any process descending from it (Linux /proc)."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
    family, grew = {os.getpid()}, True
    while grew:
        new = {pid for pid, ppid in parents.items() if ppid in family} - family
        family |= new
        grew = bool(new)
    prefix, found = f"{folder}{os.sep}", []
    for pid in family:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if (target := os.readlink(f"/proc/{pid}/fd/{fd}")).startswith(prefix):
                        found.append(target)
    return found


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.sync")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)  # readers of the committed Volume never see half a file


class Mount:
    """One container's view of the Volume."""

    def __init__(self, volume: FakeVolume, name: str):
        self.volume, self.dir = volume, volume.base / "containers" / name
        shutil.copytree(volume.root, self.dir, dirs_exist_ok=True)
        self.seen = _files(self.dir)

    def _refuse_if_open(self) -> None:
        if self.volume.held_open:
            self.volume.refused += 1
            raise RuntimeError(f"there are open files preventing the operation: {self.volume.held_open}")
        if open_files := _open_files_under(self.dir):
            self.volume.refused += 1
            raise RuntimeError(f"there are open files preventing the operation: {open_files[0]}")

    def commit(self) -> None:
        self._refuse_if_open()
        now = _files(self.dir)
        with self.volume.lock:
            for rel, stat in now.items():
                if self.seen.get(rel) != stat or not (self.volume.root / rel).exists():
                    _copy(self.dir / rel, self.volume.root / rel)
            for rel in set(self.seen) - set(now):
                (self.volume.root / rel).unlink(missing_ok=True)
            self.volume.commits += 1
        self.seen = now
        self.reload()  # Volume.commit reloads afterwards

    def reload(self) -> None:
        """Others' commits become visible; a file this container changed since its last commit or reload
        keeps its own content, and stays to commit (Modal's reload never takes back uncommitted writes)."""
        self._refuse_if_open()
        with self.volume.lock:
            there = _files(self.volume.root)
        mine = _files(self.dir)
        changed = {rel for rel, stat in mine.items() if self.seen.get(rel) != stat}
        for rel, stat in there.items():
            if rel not in changed and (mine.get(rel, (None, None))[0] != stat[0] or mine[rel][1] < stat[1]):
                _copy(self.volume.root / rel, self.dir / rel)
        self.seen = {
            rel: self.seen.get(rel) if rel in changed else stat for rel, stat in _files(self.dir).items()
        }


class Batch:
    def __init__(self, volume: FakeVolume):
        self.volume, self.items = volume, []

    def put_file(self, src, remote: str) -> None:
        self.items.append((src.read() if hasattr(src, "read") else Path(src).read_bytes(), remote))

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.volume.store(self.items)


class FakeVolume:
    """The committed Volume: what ``read_file``, ``listdir`` and ``batch_upload`` see."""

    BLOCK = 1024

    def __init__(self, base: Path):
        self.base, self.root = base, base / "volume"
        self.root.mkdir(parents=True)
        self.lock = threading.Lock()
        self.commits = self.refused = 0
        self.fail_uploads = 0  # fail the next N batches with a ConnectionError
        self.block_faults: list[BaseException] = []  # raised, one per read, after the first block
        self.uploaded: list[str] = []
        self.held_open = ""  # a file the training holds open (a cold teacher pass): commits fail

    def store(self, items) -> None:
        if self.fail_uploads:
            self.fail_uploads -= 1
            raise me.ConnectionError("Deadline exceeded")
        for data, remote in items:
            dest = self.root / remote
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            self.uploaded.append(remote)

    def batch_upload(self, force: bool = False) -> Batch:
        return Batch(self)

    def read_file(self, path: str):
        p = self.root / path
        if not p.is_file():
            raise FileNotFoundError(f"No such file: {path}")
        data = p.read_bytes()
        for i in range(0, max(len(data), 1), self.BLOCK):
            yield data[i : i + self.BLOCK]
            if self.block_faults:
                raise self.block_faults.pop(0)

    def listdir(self, path: str) -> list[FileEntry]:
        p = self.root / path
        if not p.is_dir():
            raise me.NotFoundError(f"No such directory: {path}")
        kind = {True: FileEntryType.DIRECTORY, False: FileEntryType.FILE}
        return [
            FileEntry(str(c.relative_to(self.root)), kind[c.is_dir()], 0, c.stat().st_size)
            for c in sorted(p.iterdir())
        ]


# ---------------------------------------------------------------- calls


class FakeDict:
    """``modal.Dict``: ``put(..., skip_if_exists=True)`` is atomic, first writer wins; seen at once."""

    def __init__(self):
        self.data: dict = {}
        self.lock = threading.Lock()

    def put(self, key, value, *, skip_if_exists: bool = False) -> bool:
        with self.lock:
            if skip_if_exists and key in self.data:
                return False
            self.data[key] = json.loads(json.dumps(value))  # pickled on Modal: a copy
            return True

    def get(self, key, default=None):
        with self.lock:
            return self.data.get(key, default)

    def pop(self, key, default=None):
        with self.lock:
            return self.data.pop(key, default)


@dataclass
class Call:
    id: str
    run_id: str
    dataset: str
    options: dict
    state: str = "running"  # running | finished | failed | cancelled
    result: dict | None = None
    exc: BaseException | None = None
    attempts: int = 0
    cancelled: bool = False
    expired: bool = False
    ended_by_modal: str | None = None  # a RemoteError message (out of memory, eviction)
    thread: threading.Thread | None = None
    mounts: list[Mount] = field(default_factory=list)
    preempting: bool = False
    fake: FakeModal | None = None
    box: Box | None = None  # the container its input runs in now
    loop: asyncio.AbstractEventLoop | None = None  # the input's task runs there
    task: asyncio.Task | None = None

    def get(self, timeout: float | None = None):
        assert timeout == 0
        if self.expired:
            raise me.OutputExpiredError()
        if self.state == "running":
            raise builtins.TimeoutError()
        if self.state == "cancelled":
            raise me.RemoteError("")
        if self.ended_by_modal:
            raise me.RemoteError(self.ended_by_modal)
        if self.exc is not None:
            raise self.exc
        return self.result

    def cancel(self, terminate_containers: bool = False) -> None:
        """An async input is cancelled alone (its task); ``terminate_containers`` ends its container too,
        and Modal reschedules every other input that ran there."""
        self.cancelled = True
        if self.loop is not None and self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        if terminate_containers and self.box is not None:
            for other in [self.fake.calls[i] for i in self.box.inputs if i != self.id]:
                self.fake.preempt(other.id)

    @property
    def object_id(self) -> str:
        return self.id


def _interrupt() -> None:
    raise KeyboardInterrupt  # SIGINT in the container's event loop: every input's task is cancelled


@dataclass
class Box:
    """One container of the class: its mount of the Volume, what its inputs share, which inputs run."""

    id: str
    options: dict
    mount: Mount
    pack: packing.Pack
    inputs: set[str] = field(default_factory=set)
    closed: bool = False  # preempted: Modal starts its inputs again elsewhere


class FakeModal(ModalGateway):
    def __init__(self, base: Path, settings=None, retries: int = 1):  # the app's modal.Retries
        super().__init__(settings)
        self.volume = FakeVolume(base)
        self.root = self.volume.root  # the committed Volume
        self.base, self.retries = base, retries
        self.calls: dict[str, Call] = {}
        self.start_delays: list[float] = []  # per spawn: seconds before the container starts
        self.no_credentials = self.offline = False
        self.deploys = 0
        self.deploying = 0
        self.secrets: dict[str, dict] = {}
        self.started_training: list[str] = []  # call ids that really started `python -m kdq.train`
        self.container_log: list[str] = []
        self.container_output: list[bytes] = []  # what `modal app logs` shows; never this process's stdout
        # The container code's own periodic commit (``run_training``'s heartbeat). Nothing else commits
        # but the code's claim and final commits and the commit at container exit, as on Modal.
        self.heartbeat_s = 0.2
        # The stand-in GPU is this machine's CPU; without one the container asks for CUDA and sees none.
        self.cuda = True
        self.live = FakeDict()  # the app's modal.Dict
        self.closing = threading.Event()  # the test is over (stop_all): no container starts any more
        self.boxes: list[Box] = []  # the containers running now
        self.all_boxes: list[Box] = []  # every container started
        self.pool_lock = threading.Lock()
        self.python: str | None = None  # a stand-in for the training process (stub_trainer)
        self.decodes: dict[str, Call] = {}  # calls of the app's CPU-only decode function
        self.decode_go = threading.Event()  # a decode call starts its work once this is set
        self.decode_go.set()

    def _gate(self) -> None:
        if self.no_credentials:
            raise me.AuthError("Token missing. Could not authenticate client. ... run `modal token new`.")
        if self.offline:
            raise me.ConnectionError("Could not connect to the Modal server.")

    # ---- the three SDK objects of ModalGateway
    def _volume(self):
        self._gate()
        return self.volume

    def _call(self, call_id: str) -> Call:
        self._gate()
        return self.calls.get(call_id) or self.decodes[call_id]

    def _decoder(self, memory_mib: int):
        """The app's CPU-only ``decode`` function: a call runs the real ``jobs.decode`` in a container of
        its own (no GPU, no pack), with its own mount of the Volume."""
        self._gate()
        if not self.deploys:
            raise me.NotFoundError("Lookup failed for Function 'decode' from the 'kdq' app: deploy it first")
        fake = self

        class Function:
            def spawn(self, dataset: str, decode_size: int, limit_per_class: int | None = None):
                opts = {"memory": memory_mib, "decode_size": decode_size, "limit": limit_per_class}
                call = Call(f"fc-d{len(fake.decodes) + 1:03d}", "", dataset, opts, fake=fake)
                fake.decodes[call.id] = call
                call.thread = threading.Thread(target=fake._decode, args=(call,), daemon=True)
                call.thread.start()
                return call

        return Function()

    def _decode(self, call: Call) -> None:
        while not self.decode_go.wait(0.02):
            if call.cancelled or self.closing.is_set():
                call.state = "cancelled"
                return
        mount = Mount(self.volume, call.id)
        call.mounts.append(mount)
        try:
            call.result = decode.decode_dataset(
                mount.dir,
                call.dataset,
                call.options["decode_size"],
                limit_per_class=call.options["limit"],
                commit=mount.commit,
                reload=mount.reload,
                local_dir=self.base / "local" / call.id,
                log=self.container_log.append,
            )
            call.state = "finished"
        except BaseException as exc:  # noqa: BLE001 — what the function raised: get() re-raises it
            call.exc, call.state = exc, "failed"
        finally:
            self._exit_commit(mount)

    def _function(self, options):
        """The class's ``train`` method with the spawn's options (``SpawnOptions``)."""
        self._gate()
        if not self.deploys:
            raise me.NotFoundError("Lookup failed for Cls 'Trainer' from the 'kdq' app: deploy it first")
        fake = self

        class Method:
            def spawn(self, run_id: str, dataset: str, resume_from: str | None = None, **kw):
                opts = {**vars(options), "memory": options.memory_mib, "resume_from": resume_from, **kw}
                return fake._spawn(run_id, dataset, opts)

        return Method()

    def _spawn(self, run_id: str, dataset: str, options: dict):
        call = Call(f"fc-{len(self.calls) + 1:04d}", run_id, dataset, options, fake=self)
        self.calls[call.id] = call
        delay = self.start_delays.pop(0) if self.start_delays else 0.0
        call.thread = threading.Thread(target=self._input, args=(call, delay), daemon=True)
        call.thread.start()
        return call

    def _place(self, call: Call) -> Box | None:
        """A container of the same options with room for one more input, or a new one while the pool
        is under ``max_containers``; otherwise the input waits, as on Modal."""
        opts = {k: call.options.get(k) for k in ("gpu", "memory", "pack", "max_containers")}
        while True:
            with self.pool_lock:
                same = [b for b in self.boxes if b.options == opts and not b.closed]
                box = next((b for b in same if len(b.inputs) < (opts["pack"] or 1)), None)
                if box is None and len(same) < (opts["max_containers"] or 1_000):
                    name = f"ctr-{len(self.all_boxes) + 1}"
                    local = self.base / "local" / name
                    box = Box(name, opts, Mount(self.volume, name), packing.Pack(local, opts["pack"] or 1))
                    self.boxes.append(box)
                    self.all_boxes.append(box)
                if box is not None:
                    box.inputs.add(call.id)
                    call.box = box
                    return box
            if call.cancelled or self.closing.wait(0.02):
                return None  # cancelled, or the test is over, before it found a container

    def _leave(self, box: Box, call: Call) -> None:
        """The input is done there; a container left with no input exits (and Modal commits once more)."""
        with self.pool_lock:
            box.inputs.discard(call.id)
            call.box = call.loop = call.task = None
            empty = not box.inputs
            if empty and box in self.boxes:
                self.boxes.remove(box)
        if empty:
            self._exit_commit(box.mount)

    async def _run_input(self, call: Call, box: Box) -> dict:
        call.loop, call.task = asyncio.get_running_loop(), asyncio.current_task()
        if call.cancelled:
            raise asyncio.CancelledError
        python = {"python": self.python} if self.python else {}
        return await packing.train_input(
            container.run_training,
            root=box.mount.dir,
            run_id=call.run_id,
            dataset=call.dataset,
            call_id=call.id,
            resume_from=call.options.get("resume_from"),
            commit=box.mount.commit,
            reload=box.mount.reload,
            local_dir=self.base / "local" / f"{call.id}-{call.attempts}",
            heartbeat_s=self.heartbeat_s,
            live=self.live,
            device="cpu" if self.cuda else "cuda",
            env=None if self.cuda else {"CUDA_VISIBLE_DEVICES": ""},
            log=lambda msg, c=call: self._log(c, msg),
            echo=self.container_output.append,
            pack=box.pack,
            timeout_s=call.options.get("timeout_s"),
            teacher_cache_only=call.options.get("teacher_cache_only", False),
            **python,
        )

    def _input(self, call: Call, delay: float) -> None:
        if self.closing.wait(delay):  # the test ended before this container started
            call.state = "cancelled"
            return
        failures = 0
        while not call.cancelled:
            if (box := self._place(call)) is None:
                break
            call.attempts += 1
            call.mounts.append(box.mount)
            try:
                call.result = asyncio.run(self._run_input(call, box))
                call.state = "finished"
                break
            except container.RunDied as exc:  # Modal retries the input (the run resumes)
                failures += 1
                if failures > self.retries:
                    call.exc, call.state = exc, "failed"
                    break
            except KeyboardInterrupt:  # preempted: Modal starts the same input again elsewhere
                box.closed, call.preempting = True, False
            except asyncio.CancelledError:
                break
            except BaseException as exc:  # noqa: BLE001 — what the function raised: get() re-raises it
                call.exc, call.state = exc, "failed"
                break
            finally:
                self._leave(box, call)
        if call.cancelled:
            call.state = "cancelled"

    @staticmethod
    def _exit_commit(mount: Mount) -> None:
        """Modal commits a container's Volume once more when it exits, after the function's own code
        (and after its result is out): the one commit the code does not make itself."""
        with contextlib.suppress(RuntimeError):
            mount.commit()

    def stop_all(self, timeout_s: float = 60.0) -> None:
        """At a test's end: cancel every container still running, as Modal stops a cancelled input (its
        training process is stopped), and wait for the threads. A container left running trained on and
        wrote into the next test's captured output (tests/test_runlog.py got its log lines)."""
        self.closing.set()
        alive = [c for c in self.calls.values() if c.thread is not None and c.thread.is_alive()]
        raised: set[str] = set()
        until = time.monotonic() + timeout_s
        for call in alive:
            call.cancelled = True
        while any(c.thread.is_alive() for c in alive) and time.monotonic() < until:
            for call in alive:  # a started input's task is cancelled, once (not again in its clean-up)
                if call.task is not None and call.id not in raised and call.thread.is_alive():
                    call.cancel()
                    raised.add(call.id)
            time.sleep(0.05)
        for call in self.decodes.values():  # a decode ends by itself, or at once when not started
            call.thread.join(max(0.0, until - time.monotonic()))
        assert not [c.id for c in [*alive, *self.decodes.values()] if c.thread.is_alive()], (
            f"containers still running {timeout_s:g} s on"
        )

    def _live(self) -> FakeDict:
        self._gate()
        return self.live

    def preempt(self, call_id: str) -> None:
        call = self.calls[call_id]
        call.preempting = True
        wait_for(lambda: call.loop, every=0.01).call_soon_threadsafe(_interrupt)

    def _log(self, call: Call, msg: str) -> None:
        self.container_log.append(msg)
        if " -m kdq.train " in msg:
            self.started_training.append(call.id)

    # ---- the app and secrets
    def deploy(self, *, show_output: bool = False) -> None:
        self._gate()
        self.deploying += 1
        try:
            if self.deploying > 1:
                raise RuntimeError("two deploys of one App at once (modal resets its load context)")
            time.sleep(0.2)
            self.deploys += 1
        finally:
            self.deploying -= 1

    def put_secret(self, name: str, values: dict[str, str], *, overwrite: bool = True) -> None:
        self._gate()
        if overwrite or name not in self.secrets:
            self.secrets[name] = {**self.secrets.get(name, {}), **values}

    def has_secret(self, name: str, keys: list[str]) -> bool:
        self._gate()
        return name in self.secrets and all(k in self.secrets[name] for k in keys)

    def check(self) -> bool:
        self._gate()
        return True


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(autouse=True)
def steady_code(monkeypatch):
    """Others may edit kdq's sources while the tests run: the deployed code is "v1" unless a test says."""
    monkeypatch.setattr("kdq.backends.modal.code_fingerprint", lambda settings, root=None: "code-v1")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    from kdq.synth import synth

    out = tmp_path_factory.mktemp("synth")
    synth(out, per_class=8, seed=0, size_range=(40, 56), balanced=True)
    return out


@pytest.fixture
def fake(tmp_path: Path, dataset_dir: Path, settings, monkeypatch):
    gw = FakeModal(tmp_path / "modal", settings)
    upload_dataset(gw, dataset_dir, "synth")
    yield gw
    monkeypatch.setattr(container, "STOP_GRACE_S", 2.0)  # no last checkpoint to wait for: the test is over
    gw.stop_all()


@pytest.fixture
def backend(settings, fake) -> ModalBackend:
    return ModalBackend(settings, gateway=fake)


def context(settings, store, fake) -> steps.Context:
    return steps.Context(settings, store, backend_factory=lambda kind, s: ModalBackend(s, gateway=fake))


def wait_for(predicate, timeout: float = 120.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def poll_until_done(backend: ModalBackend, handle: dict):
    # generous: a resumed run trains, exports and scores again, on a machine others load too
    return wait_for(lambda: (s := backend.poll(handle)).state != "running" and s, timeout=300)


def drive(ctx: steps.Context, exp_id: int, until: set[Stage], timeout: float = 120.0):
    def step():
        steps.advance(ctx, exp_id)
        exp = ctx.store.get(exp_id)
        return exp if exp.stage in until else None

    return wait_for(step, timeout, every=0.1)


def owner_with_pid(fake: FakeModal, run_id: str) -> dict:
    path = fake.root / vol.run_path(run_id) / vol.OWNER
    return wait_for(lambda: (o := runfolder.read_json(path)) and o.get("pid") and o, every=0.02)


def frozen_after_checkpoint(fake: FakeModal, run_id: str) -> int:
    """The training process's pid, stopped (SIGSTOP) the moment its first checkpoint is on the Volume:
    a tiny run trains in about a second, and it must not finish before the test kills or preempts it."""
    pid = owner_with_pid(fake, run_id)["pid"]
    wait_for(lambda: (fake.root / vol.run_path(run_id) / runfolder.CHECKPOINT).exists(), every=0.005)
    os.kill(pid, signal.SIGSTOP)
    assert not (fake.root / vol.run_path(run_id) / runfolder.DONE).exists(), "it finished before the test"
    return pid


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
    ctx = context(settings, store, fake)

    fake.offline = True  # the network is down while it waits its turn: it waits, nothing is lost
    steps.advance(ctx, exp_id)
    assert store.get(exp_id).stage is Stage.QUEUED and not fake.decodes
    fake.offline = False
    drive(ctx, exp_id, {Stage.LAUNCHING}, timeout=30)  # its pictures decoded
    fake.offline = True  # and down at launch: the experiment waits, nothing is lost
    steps.advance(ctx, exp_id)
    exp = store.get(exp_id)
    assert exp.stage is Stage.LAUNCHING and not fake.calls
    assert any(e["kind"] == "transient" and "unreachable" in e["message"] for e in store.events(exp_id))

    fake.offline = False
    exp = drive(ctx, exp_id, {Stage.TRAINING})
    assert fake.deploys == 1 and store.get_meta_json(DEPLOY_META)["fingerprint"]
    assert "kdq-hf" in fake.secrets  # the app names the secret: it exists before any token does
    [call] = fake.calls.values()
    assert (call.options["gpu"], call.options["timeout_s"], call.run_id) == ("A100-80GB", 30 * 60, exp.run_id)
    assert exp.handle["call_id"] == call.id

    wait_for(lambda: runfolder.read_json(fake.root / vol.run_path(exp.run_id) / runfolder.PROGRESS))
    fake.offline = True  # lost again while training: polls wait
    steps.advance(ctx, exp_id)
    assert store.get(exp_id).stage is Stage.TRAINING
    fake.offline = False

    exp = drive(ctx, exp_id, {Stage.DONE, Stage.READY, Stage.FAILED})
    assert exp.stage is Stage.DONE, exp.error  # submit.policy = never: ready, then done
    assert exp.progress["epoch"] == 2 and exp.metrics["val_f1"] == exp.val_f1
    # the pictures are on the Volume, not here: the container scored the file as the grader does
    assert not (settings.datasets_dir / spec.data.dataset).exists()
    assert exp.metrics["grader_scored"] == "in the run" and exp.metrics["grader_f1"] is not None
    for name in runfolder.ARTIFACTS:
        assert (Path(exp.artifacts) / name).stat().st_size > 0
    assert fake.started_training == [call.id] and fake.volume.commits >= 3  # claim, periodic, final
    assert fake.deploys == 1  # the code did not change: no second deploy


@pytest.mark.slow
def test_relaunch_after_a_worker_crash_never_trains_twice(settings, store, fake):
    """The worker dies after spawning but before recording the call: the next launch must not train twice."""
    spec = tiny_spec()
    [exp_id] = store.add([(None, spec)])
    ctx = context(settings, store, fake)
    drive(ctx, exp_id, {Stage.LAUNCHING}, timeout=30)  # its pictures decoded
    # The first call starts soon and claims the run; the record of its id is lost (upload fails after
    # spawn) and so is the database's (the worker died); the relaunch spawns again before the claim
    # is visible; its container starts later.
    fake.start_delays = [0.3, 1.5]
    fake.heartbeat_s = 60  # no periodic commit: only the claim commit tells the second call to stand down
    orig_spawn = fake._spawn

    def spawn_then_crash(*a, **kw):
        call = orig_spawn(*a, **kw)
        if len(fake.calls) == 1:
            fake.volume.fail_uploads = 1  # the "spawned" record never reaches the Volume
        return call

    fake._spawn = spawn_then_crash
    steps.advance(ctx, exp_id)
    assert store.get(exp_id).stage is Stage.LAUNCHING and len(fake.calls) == 1
    store.update(exp_id, handle=None)  # the worker died before the database kept the call either
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
    runfolder.write_json(fake.root / "runs/r-2" / vol.LAUNCH, {"state": "spawning"})
    runfolder.write_json(fake.root / "runs/r-2" / vol.OWNER, {"call_id": "fc-0001", "heartbeat": time.time()})
    assert backend.launch("r-2", spec)["call_id"] == "fc-0001" and len(fake.calls) == 1


# ---------------------------------------------------------------- one deploy, one upload (defect 1)


def test_concurrent_launches_deploy_once_and_upload_the_dataset_once(settings, tmp_path, dataset_dir):
    """The worker's threads launch at once on a fresh workspace: one deploy, one dataset upload."""
    shutil.copytree(dataset_dir, settings.datasets_dir / "synth")
    fake = FakeModal(tmp_path / "fresh", settings)
    backends = [ModalBackend(settings, gateway=fake) for _ in range(4)]
    errors: list[BaseException] = []

    def prepare(b: ModalBackend) -> None:
        try:
            b.prepare(tiny_spec())
        except BaseException as exc:  # noqa: BLE001 — collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=prepare, args=(b,)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and fake.deploys == 1
    marks = [p for p in fake.volume.uploaded if p.endswith(vol.DATASET_MARK)]
    assert marks == [f"datasets/synth/{vol.DATASET_MARK}"]


def test_deploys_only_when_the_recorded_fingerprint_differs(settings, store, fake):
    from kdq.backends.modal import ensure_deployed

    assert ensure_deployed(settings, fake) is True
    assert ensure_deployed(settings, fake) is False
    store.set_meta(DEPLOY_META, {**store.get_meta_json(DEPLOY_META), "fingerprint": "older-code"})
    assert ensure_deployed(settings, fake) is True
    assert ensure_deployed(settings, fake, force=True) is True
    assert fake.deploys == 3


def test_the_fingerprint_follows_the_code_that_runs_remotely(settings, tmp_path):
    code_fingerprint = real_fingerprint
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
    # Every file the image carries: jobs/ beyond the app module, and the data kdq reads there.
    for path, text in [("jobs/packing.py", "PACK = 2\n"), ("kdq/data/grader_ops.json", '["aten::add"]')]:
        before = code_fingerprint(settings, tmp_path)
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
        assert code_fingerprint(settings, tmp_path) != before, path


def test_a_deploy_waits_for_one_another_process_holds(settings, tmp_path):
    """`kdq modal deploy` in one process, the worker in another: the second waits, then finds it done."""
    import subprocess
    import sys

    from kdq.backends.modal import ensure_deployed

    settings.root.mkdir(parents=True, exist_ok=True)
    released = tmp_path / "released"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(settings.root / "modal-prepare.lock"), str(released)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    fake = FakeModal(tmp_path / "m", settings)
    orig = fake.deploy
    fake.deploy = lambda **kw: (
        released.exists() or pytest.fail("deployed while another held the lock"),
        orig(**kw),
    )
    assert ensure_deployed(settings, fake) is True
    holder.wait()
    assert fake.deploys == 1


HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from filelock import FileLock
with FileLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(1.0)
    Path(sys.argv[2]).touch()
"""


# ---------------------------------------------------------------- the deploy reads the app from disk (5)


def test_deploy_runs_the_app_as_it_is_on_disk_not_as_this_process_imported_it(settings, monkeypatch, capsys):
    """The worker imported jobs.modal_app hours ago; the file changed since. The deploy must not push the
    stale module: it runs `python -m modal deploy` afresh (here it stops at the missing credentials)."""
    import sys
    import types

    import modal.config

    if modal.config.config.get("token_id"):
        pytest.skip("this machine has Modal credentials")

    class StaleApp:
        def deploy(self, **kw):
            raise AssertionError("deployed the module this process imported, not the file on disk")

    stale = types.ModuleType("jobs.modal_app")
    stale.app = StaleApp()
    monkeypatch.setitem(sys.modules, "jobs.modal_app", stale)
    with pytest.raises(me.AuthError, match="modal token new"):
        ModalGateway(settings).deploy(show_output=True)
    assert "modal token new" in capsys.readouterr().out  # `kdq modal deploy` shows Modal's own output
    mapped = classify(me.AuthError("Token missing ... `modal token new`"), live_run=False)
    assert isinstance(mapped, CredentialError) and mapped.key == "modal"  # the queue pauses (kdq/pause.py)


# ---------------------------------------------------------------- the Volume is committable (2)


def test_progress_and_the_log_reach_the_volume_while_the_run_trains(backend, fake):
    """Commits succeed while training: nothing of the Volume is held open across one."""
    handle = backend.launch("vis-1", tiny_spec(train={"epochs": 200}))
    run = fake.root / vol.run_path("vis-1")
    wait_for(lambda: runfolder.read_json(run / runfolder.PROGRESS), timeout=60)
    assert backend.poll(handle).state == "running"
    wait_for(
        lambda: (run / runfolder.LOG).is_file() and (run / runfolder.LOG).read_text().strip(), timeout=30
    )
    # A commit that meets a file mid-write is refused and retried next beat; a file held open is not.
    assert fake.volume.refused < fake.volume.commits, fake.container_log[-3:]
    assert not (run / "train.lock").exists()  # the training lock is on the container's own disk
    [cmd] = [m for m in fake.container_log if " -m kdq.train " in m]
    assert f"--data {fake.base}/local/" in cmd  # the pictures were unpacked onto the container's disk
    backend.cancel(handle)
    wait_for(lambda: fake.calls[handle["call_id"]].state != "running")


def test_progress_reaches_the_worker_while_every_commit_fails(backend, fake):
    """A cold run holds Volume files open for minutes, and every commit fails meanwhile: the heartbeat
    and the progress still reach the worker, through the app's modal.Dict."""
    handle = backend.launch("dict-1", tiny_spec(train={"epochs": 200}))
    owner_with_pid(fake, "dict-1")  # claimed (committed)
    fake.volume.held_open = "/vol/datasets/synth/img_00001.jpg"
    try:
        seen = (runfolder.read_json(fake.root / "runs/dict-1" / runfolder.PROGRESS) or {}).get("epoch", 0)
        status = wait_for(lambda: (s := backend.poll(handle)).progress.get("epoch", 0) >= seen + 2 and s, 60)
        assert status.state == "running"
        on_volume = runfolder.read_json(fake.root / "runs/dict-1" / runfolder.PROGRESS) or {}
        assert on_volume.get("epoch", 0) == seen  # the Volume lags: no commit got through
    finally:
        fake.volume.held_open = ""
        backend.cancel(handle)
        wait_for(lambda: fake.calls[handle["call_id"]].state != "running")


def teacher_spec(**sections) -> ExperimentSpec:
    return tiny_spec(
        **{"teacher": {"kind": "siglip", "model": "tiny"}, "distill": {"loss": "hinton"}, **sections}
    )


WRITE_THE_TEACHER_CACHE = """
cache = pathlib.Path(sys.argv[sys.argv.index('--cache') + 1]) / 'teacher'
cache.mkdir(parents=True, exist_ok=True)
(here / 'started').touch()
while not (here / 'blocked').exists():
    time.sleep(0.01)
with open(cache / '.t.pt.tmp', 'wb') as f:  # as torch.save into runfolder.atomic_path: seconds, open
    f.write(b'embeddings' * 1000)
    (here / 'writing').touch()
    while not (here / 'written').exists():
        time.sleep(0.01)
(cache / '.t.pt.tmp').rename(cache / 't.pt')
(run / 'progress.json').write_text(json.dumps({'phase': 'train', 'epoch': 1}))
(here / 'wrote').touch()
while not (here / 'go').exists():
    time.sleep(0.01)
(run / 'done.json').write_text(json.dumps({'best_f1': 0.5}))
"""


def _training(fake: FakeModal, tmp_path: Path, run_id: str, spec: ExperimentSpec, body: str):
    """``run_training`` of ``runs/<run_id>`` with a stand-in training running ``body``, in its own thread
    and its own mount of the Volume; returns both."""
    runfolder.write_json(fake.root / "runs" / run_id / runfolder.SPEC, spec.model_dump(mode="json"))
    mount = Mount(fake.volume, run_id)
    thread = threading.Thread(
        target=container.run_training,
        args=(mount.dir, run_id, "synth"),
        kwargs=dict(
            call_id="fc-1", commit=mount.commit, reload=mount.reload, local_dir=tmp_path / "local",
            heartbeat_s=0.1, python=stub_trainer(tmp_path, body), log=lambda m: None, live=fake.live,
        ),
        daemon=True,
    )  # fmt: skip
    thread.start()
    return mount, thread


def test_a_neighbours_commit_is_not_refused_while_a_training_writes_its_teacher_cache(fake, tmp_path):
    """Packed runs share one mount. The training writes its caches on the container's own disk; the
    container copies them to the Volume whole, under its lock, so a neighbour's commit never meets the
    cache half written and open; the commit after the copy carries it."""
    mount, thread = _training(fake, tmp_path, "tb-1", teacher_spec(), WRITE_THE_TEACHER_CACHE)
    try:
        wait_for(lambda: (tmp_path / "started").exists(), timeout=30)
        (tmp_path / "blocked").touch()
        wait_for(lambda: (tmp_path / "writing").exists(), timeout=30)
        mount.commit()  # a neighbour's, while the cache is open for writing
        (tmp_path / "written").touch()
        wait_for(lambda: (fake.root / "cache/teacher/t.pt").exists(), timeout=30)
    finally:
        for name in ("blocked", "written", "go"):
            (tmp_path / name).touch()
        thread.join(30)
    assert (fake.root / "cache/teacher/t.pt").read_bytes() == b"embeddings" * 1000
    assert not [p.name for p in (fake.root / "cache/teacher").iterdir() if p.name.startswith(".")]


WRITE_THE_RUN_FOLDER = """
with open(run / 'model.pt', 'wb') as f:  # as the export writes the file the grader scores
    f.write(b'weights')
    (here / 'writing').touch()
    while not (here / 'written').exists():
        time.sleep(0.01)
(run / 'done.json').write_text(json.dumps({'best_f1': 0.5}))
"""


def test_a_neighbours_commit_is_not_refused_while_a_training_writes_its_run_folder(fake, tmp_path):
    """The training's run folder is on the container's disk; the container mirrors it onto the Volume
    (whole files, under its lock) before each commit, so a packed neighbour's commit never meets one
    of its files open, and the commit after carries them."""
    mount, thread = _training(fake, tmp_path, "rf-1", tiny_spec(), WRITE_THE_RUN_FOLDER)
    try:
        wait_for(lambda: (tmp_path / "writing").exists(), timeout=30)
        mount.commit()  # a neighbour's, while the training holds model.pt open
    finally:
        (tmp_path / "written").touch()
        thread.join(30)
    assert (fake.root / "runs/rf-1" / runfolder.MODEL).read_bytes() == b"weights"
    assert (fake.root / "runs/rf-1" / runfolder.DONE).exists()


def test_a_commit_with_a_file_open_on_the_volume_is_refused(tmp_path):
    """The stand-in itself: an open file under the mount makes commit and reload fail, like Modal."""
    volume = FakeVolume(tmp_path)
    mount = Mount(volume, "c-1")
    (mount.dir / "runs").mkdir()
    with open(mount.dir / "runs" / "log.txt", "w"):
        with pytest.raises(RuntimeError, match="open files"):
            mount.commit()
        with pytest.raises(RuntimeError, match="open files"):
            mount.reload()
    assert not (volume.root / "runs" / "log.txt").exists()  # not committed: not visible outside
    mount.commit()
    assert (volume.root / "runs" / "log.txt").exists()


def test_a_reload_keeps_what_this_container_wrote_since_its_last_commit(tmp_path):
    """The stand-in itself: a reload makes others' commits visible and never takes back this container's
    own uncommitted writes ("uncommitted changes ... may implicitly be committed when reloading", modal
    1.6.4's ``Volume.reload``). The stand-in's reload once copied the committed file over a history.csv
    the training had appended to between a commit's copy and its reload: the last epoch's row was lost."""
    volume = FakeVolume(tmp_path)
    mine, theirs = Mount(volume, "c-1"), Mount(volume, "c-2")
    history = mine.dir / "runs" / "history.csv"
    history.parent.mkdir()
    history.write_text("epoch,val_f1\n1,0.5\n")
    mine.commit()
    with open(history, "a") as f:  # the training appends its next row, after the commit, before any reload
        f.write("2,0.6\n")
    (theirs.dir / "other.txt").write_text("committed elsewhere")
    theirs.commit()
    mine.reload()
    assert history.read_text() == "epoch,val_f1\n1,0.5\n2,0.6\n"  # kept
    assert (mine.dir / "other.txt").read_text() == "committed elsewhere"  # and others' commit is seen
    mine.commit()
    assert (volume.root / "runs" / "history.csv").read_text().endswith("2,0.6\n")


WAIT_FOR_GO = """
(here / 'started').touch()
while not (here / 'go').exists():
    time.sleep(0.01)
(run / 'done.json').write_text(json.dumps({'best_f1': 0.5}))
"""


def stub_trainer(folder: Path, body: str = WAIT_FOR_GO) -> str:
    """An executable that stands in for ``python`` in ``run_training``'s command (``-m kdq.train RUN_DIR
    ...``) and runs ``body`` with ``here`` (``folder``) and ``run`` (the run folder). The default says it
    started, waits for ``go`` in ``folder``, then ends the run with done.json. No torch: a fast test of
    what the container does, and when."""
    script = folder / "python"
    head = "import json, pathlib, sys, time\nrun = pathlib.Path(sys.argv[3])\n"
    script.write_text(f"#!{sys.executable}\n{head}here = pathlib.Path({str(folder)!r})\n{body}")
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def one_container(fake, tmp_path):
    """``run_training`` of run ``cm-1`` on a thread, on its own mount, with a heartbeat that never comes:
    the code's claim and final commits are the only ones (no commit at container exit either)."""
    runfolder.write_json(fake.root / "runs/cm-1" / runfolder.SPEC, tiny_spec().model_dump(mode="json"))
    mount = Mount(fake.volume, "cm")
    folder = tmp_path / "stub"
    folder.mkdir()
    out: dict = {}

    def run() -> None:
        out["result"] = container.run_training(
            mount.dir, "cm-1", "synth", call_id="fc-1", commit=mount.commit, reload=mount.reload,
            local_dir=tmp_path / "local", heartbeat_s=3600, python=stub_trainer(folder), log=lambda m: None,
        )  # fmt: skip

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield folder, thread, out
    (folder / "go").touch()
    thread.join(30)


def test_the_run_is_claimed_on_the_volume_before_its_training_starts(fake, one_container):
    """Another container (a spawn retried after a lost reply) stands down only if it sees the claim."""
    folder, _, _ = one_container
    wait_for(lambda: (folder / "started").exists(), timeout=30)
    owner = runfolder.read_json(fake.root / "runs/cm-1" / vol.OWNER)  # the committed Volume
    assert owner and owner["call_id"] == "fc-1", "the claim was not committed before the training started"


def test_a_second_call_for_one_run_stands_down_before_any_commit_is_visible(fake, tmp_path):
    """A spawn whose reply was lost is spawned again: both containers start before either commit is
    visible (no Volume file can tell them apart); the lease lets one train."""
    runfolder.write_json(fake.root / "runs/ls-1" / runfolder.SPEC, tiny_spec().model_dump(mode="json"))
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()

    def call(call_id: str, folder: Path) -> dict:
        mount = Mount(fake.volume, call_id)
        return container.run_training(
            mount.dir, "ls-1", "synth", call_id=call_id, commit=lambda: None, reload=lambda: None,
            local_dir=folder / "local", heartbeat_s=3600, python=stub_trainer(folder), log=lambda m: None,
            live=fake.live,
        )  # fmt: skip

    thread = threading.Thread(target=call, args=("fc-1", first), daemon=True)
    thread.start()
    wait_for(lambda: (first / "started").exists(), timeout=30)
    (second / "go").touch()  # were it to train, it would finish at once
    result = call("fc-2", second)
    (first / "go").touch()
    thread.join(30)
    assert (result["outcome"], result["owner"]) == ("duplicate", "fc-1")
    assert not (second / "started").exists()  # the second call never trained


def test_the_run_folder_is_committed_before_the_call_returns(fake, one_container):
    """The worker reads the verdict from the Volume as soon as the call ends: done.json must be there."""
    folder, thread, out = one_container
    wait_for(lambda: (folder / "started").exists(), timeout=30)
    (folder / "go").touch()
    thread.join(30)
    assert out["result"]["outcome"] == "done"
    assert (fake.root / "runs/cm-1" / runfolder.DONE).exists(), "done.json is not on the committed Volume"
    assert runfolder.read_json(fake.root / "runs/cm-1" / vol.OWNER)["attempts"][-1][1] is not None


def test_the_last_commit_waits_out_a_neighbours_open_file(fake, tmp_path):
    """Packed runs share one mount: while a neighbour writes its teacher cache or downloads the teacher
    there, a commit is refused. The run's last commit tries again for a while instead of failing an
    input whose training finished (Modal would retry it, and nothing of its result was visible)."""
    runfolder.write_json(fake.root / "runs/lc-1" / runfolder.SPEC, tiny_spec().model_dump(mode="json"))
    mount, refused = Mount(fake.volume, "lc"), []

    def commit() -> None:  # the neighbour's file is open while this run ends
        if (mount.dir / "runs/lc-1" / runfolder.DONE).exists() and len(refused) < 2:
            refused.append(1)
            raise RuntimeError("there are open files preventing the operation: /vol/cache/teacher.pt.tmp")
        mount.commit()

    body = "(run / 'done.json').write_text(json.dumps({'best_f1': 0.5}))\n"
    result = container.run_training(
        mount.dir, "lc-1", "synth", call_id="fc-1", commit=commit, reload=mount.reload,
        local_dir=tmp_path / "local", heartbeat_s=3600, python=stub_trainer(tmp_path, body),
        log=lambda m: None, commit_retry_s=0.01,
    )  # fmt: skip
    assert result["outcome"] == "done" and len(refused) == 2
    assert (fake.root / "runs/lc-1" / runfolder.DONE).exists(), "done.json is not on the committed Volume"


HANG_IN_THE_TEACHER_PASS = """
(run / 'progress.json').write_text(json.dumps({'phase': 'teacher', 'epoch': 0, 'epochs': 30}))
print('loading the teacher', flush=True)
time.sleep(3600)
"""


def test_a_training_that_hangs_is_stopped_with_the_phase_it_hung_in(fake, tmp_path):
    """No progress and no output for the watchdog's window: the child is stopped and the run fails with
    the phase, instead of billing the GPU until the timeout (and again on each retry)."""
    runfolder.write_json(fake.root / "runs/st-1" / runfolder.SPEC, tiny_spec().model_dump(mode="json"))
    mount, echoed = Mount(fake.volume, "st"), []
    result = container.run_training(
        mount.dir, "st-1", "synth", call_id="fc-1", commit=mount.commit, reload=mount.reload,
        local_dir=tmp_path / "local", heartbeat_s=0.1, stall_s=1.0,
        python=stub_trainer(tmp_path, HANG_IN_THE_TEACHER_PASS), log=lambda m: None, echo=echoed.append,
    )  # fmt: skip
    assert result["outcome"] == "error" and result["exit_code"] is not None  # the child was stopped
    assert result["error"].startswith("stalled in phase 'teacher' (epoch 0/30): no progress and no log")
    assert runfolder.error_message(fake.root / "runs/st-1").startswith("stalled in phase 'teacher'")
    assert b"loading the teacher" in b"".join(echoed)  # the child's output reaches the container's log
    assert "loading the teacher" in (fake.root / "runs/st-1" / runfolder.LOG).read_text()


def test_a_container_without_cuda_fails_the_run_at_once_naming_the_driver_and_is_not_retried(backend, fake):
    """A torch build the driver cannot run, or no GPU attached: the run fails in seconds with what
    to fix, instead of training on the container's CPU for hours while the GPU bills (and again on
    each retry)."""
    fake.cuda = False
    handle = backend.launch("gpu-1", tiny_spec(train={"device": "auto"}))
    status = poll_until_done(backend, handle)
    assert status.state == "failed", status
    first = status.error.splitlines()[0]
    assert first.startswith("CudaUnusable: CUDA is not usable here, so nothing was trained"), first
    assert "NVIDIA driver" in first and "torch 2." in first and "KDQ_MODAL_TORCH" in first
    call = fake.calls[handle["call_id"]]
    assert call.attempts == 1 and fake.started_training == [call.id]  # a verdict: Modal does not retry it
    assert not (fake.root / "runs/gpu-1" / runfolder.CHECKPOINT).exists()  # not one epoch on the CPU
    progress = runfolder.read_json(fake.root / "runs/gpu-1" / runfolder.PROGRESS)
    assert progress["gpu"]["cuda_usable"] is False and progress["gpu"]["torch"].startswith("2.")


# ---------------------------------------------------------------- how a call ended (3)


def test_a_call_cancelled_on_modal_fails_with_what_the_run_folder_says(settings, store, fake):
    """A cancellation from Modal's dashboard: get() raises RemoteError('') — an outcome, not an error."""
    [exp_id] = store.add([(None, tiny_spec(train={"epochs": 200}))])
    ctx = context(settings, store, fake)
    exp = drive(ctx, exp_id, {Stage.TRAINING})
    owner_with_pid(fake, exp.run_id)
    fake.calls[exp.handle["call_id"]].cancel(terminate_containers=True)  # the dashboard, not kdq
    exp = drive(ctx, exp_id, {Stage.FAILED, Stage.CANCELLED, Stage.DONE})
    assert exp.stage is Stage.FAILED
    assert "cancelled" in exp.error and "RemoteError" not in exp.error, exp.error
    assert "Last lines of the log" in exp.error


@pytest.mark.parametrize(
    "raised, needle",
    [
        (me.RemoteError("Container was terminated: out of memory (OOMKilled)"), "out of memory"),
        (me.ExecutionError("Could not deserialize remote exception due to local error:\n..."), "deserialize"),
    ],
)
def test_an_out_of_memory_kill_or_an_unreadable_exception_shows_the_run_folder(backend, fake, raised, needle):
    _finished_run(fake.root, "oom-1", None)
    fake.calls["fc-9"] = call = Call("fc-9", "oom-1", "synth", {}, state="failed")
    call.exc = raised
    status = backend.poll({"run_id": "oom-1", "call_id": "fc-9"})
    assert status.state == "failed" and needle in status.error and "last line" in status.error


# ---------------------------------------------------------------- Volume block downloads (4)


@pytest.mark.parametrize(
    "fault",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
    ],
)
def test_a_block_download_that_fails_halfway_makes_the_step_wait(settings, store, fake, tmp_path, fault):
    [exp_id] = store.add([(None, tiny_spec())])
    ctx = context(settings, store, fake)
    _finished_run(fake.root, "dl-1", "done")
    run = fake.root / "runs/dl-1"
    (run / runfolder.MODEL).write_bytes(os.urandom(5000))  # several blocks
    runfolder.write_json(run / runfolder.METRICS, {"val_f1": 0.5})
    (run / runfolder.HISTORY).write_text("epoch,val_f1\n0,0.5\n")
    handle = {"run_id": "dl-1", "call_id": "fc-9"}
    store.update(exp_id, run_id="dl-1", handle=handle, stage=str(Stage.FETCHING))
    fake.volume.block_faults = [fault]
    steps.advance(ctx, exp_id)
    exp = store.get(exp_id)
    assert exp.stage is Stage.FETCHING, exp.error  # waits; the paid run is not abandoned
    assert "trying again" in [e for e in store.events(exp_id) if e["kind"] == "transient"][-1]["message"]
    assert not [p for p in settings.artifacts_dir.rglob("*") if p.is_file()]  # no half a model left
    steps.advance(ctx, exp_id)  # the next look downloads it whole
    exp = store.get(exp_id)
    assert exp.stage in (Stage.VALIDATING, Stage.FAILED) and exp.artifacts  # random bytes fail the verify
    assert (Path(exp.artifacts) / runfolder.MODEL).stat().st_size == 5000


# ---------------------------------------------------------------- cancel a call during launching (6)


def test_cancel_during_launching_reaches_a_call_whose_record_failed(settings, store, fake):
    """Spawned, then the Volume record fails: the call id is in the database already, and cancel uses it."""
    [exp_id] = store.add([(None, tiny_spec(train={"epochs": 200}))])
    ctx = context(settings, store, fake)
    fake.start_delays = [3600]
    drive(ctx, exp_id, {Stage.LAUNCHING}, timeout=30)  # once its pictures are decoded
    orig_spawn = fake._spawn

    def spawn_then_lose_the_network(*a, **kw):
        call = orig_spawn(*a, **kw)
        fake.volume.fail_uploads = 1
        return call

    fake._spawn = spawn_then_lose_the_network
    steps.advance(ctx, exp_id)
    exp = store.get(exp_id)
    assert exp.stage is Stage.LAUNCHING and len(fake.calls) == 1
    assert exp.handle and exp.handle["call_id"] == "fc-0001"
    store.request_cancel(exp_id)
    steps.advance(ctx, exp_id)
    assert store.get(exp_id).stage is Stage.CANCELLED and fake.calls["fc-0001"].cancelled


def test_cancel_finds_the_calls_from_the_run_id_alone(backend, fake):
    (fake.root / "runs/k-1").mkdir(parents=True)
    runfolder.write_json(fake.root / "runs/k-1" / vol.LAUNCH, {"state": "spawned", "call_id": "fc-7"})
    fake.calls["fc-7"] = Call("fc-7", "k-1", "synth", {})
    backend.cancel({"run_id": "k-1"})
    assert fake.calls["fc-7"].cancelled


# ---------------------------------------------------------------- the cost bound (7)


def test_a_run_past_max_gpu_min_is_cancelled_with_the_bound_in_its_error(settings, store, fake):
    spec = tiny_spec(train={"epochs": 500}, backend={"max_gpu_min": 0.03})  # 1.8 s
    [exp_id] = store.add([(None, spec)])
    ctx = context(settings, store, fake)
    exp = drive(ctx, exp_id, {Stage.TRAINING})
    call = fake.calls[exp.handle["call_id"]]
    assert call.options["timeout_s"] == 1  # no single attempt may outlast the bound either
    exp = drive(ctx, exp_id, {Stage.FAILED, Stage.DONE})
    assert exp.stage is Stage.FAILED and "backend.max_gpu_min = 0.03" in exp.error, exp.error
    assert "timeout_min" in exp.error and call.cancelled


def test_gpu_minutes_add_up_every_attempt():
    from kdq.backends.modal_sizing import gpu_minutes

    assert gpu_minutes([[0, 60], [100, 160], [200, None]], now=230) == pytest.approx(2.5)
    assert container._attempts(None, "fc-1", 10.0) == [[10.0, None]]
    cut = {"call_id": "fc-1", "heartbeat": 50.0, "attempts": [[0.0, None]]}  # preempted at ~50 s
    assert container._attempts(cut, "fc-1", 80.0) == [[0.0, 50.0], [80.0, None]]
    assert container._attempts(cut, "fc-2", 80.0) == [[80.0, None]]  # another call's attempts are not ours


def test_memory_is_sized_from_the_dataset():
    from kdq.backends.modal_sizing import memory_mib

    # 20,000 images: decode at 256 (3.9 GB) + teacher at 448 (12 GB), x 1.5, + 4 GiB = 26.6 GiB
    assert memory_mib(20_000, 256, 448) == 32 * 1024
    assert memory_mib(20_000, 256, None) == memory_mib(0, 256, 448) == 16 * 1024  # 9.6 GiB; 4 GiB
    assert memory_mib(10_000, 256, 448) == memory_mib(9_000, 224, 448)  # near specs share one pool
    assert memory_mib(200_000, 256, 448) > 128 * 1024  # past the buckets: what it needs
    # packed: each training process decodes its own copy (the course's 10,000 pictures at 224: 15 GiB)
    assert memory_mib(10_000, 224, 448, pack=4) == 64 * 1024 and memory_mib(10_000, 224, 448) == 16 * 1024


def test_the_spawn_asks_for_the_memory_its_dataset_needs(backend, fake):
    from kdq.backends.modal_sizing import memory_mib

    fake.start_delays = [3600]
    files = json.loads((fake.root / "datasets/synth" / vol.DATASET_MARK).read_text())["files"]
    handle = backend.launch("m-1", tiny_spec())
    assert fake.calls[handle["call_id"]].options["memory"] == memory_mib(files, 40, None, pack=4)


def test_a_retry_that_resumes_names_the_earlier_run_to_the_training(backend, fake, tmp_path):
    """`kdq retry` of a run that got far: the new attempt starts from the old run's checkpoint."""
    fake.start_delays = [3600]
    handle = backend.launch("again-a2", tiny_spec(), resume_from="again-a1")
    assert fake.calls[handle["call_id"]].options["resume_from"] == "again-a1"
    mount = tmp_path / "mount"
    shutil.copytree(fake.root, mount)
    with pytest.raises(container.RunDied):  # `echo` stands in for python: it trains nothing
        container.run_training(
            mount, "again-a2", "synth", call_id="fc-1", resume_from="again-a1", python="echo", heartbeat_s=0.1
        )
    logged = (mount / "runs/again-a2" / runfolder.LOG).read_text()
    assert f"--resume-from {mount}/runs/again-a1" in logged


# ---------------------------------------------------------------- a workspace limit (9)


def test_a_workspace_limit_says_what_it_is_and_fails_the_launch_after_a_while(settings, fake, monkeypatch):
    """The worker builds a new backend for every step: the refusals are counted across them."""
    import types

    import kdq.backends.modal as modal_backend

    def refused(options):
        raise me.ResourceExhaustedError("Workspace GPU limit reached")

    fake._function = refused
    with pytest.raises(TransientError, match="workspace limit"):
        ModalBackend(settings, gateway=fake).launch("q-1", tiny_spec())
    later = time.time() + modal_backend.QUOTA_PATIENCE_S + 60
    monkeypatch.setattr(modal_backend, "time", types.SimpleNamespace(time=lambda: later))
    with pytest.raises(PermanentError, match="kept refusing for 31 min.*kdq retry"):
        ModalBackend(settings, gateway=fake).launch("q-1", tiny_spec())


def test_the_doctor_check_creates_no_volume(settings, monkeypatch):
    import modal

    asked = []

    class Missing:
        def hydrate(self):
            raise me.NotFoundError("Volume 'kdq' not found")

    monkeypatch.setattr(
        modal.Volume, "from_name", staticmethod(lambda *a, **kw: asked.append(kw) or Missing())
    )
    assert ModalGateway(settings).check() is False
    assert not any(kw.get("create_if_missing") for kw in asked)


# ---------------------------------------------------------------- preemption, failure, expiry


@pytest.mark.slow
def test_a_training_process_that_dies_is_retried_and_resumes_from_its_checkpoint(backend, fake, tmp_path):
    handle = backend.launch("pre-1", tiny_spec(train={"epochs": 8, "checkpoint_every_s": 0}))
    run_dir = fake.root / "runs/pre-1"
    os.kill(frozen_after_checkpoint(fake, "pre-1"), signal.SIGKILL)  # the process dies mid-training
    status = poll_until_done(backend, handle)
    assert status.state == "succeeded", status.error
    call = fake.calls[handle["call_id"]]
    assert call.attempts == 2 and fake.started_training == [call.id, call.id]
    log = (run_dir / runfolder.LOG).read_text()
    assert "resumed from" in log and "after epoch" in log  # not from epoch 0
    with open(run_dir / runfolder.HISTORY) as f:
        epochs = [int(row.split(",")[0]) for row in f.read().splitlines()[1:]]
    assert epochs == list(range(1, 9))  # every epoch once: the resumed run continued, it did not restart
    backend.fetch(handle, tmp_path / "art")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == sorted(runfolder.ARTIFACTS)


@pytest.mark.slow
def test_a_preempted_container_stops_its_child_and_the_same_input_resumes(backend, fake):
    """Preemption: SIGINT in the container (KeyboardInterrupt), then Modal restarts the same input."""
    handle = backend.launch("pre-2", tiny_spec(train={"epochs": 8, "checkpoint_every_s": 0}))
    run_dir = fake.root / "runs/pre-2"
    first_pid = frozen_after_checkpoint(fake, "pre-2")  # stopped: only the container can end it now
    fake.preempt(handle["call_id"])
    status = poll_until_done(backend, handle)
    assert status.state == "succeeded", status.error
    call = fake.calls[handle["call_id"]]
    assert call.attempts == 2 and not Path(f"/proc/{first_pid}").exists()  # the first child was stopped
    assert "resumed from" in (run_dir / runfolder.LOG).read_text()
    attempts = runfolder.read_json(run_dir / vol.OWNER)["attempts"]
    assert len(attempts) == 2 and all(end is not None for _, end in attempts)


@pytest.mark.slow
def test_a_preempted_training_checkpoints_at_its_next_step_and_the_same_input_resumes_from_that_step(
    backend, fake
):
    """No checkpoint is due (every 5 min) when the preemption comes: the container's SIGTERM makes the
    training save the step it is at, on the container's disk; the copy on the Volume is what the
    restarted input resumes from, mid-epoch."""
    handle = backend.launch("pre-3", tiny_spec(train={"epochs": 30, "batch_size": 4}))
    run_dir = fake.root / "runs/pre-3"
    progress = run_dir / runfolder.PROGRESS
    wait_for(lambda: (runfolder.read_json(progress) or {}).get("epoch", 0) >= 1, every=0.01)
    fake.preempt(handle["call_id"])
    status = poll_until_done(backend, handle)
    assert status.state == "succeeded", status.error
    assert fake.calls[handle["call_id"]].attempts == 2
    log = (run_dir / runfolder.LOG).read_text()
    stopped = re.search(r"stopped by SIGTERM at step (\d+) of epoch (\d+)", log)
    assert stopped, log[-3000:]
    assert f"step {stopped[1]} of epoch {stopped[2]}" in log.split(stopped[0])[1]  # resumed from it
    with open(run_dir / runfolder.HISTORY) as f:
        epochs = [int(row.split(",")[0]) for row in f.read().splitlines()[1:]]
    assert epochs == list(range(1, 31))  # every epoch once


def test_cancel_stops_the_training_process(backend, fake):
    handle = backend.launch("c-1", tiny_spec(train={"epochs": 200}))
    pid = owner_with_pid(fake, "c-1")["pid"]
    backend.cancel(handle)
    status = poll_until_done(backend, handle)
    assert (
        status.state == "failed" and "cancelled" in status.error and fake.calls[handle["call_id"]].cancelled
    )
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text())


def test_a_failing_run_fails_with_its_error(settings, store, fake, tmp_path):
    error = "DataError: the pictures ended halfway"
    body = f"(run / 'error.json').write_text(json.dumps({{'error': {error!r}}}))"
    fake.python = stub_trainer(tmp_path, body)
    [exp_id] = store.add([(None, tiny_spec())])
    exp = drive(context(settings, store, fake), exp_id, {Stage.FAILED, Stage.DONE})
    assert exp.stage is Stage.FAILED and error in exp.error, exp.error
    assert len(fake.calls) == 1 and next(iter(fake.calls.values())).attempts == 1  # a verdict is not retried


def _finished_run(root: Path, run_id: str, outcome: str | None) -> None:
    run_dir = root / vol.run_path(run_id)
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
    fake.calls["fc-9"] = Call("fc-9", "old-1", "synth", {}, expired=True)
    status = backend.poll({"run_id": "old-1", "call_id": "fc-9"})
    assert status.state == state and status.progress["epoch"] == 4
    if needle:
        assert needle in status.error and "last line" in status.error


def test_fetch_checks_every_artifact(backend, fake, tmp_path):
    _finished_run(fake.root, "f-1", "done")
    (fake.root / "runs/f-1" / runfolder.MODEL).write_bytes(b"x" * 100)
    with pytest.raises(PermanentError, match="metrics.json"):
        backend.fetch({"run_id": "f-1", "call_id": "fc-1"}, tmp_path / "dest")


def test_done_reported_but_not_yet_visible_waits(backend, fake):
    fake.calls["fc-7"] = Call(
        "fc-7", "v-1", "synth", {}, state="finished", result={"outcome": "done", "run_id": "v-1"}
    )
    with pytest.raises(TransientError, match="not visible"):
        backend.poll({"run_id": "v-1", "call_id": "fc-7"})


# ---------------------------------------------------------------- credentials and errors


def test_missing_credentials_pause_the_launch_with_what_to_run_then_it_proceeds(
    settings, store, fake, monkeypatch
):
    from kdq import pause

    [exp_id] = store.add([(None, tiny_spec())])
    ctx = context(settings, store, fake)
    fake.no_credentials = True
    for _ in range(3):
        steps.advance(ctx, exp_id)
    assert store.get(exp_id).stage is Stage.QUEUED and not fake.calls  # waiting in line (no slot), not failed
    assert "modal token new" in pause.active(store)["modal"]["message"]
    fake.no_credentials = False  # the user logged in: the next look launches, no `kdq retry` needed
    monkeypatch.setattr(steps, "PAUSED_RECHECK_S", 0.0)  # that look is a minute later
    fake.start_delays = [3600]
    exp = drive(ctx, exp_id, {Stage.TRAINING})
    assert pause.active(store) == {}
    assert len(fake.calls) == 1 and exp.handle["call_id"] == "fc-0001"
    fake.no_credentials = True  # credentials gone while a run lives: wait, never abandon the run
    steps.advance(ctx, exp_id)
    assert store.get(exp_id).stage is Stage.TRAINING
    assert "modal token new" in [e for e in store.events(exp_id) if e["kind"] == "transient"][-1]["message"]


def test_a_dataset_neither_uploaded_nor_local_says_how_to_upload(settings, tmp_path):
    gw = FakeModal(tmp_path / "empty", settings)
    with pytest.raises(PermanentError, match=r"kdq data upload PATH --name synth"):
        ModalBackend(settings, gateway=gw).launch("r-1", tiny_spec())
    assert not gw.calls


def test_upload_is_skipped_when_the_same_dataset_is_there(fake, dataset_dir):
    seen = []
    mark = upload_dataset(fake, dataset_dir, "synth", lambda done, total: seen.append((done, total)))
    assert mark["uploaded"] is False and seen[-1][0] == seen[-1][1] == mark["files"]
    on_volume = sorted(p.name for p in (fake.root / "datasets/synth").rglob("*") if p.is_file())
    assert on_volume == [vol.DATASET_MARK, vol.DATASET_ARCHIVE]  # one archive, not a file per picture
    with tarfile.open(fake.root / "datasets/synth" / vol.DATASET_ARCHIVE) as tar:
        names = tar.getnames()
    assert len(names) == mark["files"] and "synth_manifest.json" in names
    assert "._img_00000.jpg" not in names


@pytest.mark.parametrize(
    "exc, kind, live, needle",
    [
        (me.AuthError("Token missing"), PermanentError, False, "modal token new"),
        (me.AuthError("Token missing"), TransientError, True, "modal token new"),
        (me.ConnectionError("down"), TransientError, False, "unreachable"),
        (me.TimeoutError("slow"), TransientError, True, "unreachable"),
        (me.ServiceError("503"), TransientError, True, "busy"),
        (me.ResourceExhaustedError("GPU limit"), TransientError, False, "workspace limit"),
        (aiohttp.ServerDisconnectedError(), TransientError, True, "unreachable"),
        (ConnectionResetError(104, "reset"), TransientError, True, "unreachable"),
        (me.InvalidError("gpu 'X1' is not valid"), PermanentError, False, "gpu 'X1'"),
        (me.NotFoundError("App 'kdq' not found"), PermanentError, False, "kdq modal deploy"),
    ],
)
def test_modal_errors_are_classified(exc, kind, live, needle):
    mapped = classify(exc, live_run=live)
    assert isinstance(mapped, kind) and needle in str(mapped)


def test_a_bug_is_not_mistaken_for_a_modal_problem():
    assert classify(KeyError("x"), live_run=True) is None


def test_a_teacher_run_needs_hugging_face_access_before_it_spawns(backend, fake, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    spec = tiny_spec(teacher={"kind": "siglip", "model": "google/medsiglip-448"}, distill={"loss": "hinton"})
    with pytest.raises(PermanentError, match="no Hugging Face token found.*hf auth login"):
        backend.launch("t-1", spec)
    assert not fake.calls and fake.secrets["kdq-hf"] == {"KDQ_SECRET": "kdq-hf"}


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
        (me.RemoteError(""), "cancelled", "cancelled"),
        (me.RemoteError("OOMKilled"), "failed", "OOMKilled"),
        (ValueError("bad input"), "failed", "ValueError: bad input"),  # raised by the remote function
    ],
)
def test_the_real_gateway_reads_a_call_like_the_sdk_reports_it(settings, monkeypatch, raised, state, needle):
    """``FunctionCall.from_id(...).get(timeout=0)`` cannot run offline; its documented outcomes can."""
    import modal

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


@pytest.mark.parametrize(
    "raised, there", [(None, True), (me.NotFoundError("Secret 'kdq-hf' not found"), False)]
)
def test_the_real_gateway_asks_modal_whether_the_secret_holds_the_token(settings, monkeypatch, raised, there):
    import modal

    asked = []

    class Secret:
        def hydrate(self):
            if raised:
                raise raised

    monkeypatch.setattr(
        modal.Secret, "from_name", staticmethod(lambda name, **kw: asked.append((name, kw)) or Secret())
    )
    assert ModalGateway(settings).has_secret("kdq-hf", ["HF_TOKEN"]) is there
    assert asked == [("kdq-hf", {"required_keys": ["HF_TOKEN"]})]


def test_fetch_brings_the_tensorboard_curves_beside_the_local_runs(backend, fake, settings, tmp_path):
    _finished_run(fake.root, "f-2", "done")
    run_dir = fake.root / "runs/f-2"
    for name in runfolder.ARTIFACTS:
        (run_dir / name).write_bytes(b"x" * 10)
    (run_dir / f"{runfolder.EVENTS}1.host.1.0").write_bytes(b"curve")
    backend.fetch({"run_id": "f-2", "call_id": "fc-2"}, tmp_path / "dest")
    assert (settings.runs_dir / "f-2" / f"{runfolder.EVENTS}1.host.1.0").read_bytes() == b"curve"
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted(runfolder.ARTIFACTS)


# ---------------------------------------------------------------- several experiments on one GPU

PACKED = """
(here / f'env-{run.name}').write_text(os.environ.get('KDQ_CUDA_MEMORY_FRACTION', 'none'))
(here / f'started-{run.name}').touch()
while not (here / f'go-{run.name}').exists():
    time.sleep(0.01)
(run / 'done.json').write_text(json.dumps({'best_f1': 0.5}))
"""


def packed_stub(fake: FakeModal, folder: Path) -> Path:
    folder.mkdir()
    fake.python = stub_trainer(folder, "import os\n" + PACKED)
    return folder


def test_two_experiments_share_one_container_and_cancelling_one_leaves_the_other(backend, fake, tmp_path):
    """One input per experiment in one container (a pack of 2): one staged copy of the dataset, half
    the GPU's memory each; `kdq cancel` of one stops its training alone, and the other finishes in the
    same attempt (a cancel that ended the container would have Modal reschedule it)."""
    here = packed_stub(fake, tmp_path / "stub")
    spec = tiny_spec(backend={"pack": 2})
    one, two = backend.launch("pk-1", spec), backend.launch("pk-2", spec)
    wait_for(lambda: (here / "started-pk-1").exists() and (here / "started-pk-2").exists())
    [box] = fake.all_boxes
    assert box.inputs == {one["call_id"], two["call_id"]}
    commands = [m for m in fake.container_log if " -m kdq.train " in m]
    data = {m.split(" --data ")[1].split()[0] for m in commands}
    assert len(commands) == 2 and len(data) == 1  # the dataset staged once for both
    assert (here / "env-pk-1").read_text() == (here / "env-pk-2").read_text() == "0.5000"
    pid = owner_with_pid(fake, "pk-1")["pid"]

    backend.cancel(one)
    status = poll_until_done(backend, one)
    assert status.state == "failed" and "cancelled" in status.error
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text())
    assert backend.poll(two).state == "running" and fake.calls[two["call_id"]].attempts == 1

    (here / "go-pk-2").touch()
    assert poll_until_done(backend, two).state == "succeeded"
    assert fake.calls[two["call_id"]].attempts == 1 and len(fake.all_boxes) == 1


def test_the_gate_lets_pack_times_gpus_experiments_train(settings, store, fake, tmp_path):
    """KDQ_MODAL_MAX_RUNNING counts experiments: 4 of them, 2 to a GPU, train at once on 2 containers
    (max_containers), and the fifth waits queued."""
    here = packed_stub(fake, tmp_path / "stub")
    settings.modal_max_running = 4
    ids = store.add([(None, tiny_spec(name=f"g{i}", backend={"pack": 2})) for i in range(5)], force=True)
    ctx = context(settings, store, fake)

    def four_training():
        for exp_id in ids:
            steps.advance(ctx, exp_id)
        stages = [store.get(i).stage for i in ids]
        return stages.count(Stage.TRAINING) == 4 and stages

    stages = wait_for(four_training, timeout=60, every=0.1)
    assert stages.count(Stage.QUEUED) == 1, [e["message"] for i in ids for e in store.events(i)]
    for _ in range(3):  # and it stays queued while the four train
        steps.advance(ctx, ids[stages.index(Stage.QUEUED)])
    assert [store.get(i).stage for i in ids].count(Stage.TRAINING) == 4
    wait_for(lambda: len(list(here.glob("started-*"))) == 4)
    assert [len(b.inputs) for b in fake.boxes] == [2, 2]
    assert {c.options["max_containers"] for c in fake.calls.values()} == {2}
    for run in here.glob("started-*"):
        (here / run.name.replace("started-", "go-")).touch()


BUILD_OR_TRAIN = """
cache = pathlib.Path(sys.argv[sys.argv.index('--cache') + 1]) / 'teacher'
if '--teacher-cache-only' in sys.argv:
    cache.mkdir(parents=True, exist_ok=True)
    (cache / 'tiny-key.pt').write_bytes(b'embeddings')
else:
    (run / 'seen.json').write_text(json.dumps(sorted(p.name for p in cache.glob('*.pt') if p.is_symlink())))
(run / 'done.json').write_text(json.dumps({'best_f1': 0.5}))
"""


def test_the_teacher_cache_is_built_by_an_input_of_its_own_and_each_training_reads_it_from_the_volume(
    settings, store, fake, tmp_path
):
    """Night one: every experiment with a teacher misses the cache. One input of the training class
    builds it (``--teacher-cache-only``; here a stand-in for the training process) while both
    experiments wait in ``queued``; each training then sees it in its --cache folder as a link to the
    Volume's copy (it computes nothing again). The real build: tests/train/test_main.py."""
    fake.python = stub_trainer(tmp_path, BUILD_OR_TRAIN)
    ctx = context(settings, store, fake)
    first, second = store.add(
        [(None, teacher_spec(name="a")), (None, teacher_spec(name="b", train={"epochs": 3}))], force=True
    )

    def both_training() -> bool:
        for exp_id in (first, second):
            steps.advance(ctx, exp_id)
        return all(store.get(e).stage is Stage.TRAINING for e in (first, second))

    wait_for(both_training, timeout=120, every=0.1)
    [build] = [c for c in fake.calls.values() if c.run_id.startswith("cache-")]
    assert build.options["teacher_cache_only"] and build.result["outcome"] == "done"
    assert (fake.root / vol.CACHE / "teacher" / "tiny-key.pt").read_bytes() == b"embeddings"
    for exp_id in (first, second):
        run_id = store.get(exp_id).run_id
        wait_for(lambda r=run_id: (fake.root / vol.run_path(r) / "seen.json").exists(), timeout=60)
        assert json.loads((fake.root / vol.run_path(run_id) / "seen.json").read_text()) == ["tiny-key.pt"]
    assert len(fake.calls) == 3 and len(fake.decodes) == 1


FAIL_THE_FIRST_BUILD = (
    """
if '--teacher-cache-only' in sys.argv and not (here / 'second').exists():
    (run / 'error.json').write_text(json.dumps({'error': 'OutOfMemoryError: the teacher pass'}))
    sys.exit(1)
"""
    + BUILD_OR_TRAIN
)


def test_a_teacher_cache_whose_build_failed_is_built_again_by_a_new_input(
    settings, store, fake, tmp_path, monkeypatch
):
    """A failed build fails the experiments that wait for it, with its reason; a later look builds
    again, in a run folder of its own (a second call for one run folder would stand down)."""
    fake.python = stub_trainer(tmp_path, FAIL_THE_FIRST_BUILD)
    ctx = context(settings, store, fake)
    [first] = store.add([(None, teacher_spec(name="a"))])
    exp = drive(ctx, first, {Stage.FAILED, Stage.TRAINING})
    assert exp.stage is Stage.FAILED and "OutOfMemoryError: the teacher pass" in exp.error, exp.error
    assert "the build of the teacher cache of tiny" in exp.error
    (tmp_path / "second").touch()
    monkeypatch.setattr(modal_cache, "FAILED_HOLD_S", 0.0)
    [again] = store.add([(None, teacher_spec(name="again"))], force=True)
    assert drive(ctx, again, {Stage.FAILED, Stage.TRAINING}).stage is Stage.TRAINING
    builds = [c for c in fake.calls.values() if c.run_id.startswith("cache-")]
    assert len(builds) == 2 and builds[0].run_id != builds[1].run_id
    assert builds[1].result["outcome"] == "done"


def test_an_experiment_waiting_for_the_teacher_cache_waits_queued_and_holds_no_launch_slot(
    settings, store, fake
):
    """The teacher cache this experiment needs is being built: it stays queued, says why, and holds no
    launch slot, so one behind it that needs no cache launches; once the cache is ready it goes."""
    fake.start_delays = [3600] * 3  # no container starts: the launches alone
    settings.modal_max_running = 1
    ctx = context(settings, store, fake)
    waiter, other = store.add([(None, teacher_spec(name="w")), (None, tiny_spec())], force=True)

    def build_spawned() -> bool:
        steps.advance(ctx, waiter)
        return bool(fake.calls)

    wait_for(build_spawned, timeout=60, every=0.1)
    for _ in range(3):
        steps.advance(ctx, waiter)
    assert store.get(waiter).stage is Stage.QUEUED
    [build] = fake.calls.values()
    assert build.run_id.startswith("cache-") and build.options["teacher_cache_only"]
    messages = [e["message"] for e in store.events(waiter)]
    assert sum("waiting for the build of the teacher cache of tiny" in m for m in messages) == 1, (
        messages
    )  # said once
    assert drive(ctx, other, {Stage.TRAINING}, timeout=30)  # the one slot: the waiter holds none
    [key] = [k for k in fake.live.data if k.startswith("cache:") and not k.endswith(modal_cache.CALL)]
    build.state, build.result = "finished", {"outcome": "done"}  # the build input returned
    settings.modal_max_running = 2
    assert drive(ctx, waiter, {Stage.TRAINING}, timeout=30)
    assert fake.live.get(key)["state"] == "ready"


# ---------------------------------------------------------------- the pictures decoded once, off the GPU


def _decoded_files(fake: FakeModal) -> dict[str, int]:
    folder = fake.root / vol.CACHE / "decoded"
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pt")} if folder.is_dir() else {}


def test_the_pictures_are_decoded_once_off_the_gpu_while_the_experiments_wait_queued(settings, store, fake):
    """Two experiments on one dataset and size: one call of the CPU-only decode function decodes it
    while both wait in ``queued`` (no GPU call, no launch slot); then both train on that tensor, and
    neither GPU container decodes it again."""
    fake.decode_go.clear()
    ctx = context(settings, store, fake)
    first, second = store.add([(None, tiny_spec(name="a")), (None, tiny_spec(name="b"))], force=True)
    for _ in range(3):
        steps.advance(ctx, first)
        steps.advance(ctx, second)
    assert store.get(first).stage is store.get(second).stage is Stage.QUEUED
    assert len(fake.decodes) == 1 and not fake.calls  # one decode, no GPU container yet
    assert fake.decodes["fc-d001"].options["memory"] >= 16 * 1024  # a bucket, sized from the dataset
    said = [e["message"] for e in store.events(first)]
    assert sum("waiting for the decode of dataset 'synth'" in m for m in said) == 1, said
    fake.decode_go.set()
    wait_for(lambda: fake.decodes["fc-d001"].state == "finished", timeout=60)
    assert fake.decodes["fc-d001"].result["outcome"] == "done", fake.decodes["fc-d001"].result
    [(name, written)] = _decoded_files(fake).items()
    assert name.endswith("-40.pt")  # data.decode_size: the name the training looks for
    for exp_id in (first, second):
        assert drive(ctx, exp_id, {Stage.DONE, Stage.FAILED, Stage.READY}).stage is not Stage.FAILED
    assert len(fake.decodes) == 1 and len(fake.calls) == 2
    assert _decoded_files(fake) == {name: written}  # read by both trainings, written by neither


def test_a_dataset_whose_pictures_cannot_be_decoded_fails_queued_without_a_gpu_call(
    settings, store, fake, tmp_path
):
    """The decode function finds no pictures: the experiment fails in ``queued`` with the reason, named
    as on the Volume, before any GPU container starts; the next experiment to look decodes again."""
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "README.txt").write_text("no images here")
    upload_dataset(fake, junk, "junk")
    ctx = context(settings, store, fake)
    [exp_id] = store.add([(None, tiny_spec(data={"dataset": "junk"}))])
    exp = drive(ctx, exp_id, {Stage.FAILED, Stage.TRAINING})
    assert exp.stage is Stage.FAILED and not fake.calls, exp.error
    assert "the decode of dataset 'junk'" in exp.error and "failed on Modal" in exp.error, exp.error
    assert "datasets/junk: found no class folders" in exp.error
    assert "kdq data upload PATH --name junk" in exp.error and str(tmp_path) not in exp.error
    [again] = store.add([(None, tiny_spec(name="again", data={"dataset": "junk"}))], force=True)
    assert drive(ctx, again, {Stage.FAILED, Stage.TRAINING}).stage is Stage.FAILED
    assert len(fake.decodes) == 1 and not fake.calls  # told the same failure: not decoded again


def test_a_decode_call_that_dies_fails_the_run_that_looks_and_a_cancelled_one_starts_again(
    settings, store, fake, monkeypatch
):
    """A decode call that was cancelled (Modal's dashboard) fails nothing: the next look starts a new
    one. One that raised (out of memory) fails every experiment that looks with the call's error, for
    a while; after that the next look starts a new one (``kdq retry``)."""
    real = decode.decode_dataset

    def out_of_memory(*a, **kw):
        raise MemoryError("the container ran out of memory")

    ctx = context(settings, store, fake)
    fake.decode_go.clear()
    [first] = store.add([(None, tiny_spec())])
    steps.advance(ctx, first)
    fake.decodes["fc-d001"].cancel()
    wait_for(lambda: fake.decodes["fc-d001"].state == "cancelled", timeout=30)
    steps.advance(ctx, first)
    assert store.get(first).stage is Stage.QUEUED and len(fake.decodes) == 2
    monkeypatch.setattr(decode, "decode_dataset", out_of_memory)
    fake.decode_go.set()
    exp = drive(ctx, first, {Stage.FAILED, Stage.TRAINING})
    assert exp.stage is Stage.FAILED and "MemoryError" in exp.error and not fake.calls, exp.error
    monkeypatch.setattr(decode, "decode_dataset", real)
    [again] = store.add([(None, tiny_spec(name="again"))], force=True)
    assert drive(ctx, again, {Stage.FAILED, Stage.TRAINING}).stage is Stage.FAILED  # the same failure
    monkeypatch.setattr(modal_cache, "FAILED_HOLD_S", 0.0)
    [third] = store.add([(None, tiny_spec(name="third"))], force=True)
    assert drive(ctx, third, {Stage.TRAINING, Stage.FAILED}).stage is Stage.TRAINING
    assert len(fake.decodes) == 3
