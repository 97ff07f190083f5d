"""The narrow interface the Modal backend talks through, and its one real implementation.

``ModalGateway`` is the only place that calls the modal SDK for the backend: spawn a call, look at a
call, cancel it, read/list/upload files on the Volume, deploy the app, store a secret. Errors are the
SDK's own (``modal.exception.*``); ``kdq.backends.modal.classify`` decides what they mean. Tests use
a fake with the same methods over a temporary folder (tests/backends/test_modal.py).
"""

from __future__ import annotations

import builtins
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol

TRAIN_FUNCTION = "train"


@dataclass(frozen=True)
class CallState:
    """``running``; ``finished`` with the function's return value; ``failed`` with a message; ``expired``."""

    state: Literal["running", "finished", "failed", "expired"]
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the Volume's root
    size: int
    is_dir: bool


Upload = tuple[Path | bytes, str]  # (local file or bytes, path on the Volume)


class Gateway(Protocol):
    def spawn(self, run_id: str, dataset: str, *, gpu: str, timeout_s: int) -> str:
        """Start the training function; returns the call id (``fc-...``)."""

    def call_state(self, call_id: str) -> CallState: ...

    def cancel(self, call_id: str) -> None: ...

    def read_file(self, path: str) -> bytes | None:
        """The whole (small) file, or ``None`` when it is not on the Volume."""

    def download(self, path: str, dest: Path) -> int:
        """Stream a file to ``dest``; returns the bytes written. ``FileNotFoundError`` when absent."""

    def listdir(self, path: str) -> list[Entry] | None:
        """Entries directly under ``path``; ``None`` when the folder does not exist."""

    def upload(self, items: Iterable[Upload]) -> None:
        """Put files on the Volume in one batch (overwriting)."""

    def deploy(self) -> None: ...

    def put_secret(self, name: str, values: dict[str, str], *, overwrite: bool = True) -> None:
        """Create the secret, or merge ``values`` into it (``overwrite=False``: leave an existing one alone)."""

    def check(self) -> None:
        """One cheap authenticated call: raises what the SDK raises without credentials or network."""


class ModalGateway:
    """The modal SDK (1.6.4) behind ``Gateway``. Building it makes no network call."""

    def __init__(self, settings):
        self.settings = settings
        self._volume = None

    @property
    def volume(self):
        import modal

        if self._volume is None:
            self._volume = modal.Volume.from_name(self.settings.modal_volume, create_if_missing=True)
        return self._volume

    def _function(self):
        import modal

        return modal.Function.from_name(self.settings.modal_app, TRAIN_FUNCTION)

    def spawn(self, run_id: str, dataset: str, *, gpu: str, timeout_s: int) -> str:
        fn = self._function().with_options(gpu=gpu, timeout=timeout_s)
        return fn.spawn(run_id=run_id, dataset=dataset).object_id

    def call_state(self, call_id: str) -> CallState:
        import modal
        from modal.exception import FunctionTimeoutError, InternalFailure, OutputExpiredError

        try:
            value = modal.FunctionCall.from_id(call_id).get(timeout=0)
        except builtins.TimeoutError:  # the built-in one: no output yet
            return CallState("running")
        except OutputExpiredError:
            return CallState("expired")
        except FunctionTimeoutError as exc:
            return CallState(
                "failed", error=f"the training call ran past its timeout (backend.timeout_min): {exc}"
            )
        except InternalFailure as exc:
            return CallState("failed", error=f"Modal failed the call internally: {exc}")
        except modal.exception.Error:
            raise  # transport, auth, service: the backend classifies these
        except Exception as exc:  # noqa: BLE001 — an exception raised by the remote function itself
            return CallState("failed", error=f"{type(exc).__name__}: {exc}")
        return CallState("finished", result=value if isinstance(value, dict) else {"value": value})

    def cancel(self, call_id: str) -> None:
        import modal

        modal.FunctionCall.from_id(call_id).cancel(terminate_containers=True)

    def read_file(self, path: str) -> bytes | None:
        try:
            return b"".join(self.volume.read_file(path))
        except FileNotFoundError:
            return None

    def download(self, path: str, dest: Path) -> int:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in self.volume.read_file(path):
                    f.write(chunk)
                    size += len(chunk)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size

    def listdir(self, path: str) -> list[Entry] | None:
        from modal.exception import NotFoundError
        from modal.volume import FileEntryType

        try:
            entries = self.volume.listdir(path)
        except (FileNotFoundError, NotFoundError):
            return None
        return [Entry(e.path, int(e.size), e.type == FileEntryType.DIRECTORY) for e in entries]

    def upload(self, items: Iterable[Upload]) -> None:
        import io

        with self.volume.batch_upload(force=True) as batch:
            for local, remote in items:
                src: Path | IO[bytes] = io.BytesIO(local) if isinstance(local, bytes) else local
                batch.put_file(src, remote)

    def deploy(self) -> None:
        from jobs.modal_app import app

        app.deploy(name=self.settings.modal_app)

    def put_secret(self, name: str, values: dict[str, str], *, overwrite: bool = True) -> None:
        import modal
        from modal.exception import AlreadyExistsError

        try:
            modal.Secret.objects.create(name, values)
        except AlreadyExistsError:
            if overwrite:
                modal.Secret.from_name(name).update(values)

    def check(self) -> None:
        self.volume.hydrate()
