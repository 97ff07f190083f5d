"""The Modal backend: kdq's training entry point in a GPU container, the run folder on a Modal Volume.

    launch  launch.json on the Volume says a call was spawned for this run id → reuse it; otherwise
            deploy if the code changed, make sure the dataset and the Hugging Face secret are there,
            write spec.json + launch.json ("spawning"), spawn, write launch.json (call id)
    poll    the call's state + progress.json; a finished, failed or expired call is judged by the
            run folder (done.json / error.json), so an expired result is recovered from the Volume
    fetch   stream model.pt, metrics.json, history.csv into dest, each checked against its size
    cancel  cancel the call (and the call that owns the run, if another one does)

The backend only talks to a ``Gateway`` (kdq/backends/modal_gateway.py); the SDK's exceptions are
sorted by ``classify`` into ``TransientError`` (wait and look again) and ``PermanentError``.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdq import hf, runfolder
from kdq.backends import RunStatus
from kdq.backends import modal_remote as remote
from kdq.backends.modal_gateway import CallState, Gateway, ModalGateway
from kdq.errors import PermanentError, TransientError
from kdq.log import get_logger
from kdq.spec import ExperimentSpec

log = get_logger("kdq.modal")
LOGIN = "run `modal token new` (or `modal setup`) on this machine"
DEPLOY_META = "modal_deploy"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding kdq/ and jobs/
UPLOAD_BATCH = 200  # files per Volume batch (the progress bar moves once per batch)


# ---------------------------------------------------------------- errors


def classify(exc: BaseException, *, live_run: bool) -> Exception | None:
    """What a gateway exception means for the worker; ``None``: not a Modal problem (a bug: let it rise).

    ``live_run``: a call may be running on Modal. Then even lost credentials only make us wait, because
    failing the experiment would abandon a paid run; before a launch they fail it with what to run.
    """
    from modal import exception as me

    if isinstance(exc, (TransientError, PermanentError)):
        return exc
    name = type(exc).__name__
    if isinstance(exc, me.AuthError):
        if live_run:
            return TransientError(
                f"Modal refused the credentials: {LOGIN}; the run goes on meanwhile. (Modal: {exc})"
            )
        return PermanentError(
            f"Modal has no valid credentials: {LOGIN}, then `kdq retry` this experiment. (Modal: {exc})"
        )
    transient = (
        me.ConnectionError,
        me.TimeoutError,
        me.ServiceError,
        me.InternalError,
        me.ResourceExhaustedError,
        builtins.ConnectionError,
        builtins.TimeoutError,
    )
    if isinstance(exc, transient):
        return TransientError(f"Modal is unreachable or busy ({name}: {exc}); trying again")
    if isinstance(exc, me.PermissionDeniedError):
        return PermanentError(
            f"Modal denied access ({exc}): check the workspace of your token (`modal profile current`)"
        )
    if isinstance(exc, me.NotFoundError):
        return PermanentError(f"Modal could not find it ({exc}): run `kdq modal deploy`, then `kdq retry`")
    if isinstance(exc, me.Error):
        return PermanentError(f"Modal error {name}: {exc}")
    return None


@contextmanager
def guarded(*, live_run: bool) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = classify(exc, live_run=live_run)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc


# ---------------------------------------------------------------- code fingerprint and deploy


def code_fingerprint(settings, root: Path = PACKAGE_ROOT) -> str:
    """Hash of everything the deployed app is made of: kdq's sources, jobs/modal_app.py and the settings
    it reads (torch in the image, the Volume and secret names)."""
    named = f"torch={settings.modal_torch} volume={settings.modal_volume} secret={settings.modal_secret}\n"
    h = hashlib.sha256(named.encode())
    files = sorted((root / "kdq").rglob("*.py")) + [root / "jobs" / "modal_app.py"]
    for path in files:
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def ensure_deployed(settings, gateway: Gateway, *, force: bool = False) -> bool:
    """Deploy the app when the code differs from what was deployed last; returns whether it deployed."""
    from kdq.store import Store

    fingerprint = code_fingerprint(settings)
    with Store.open(settings) as store:
        seen = store.get_meta_json(DEPLOY_META) or {}
    if not force and seen.get("fingerprint") == fingerprint and seen.get("app") == settings.modal_app:
        return False
    log.info("deploying the Modal app", app=settings.modal_app, fingerprint=fingerprint)
    # The app names the secret; it must exist even before any Hugging Face token does.
    gateway.put_secret(settings.modal_secret, {"KDQ_SECRET": settings.modal_secret}, overwrite=False)
    gateway.deploy()
    with Store.open(settings) as store:
        store.set_meta(
            DEPLOY_META, {"fingerprint": fingerprint, "app": settings.modal_app, "at": time.time()}
        )
    return True


# ---------------------------------------------------------------- datasets on the Volume


def dataset_files(folder: Path) -> list[Path]:
    """Every file of a dataset folder, without macOS junk and hidden files, in a stable order."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and "__MACOSX" not in p.parts
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def dataset_fingerprint(folder: Path, files: list[Path] | None = None) -> str:
    h = hashlib.sha256()
    for path in files if files is not None else dataset_files(folder):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def upload_dataset(
    gateway: Gateway, folder: Path, name: str, progress: Callable[[int, int], None] = lambda done, total: None
) -> dict[str, Any]:
    """Upload ``folder`` as ``datasets/<name>`` unless the same fingerprint is there. Returns the mark.

    The mark file is written last, so an interrupted upload is redone, never taken for complete.
    """
    files = dataset_files(folder)
    if not files:
        raise PermanentError(f"{folder} holds no files to upload")
    mark = {
        "name": name,
        "fingerprint": dataset_fingerprint(folder, files),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
    }
    base = remote.dataset_path(name)
    raw = gateway.read_file(f"{base}/{remote.DATASET_MARK}")
    there = json.loads(raw) if raw else {}
    if there.get("fingerprint") == mark["fingerprint"]:
        progress(len(files), len(files))
        return {**there, "uploaded": False}
    for i in range(0, len(files), UPLOAD_BATCH):
        chunk = files[i : i + UPLOAD_BATCH]
        gateway.upload((p, f"{base}/{p.relative_to(folder).as_posix()}") for p in chunk)
        progress(i + len(chunk), len(files))
    mark["uploaded_at"] = time.time()
    gateway.upload([(json.dumps(mark).encode(), f"{base}/{remote.DATASET_MARK}")])
    return {**mark, "uploaded": True}


# ---------------------------------------------------------------- the backend


class ModalBackend:
    def __init__(self, settings, gateway: Gateway | None = None):
        self.settings = settings
        self.gateway: Gateway = gateway or ModalGateway(settings)
        self._hf_checked: set[str] = set()

    # ------------------------------------------------------------ Volume helpers

    def _json(self, path: str) -> dict | None:
        raw = self.gateway.read_file(path)
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return None

    def _put_json(self, path: str, data: dict) -> None:
        self.gateway.upload([(json.dumps(data, indent=2).encode(), path)])

    # ------------------------------------------------------------ launch

    def prepare(self, spec: ExperimentSpec) -> None:
        """Everything a run needs before its first spawn: the app, the dataset, the Hugging Face secret."""
        ensure_deployed(self.settings, self.gateway)
        name = spec.data.dataset
        if self.gateway.read_file(f"{remote.dataset_path(name)}/{remote.DATASET_MARK}") is None:
            local = self.settings.datasets_dir / name
            if not local.is_dir():
                raise PermanentError(
                    f"dataset {name!r} is neither on the Modal Volume {self.settings.modal_volume!r} nor at {local}: "
                    f"run `kdq data upload PATH --name {name}` (PATH: the unzipped course dataset), then `kdq retry`"
                )
            log.info("uploading the dataset to the Volume", dataset=name, path=str(local))
            upload_dataset(self.gateway, local, name)
        if (
            spec.teacher.kind == "siglip"
            and spec.teacher.model != "tiny"
            and spec.teacher.model not in self._hf_checked
        ):
            hf.ensure_access(self.settings, spec.teacher.model, gateway=self.gateway)
            self._hf_checked.add(spec.teacher.model)

    def launch(self, run_id: str, spec: ExperimentSpec) -> dict[str, Any]:
        run = remote.run_path(run_id)
        with guarded(live_run=False):
            record = self._json(f"{run}/{remote.LAUNCH}") or {}
            owner = self._json(f"{run}/{remote.OWNER}") or {}
        call_id = record.get("call_id") or owner.get("call_id")
        if call_id:  # launched before (a retried step, a worker that died after spawning): never twice
            if not record.get("call_id"):
                with guarded(live_run=True):
                    self._put_json(f"{run}/{remote.LAUNCH}", {**record, "call_id": call_id, "adopted": True})
            return self._handle(run_id, call_id, record.get("gpu", spec.backend.gpu))
        with guarded(live_run=bool(record)):  # a record means a call may live: never fail it away
            self.prepare(spec)
            token = uuid.uuid4().hex
            self.gateway.upload(
                [
                    (spec.model_dump_json(indent=2).encode(), f"{run}/{runfolder.SPEC}"),
                    (
                        json.dumps({"state": "spawning", "token": token, "at": time.time()}).encode(),
                        f"{run}/{remote.LAUNCH}",
                    ),
                ]
            )
            call_id = self._spawn(run_id, spec)
        # From here a call exists: whatever goes wrong must not lead to a second spawn being forgotten.
        with guarded(live_run=True):
            self._put_json(
                f"{run}/{remote.LAUNCH}",
                {
                    "state": "spawned",
                    "token": token,
                    "call_id": call_id,
                    "gpu": spec.backend.gpu,
                    "at": time.time(),
                },
            )
        log.info("spawned a Modal training call", run_id=run_id, call_id=call_id, gpu=spec.backend.gpu)
        return self._handle(run_id, call_id, spec.backend.gpu)

    def _spawn(self, run_id: str, spec: ExperimentSpec) -> str:
        from modal.exception import NotFoundError

        kw = dict(gpu=spec.backend.gpu, timeout_s=spec.backend.timeout_min * 60)
        try:
            return self.gateway.spawn(run_id, spec.data.dataset, **kw)
        except NotFoundError:  # the app was stopped or deleted behind our back: deploy and try once more
            ensure_deployed(self.settings, self.gateway, force=True)
            return self.gateway.spawn(run_id, spec.data.dataset, **kw)

    def _handle(self, run_id: str, call_id: str, gpu: str) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "call_id": call_id,
            "gpu": gpu,
            "volume": self.settings.modal_volume,
            "launched_at": time.time(),
        }

    # ------------------------------------------------------------ poll

    def poll(self, handle: dict[str, Any]) -> RunStatus:
        run = remote.run_path(handle["run_id"])
        call_id = handle["call_id"]
        with guarded(live_run=True):
            for _ in range(3):  # follow at most a couple of "duplicate" hand-overs
                state = self.gateway.call_state(call_id)
                result = state.result or {}
                if state.state == "finished" and result.get("outcome") == "duplicate" and result.get("owner"):
                    call_id = result["owner"]
                    continue
                break
            progress = self._json(f"{run}/{runfolder.PROGRESS}") or {}
            if state.state == "running":
                return RunStatus("running", progress)
            return self._verdict(run, state, progress)

    def _verdict(self, run: str, state: CallState, progress: dict) -> RunStatus:
        """A call that ended: the run folder on the Volume has the last word."""
        if self.gateway.read_file(f"{run}/{runfolder.DONE}") is not None:
            return RunStatus("succeeded", progress)
        error = self._json(f"{run}/{runfolder.ERROR}")
        tail = self._log_tail(run)
        if error:
            return RunStatus("failed", progress, f"{error.get('error') or 'training failed'}\n{tail}".strip())
        result = state.result or {}
        if state.state == "finished" and result.get("outcome") == "done":
            raise TransientError(
                f"the call reports {run} done but done.json is not visible on the Volume yet"
            )
        if state.state == "finished" and result.get("error"):
            return RunStatus("failed", progress, str(result["error"]))
        if state.state == "expired":
            reason = (
                "Modal no longer keeps this call's result (results expire after about 7 days) and the run "
                "folder has neither done.json nor error.json"
            )
        else:
            reason = state.error or f"the call ended ({state.state}) without done.json or error.json"
        return RunStatus("failed", progress, f"{reason}. Last lines of the log:\n{tail}".strip())

    def _log_tail(self, run: str, lines: int = 20) -> str:
        raw = self.gateway.read_file(f"{run}/{runfolder.LOG}") or b""
        return "\n".join(raw.decode(errors="replace").splitlines()[-lines:])

    # ------------------------------------------------------------ fetch and cancel

    def fetch(self, handle: dict[str, Any], dest: Path) -> None:
        run = remote.run_path(handle["run_id"])
        dest.mkdir(parents=True, exist_ok=True)
        with guarded(live_run=True):
            listing = {Path(e.path).name: e for e in self.gateway.listdir(run) or []}
            for name in runfolder.ARTIFACTS:
                entry = listing.get(name)
                if entry is None:
                    raise PermanentError(
                        f"the run finished but {run}/{name} is not on the Volume "
                        f"{self.settings.modal_volume!r}"
                    )
                size = self.gateway.download(f"{run}/{name}", dest / name)
                if size != entry.size:
                    (dest / name).unlink(missing_ok=True)
                    raise TransientError(
                        f"{run}/{name}: downloaded {size} bytes, the Volume lists {entry.size}"
                    )

    def cancel(self, handle: dict[str, Any]) -> None:
        run = remote.run_path(handle["run_id"])
        with guarded(live_run=True):
            owner = self._json(f"{run}/{remote.OWNER}") or {}
            for call_id in dict.fromkeys(filter(None, [handle.get("call_id"), owner.get("call_id")])):
                self.gateway.cancel(call_id)
