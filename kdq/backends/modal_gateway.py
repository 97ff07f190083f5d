"""What kdq knows about Modal: the layout of the Volume, and the narrow gateway to the SDK.

The Volume (mounted at ``MOUNT`` in the container) holds::

    datasets/<name>/...            uploaded once by ``kdq data upload`` (``DATASET_MARK`` written last)
    cache/                         decode and teacher caches, shared by every run
    runs/<run_id>/                 the run folder (kdq/runfolder.py) plus:
        launch.json                written by the backend before and after it spawns the call
        owner.json                 {"call_id", "heartbeat", "pid", "attempts"}: which call trains it now

``ModalGateway`` is the only place that calls the modal SDK for the backend: spawn a call, look at a
call, cancel it, read/list/upload files on the Volume, deploy the app, store and check a secret. Its
errors are the SDK's own (``modal.exception.*``, aiohttp's for Volume blocks);
``kdq.backends.modal_errors.classify`` decides what they mean. The SDK objects it uses are reached through
four small methods (``_volume``, ``_function``, ``_decoder``, ``_call``) that the tests replace with stand-ins
behaving like Modal, so the rest of this class runs in the tests as it runs for real.
"""

from __future__ import annotations

import builtins
import io
import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from kdq import runfolder

MOUNT = "/vol"
RUNS = "runs"
DATASETS = "datasets"
CACHE = "cache"
LAUNCH = "launch.json"
OWNER = "owner.json"
DATASET_MARK = ".kdq-dataset.json"
DATASET_ARCHIVE = "pictures.tar"  # the dataset's files, one archive (the mark names it)
TRAINER = "Trainer"  # the app's class; its method ``train`` is one input per experiment
DECODER = "decode"  # the app's CPU-only function: a dataset's pictures decoded once for every run
APP_MODULE = "jobs.modal_app"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding kdq/ and jobs/


def run_path(run_id: str) -> str:
    return f"{RUNS}/{run_id}"


# The app's modal.Dict: what must be seen at once, without a Volume commit.
def live_name(app: str) -> str:
    return f"{app}-live"


def lease_key(run_id: str) -> str:
    """The call that holds the run (first writer wins)."""
    return f"lease:{run_id}"


def run_key(run_id: str) -> str:
    """The container's latest heartbeat: owner.json's record plus progress.json."""
    return f"run:{run_id}"


def dataset_path(name: str) -> str:
    return f"{DATASETS}/{name}"


@dataclass(frozen=True)
class CallState:
    """``running``; ``finished`` with the function's return value; ``failed`` / ``cancelled`` with a
    message; ``expired`` (Modal no longer keeps the result)."""

    state: Literal["running", "finished", "failed", "cancelled", "expired"]
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the Volume's root
    size: int
    is_dir: bool


Upload = tuple[Path | bytes, str]  # (local file or bytes, path on the Volume)


@dataclass(frozen=True)
class SpawnOptions:
    """What a spawn asks of Modal: equal options share one container pool (and pack into it)."""

    gpu: str
    memory_mib: int
    pack: int
    max_containers: int


class Gateway(Protocol):
    def spawn(self, run_id: str, dataset: str, *, options: SpawnOptions, timeout_s: int, **extra: Any) -> str:
        """Start one training input of the app's class; returns the call id (``fc-...``). ``extra``:
        ``resume_from`` (a run whose checkpoint to start from), ``teacher_cache_only`` (train nothing)."""

    def spawn_decode(self, *, memory_mib: int, **args: Any) -> str:
        """Start the app's CPU-only ``decode`` function (``args``: dataset, decode_size,
        limit_per_class); returns the call id."""

    def call_state(self, call_id: str) -> CallState: ...

    def cancel(self, call_id: str) -> None: ...

    def live_get(self, key: str) -> Any:
        """A value of the app's modal.Dict (``live_name``), or ``None``."""

    def live_put(self, key: str, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Put a value; with ``skip_if_exists`` only when the key is absent (atomic). Whether it put."""

    def live_pop(self, key: str) -> Any: ...

    def read_file(self, path: str) -> bytes | None:
        """The whole (small) file, or ``None`` when it is not on the Volume."""

    def download(self, path: str, dest: Path) -> int:
        """Stream a file to ``dest``; returns the bytes written. ``FileNotFoundError`` when absent."""

    def listdir(self, path: str) -> list[Entry] | None:
        """Entries directly under ``path``; ``None`` when the folder does not exist."""

    def upload(self, items: Iterable[Upload]) -> None:
        """Put files on the Volume in one batch (overwriting)."""

    def deploy(self, *, show_output: bool = False) -> None:
        """Deploy ``jobs/modal_app.py`` as it is on disk now."""

    def put_secret(self, name: str, values: dict[str, str], *, overwrite: bool = True) -> None:
        """Create the secret, or merge ``values`` into it (``overwrite=False``: leave one that exists)."""

    def has_secret(self, name: str, keys: list[str]) -> bool:
        """Whether the secret exists on Modal and holds every key in ``keys``."""

    def check(self) -> bool:
        """One cheap authenticated call, creating nothing: whether the Volume exists. Raises what the SDK
        raises without credentials or network."""


# ---------------------------------------------------------------- the SDK behind the gateway


class ModalGateway:
    """The modal SDK (1.6.4) behind ``Gateway``. Building it makes no network call."""

    def __init__(self, settings):
        self.settings = settings
        self._vol = None

    # ------------------------------------------------------------ the SDK objects (tests replace these)

    def _volume(self):
        import modal

        if self._vol is None:
            self._vol = modal.Volume.from_name(self.settings.modal_volume, create_if_missing=True)
        return self._vol

    def _function(self, options: SpawnOptions):
        """The class's ``train`` method with ``options``: equal options, one container pool."""
        import modal

        cls = modal.Cls.from_name(self.settings.modal_app, TRAINER)
        cls = cls.with_options(
            gpu=options.gpu, memory=options.memory_mib, max_containers=options.max_containers
        )
        return cls.with_concurrency(max_inputs=options.pack)().train

    def _decoder(self, memory_mib: int):
        """The app's CPU-only ``decode`` function, asking for ``memory_mib``."""
        import modal

        return modal.Function.from_name(self.settings.modal_app, DECODER).with_options(memory=memory_mib)

    def _call(self, call_id: str):
        import modal

        return modal.FunctionCall.from_id(call_id)

    def _live(self):
        import modal

        return modal.Dict.from_name(live_name(self.settings.modal_app), create_if_missing=True)

    # ------------------------------------------------------------ calls

    def spawn(self, run_id: str, dataset: str, *, options: SpawnOptions, timeout_s: int, **extra: Any) -> str:
        extra = {k: v for k, v in extra.items() if v}  # the method's defaults otherwise
        kw = dict(run_id=run_id, dataset=dataset, timeout_s=timeout_s, pack=options.pack, **extra)
        return self._function(options).spawn(**kw).object_id

    def spawn_decode(self, *, memory_mib: int, **args: Any) -> str:
        return self._decoder(memory_mib).spawn(**args).object_id

    def call_state(self, call_id: str) -> CallState:
        from modal.exception import (
            Error,
            ExecutionError,
            FunctionTimeoutError,
            InternalFailure,
            OutputExpiredError,
            RemoteError,
        )

        try:
            value = self._call(call_id).get(timeout=0)
        except OutputExpiredError:
            return CallState("expired")
        except FunctionTimeoutError as exc:
            return CallState("failed", error=f"the call ran past its timeout (backend.timeout_min): {exc}")
        except builtins.TimeoutError:  # the built-in one: no output yet
            return CallState("running")
        except RemoteError as exc:  # cancelled (an empty message), killed out of memory, evicted
            if not str(exc).strip():
                return CallState("cancelled", error="the call was cancelled (from kdq or Modal's dashboard)")
            return CallState("failed", error=f"Modal ended the call: {exc}")
        except ExecutionError as exc:  # the function raised something this machine cannot unpickle
            return CallState("failed", error=f"the call failed: {str(exc).splitlines()[0]}")
        except InternalFailure as exc:
            return CallState("failed", error=f"Modal failed the call internally: {exc}")
        except Error:
            raise  # transport, auth, service: the backend classifies these
        except Exception as exc:  # noqa: BLE001 — an exception raised by the remote function itself
            return CallState("failed", error=f"{type(exc).__name__}: {exc}")
        return CallState("finished", result=value if isinstance(value, dict) else {"value": value})

    def cancel(self, call_id: str) -> None:
        # This input alone: its neighbours in the container go on (True would reschedule them).
        self._call(call_id).cancel(terminate_containers=False)

    def live_get(self, key: str) -> Any:
        return self._live().get(key)

    def live_put(self, key: str, value: Any, *, skip_if_exists: bool = False) -> bool:
        return self._live().put(key, value, skip_if_exists=skip_if_exists)

    def live_pop(self, key: str) -> Any:
        return self._live().pop(key, None)

    # ------------------------------------------------------------ the Volume

    def read_file(self, path: str) -> bytes | None:
        try:
            return b"".join(self._volume().read_file(path))
        except FileNotFoundError:
            return None

    def download(self, path: str, dest: Path) -> int:
        size = 0
        with runfolder.atomic_path(dest) as tmp, open(tmp, "wb") as f:
            for chunk in self._volume().read_file(path):
                f.write(chunk)
                size += len(chunk)
        return size

    def listdir(self, path: str) -> list[Entry] | None:
        from modal.exception import NotFoundError
        from modal.volume import FileEntryType

        try:
            entries = self._volume().listdir(path)
        except (FileNotFoundError, NotFoundError):
            return None
        return [Entry(e.path, int(e.size), e.type == FileEntryType.DIRECTORY) for e in entries]

    def upload(self, items: Iterable[Upload]) -> None:
        with self._volume().batch_upload(force=True) as batch:
            for local, remote in items:
                src: Path | IO[bytes] = io.BytesIO(local) if isinstance(local, bytes) else local
                batch.put_file(src, remote)

    # ------------------------------------------------------------ the app and its secret

    def deploy(self, *, show_output: bool = False) -> None:
        """``python -m modal deploy`` in a fresh interpreter: it reads the app as it is on disk now (this
        process may have imported an older one) and prints the image build when ``show_output``."""
        s = self.settings
        env = {
            **os.environ,
            "KDQ_MODAL_APP": s.modal_app,
            "KDQ_MODAL_VOLUME": s.modal_volume,
            "KDQ_MODAL_SECRET": s.modal_secret,
            "KDQ_MODAL_TORCH": s.modal_torch,
        }
        cmd = [sys.executable, "-m", "modal", "deploy", "--name", s.modal_app, "-m", APP_MODULE]
        tail: deque[str] = deque(maxlen=40)  # what a failure is read from
        with subprocess.Popen(
            cmd, cwd=PACKAGE_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            for line in proc.stdout:
                tail.append(line)
                if show_output:
                    print(line, end="", flush=True)
        if proc.returncode != 0:
            raise deploy_error("".join(tail))

    def put_secret(self, name: str, values: dict[str, str], *, overwrite: bool = True) -> None:
        import modal
        from modal.exception import AlreadyExistsError

        try:
            modal.Secret.objects.create(name, values)
        except AlreadyExistsError:
            if overwrite:
                modal.Secret.from_name(name).update(values)

    def has_secret(self, name: str, keys: list[str]) -> bool:
        import modal
        from modal.exception import ConflictError, InvalidError, NotFoundError

        try:
            modal.Secret.from_name(name, required_keys=keys).hydrate()
        except (NotFoundError, InvalidError, ConflictError):  # gone, or without a key (the server's say)
            return False
        return True

    def check(self) -> bool:
        import modal
        from modal.exception import NotFoundError

        try:
            modal.Volume.from_name(self.settings.modal_volume).hydrate()
        except NotFoundError:
            return False
        return True


def deploy_error(output: str) -> Exception:
    """The SDK exception a failed ``modal deploy`` stands for, so the backend classifies it as usual."""
    from modal import exception as me

    tail = "\n".join(line for line in output.strip().splitlines()[-15:] if line.strip())
    if "Token missing" in output or "modal token new" in output or "Could not authenticate" in output:
        return me.AuthError(tail)
    if "Could not connect" in output or "Deadline" in output:
        return me.ConnectionError(tail)
    return me.ExecutionError(f"`modal deploy -m {APP_MODULE}` failed:\n{tail}")
