"""The Modal backend: kdq's training entry point in a GPU container, the run folder on a Modal Volume.

    waits   (in queued, holding no launch slot) deploy, upload the dataset, then wait while the app's
            CPU-only decode function decodes its pictures, then while one input of the training class
            builds its teacher cache, each once for every run that needs it (modal_cache.py)
    launch  a call id in launch.json or owner.json → reuse it; otherwise (one deploy or upload at a
            time) deploy if the code changed, make sure the dataset and the Hugging Face secret are
            there, write spec.json + launch.json, spawn, keep the call id in the database, then on
            the Volume
    poll    the call's state + the heartbeat (modal.Dict) or progress.json; an ended call is judged by
            the run folder; a run past backend.max_gpu_min (all attempts together) is cancelled
    fetch   stream model.pt, metrics.json, history.csv into dest, each checked against its size
    cancel  the handle's call and every call the run folder names (a handle may hold only the run id)

It talks only to a ``Gateway`` (kdq/backends/modal_gateway.py, where ``classify`` sorts the SDK's errors).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

import kdq.backends.modal_cache as modal_cache
import kdq.backends.modal_gateway as vol
from kdq import hf, runfolder
from kdq.backends.base import RunStatus
from kdq.backends.modal_data import upload_dataset
from kdq.backends.modal_errors import guarded
from kdq.backends.modal_gateway import CallState, Gateway, ModalGateway
from kdq.backends.modal_sizing import gpu_minutes, memory_mib, spawn_options
from kdq.errors import PermanentError, TransientError
from kdq.log import get_logger
from kdq.spec import ExperimentSpec
from kdq.store import Store

log = get_logger("kdq.modal")
DEPLOY_META = "modal_deploy"
QUOTA_PATIENCE_S = 30 * 60  # a launch refused for a workspace limit this long fails
_PREPARE = threading.Lock()  # with the file lock of the home: one deploy or dataset upload at a time
_REFUSED_SINCE: dict[str, float] = {}  # run id → first workspace-limit refusal, for the worker's life
EXPIRED = "the call's result expired (Modal keeps one 7 days); the run folder has no done.json or error.json"

# ---------------------------------------------------------------- code fingerprint and deploy


def code_fingerprint(settings, root: Path = vol.PACKAGE_ROOT) -> str:
    """Hash of everything the deployed app is made of: what the image carries of kdq/ and jobs/ (their
    ``.py`` and ``.json`` files: jobs/modal_app.py's ``SOURCE_IGNORED``), and the settings it reads
    (torch in the image, the Volume and secret names)."""
    named = f"torch={settings.modal_torch} volume={settings.modal_volume} secret={settings.modal_secret}\n"
    h = hashlib.sha256(named.encode())
    files = sorted(
        p for package in ("kdq", "jobs") for ext in ("py", "json") for p in (root / package).rglob(f"*.{ext}")
    )
    for path in files:
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@contextmanager
def preparing(settings) -> Iterator[None]:
    """One deploy or dataset upload at a time: across the worker's threads, and between the worker and
    the CLI (``kdq modal deploy``, ``kdq data upload``) of the same home."""
    settings.root.mkdir(parents=True, exist_ok=True)
    with _PREPARE, FileLock(settings.root / "modal-prepare.lock"):
        yield


def ensure_deployed(settings, gateway: Gateway, *, force: bool = False, show_output: bool = False) -> bool:
    """Deploy the app when the code differs from what was deployed last; returns whether it deployed."""
    with preparing(settings):
        fingerprint = code_fingerprint(settings)  # before the deploy reads the files: an edit redeploys
        with Store.open(settings) as store:
            seen = store.get_meta_json(DEPLOY_META) or {}
        if not force and seen.get("fingerprint") == fingerprint and seen.get("app") == settings.modal_app:
            return False
        log.info("deploying the Modal app", app=settings.modal_app, fingerprint=fingerprint)
        # The app names the secret: it must exist even before any Hugging Face token does.
        gateway.put_secret(settings.modal_secret, {"KDQ_SECRET": settings.modal_secret}, overwrite=False)
        gateway.deploy(show_output=show_output)
        deployed = {"fingerprint": fingerprint, "app": settings.modal_app, "at": time.time()}
        with Store.open(settings) as store:
            store.set_meta(DEPLOY_META, deployed)
    return True


# ---------------------------------------------------------------- the backend


class ModalBackend:
    def __init__(self, settings, gateway: Gateway | None = None):
        self.settings = settings
        self.gateway: Gateway = gateway or ModalGateway(settings)
        self._hf_checked: set[str] = set()

    def _json(self, path: str) -> dict | None:
        raw = self.gateway.read_file(path)
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return None

    def _put_json(self, path: str, data: dict) -> None:
        self.gateway.upload([(json.dumps(data, indent=2).encode(), path)])

    # ------------------------------------------------------------ launch

    def prepare(self, spec: ExperimentSpec) -> dict:
        """Everything a run needs before its first spawn: the app, the dataset, the Hugging Face secret.
        Returns the dataset's mark on the Volume."""
        ensure_deployed(self.settings, self.gateway)
        name = spec.data.dataset
        with preparing(self.settings):  # a second launch waits here, then finds the upload done
            mark = self._json(f"{vol.dataset_path(name)}/{vol.DATASET_MARK}")
            if mark is None:
                local = self.settings.datasets_dir / name
                if not local.is_dir():
                    raise PermanentError(
                        f"dataset {name!r} is neither on the Modal Volume {self.settings.modal_volume!r} "
                        f"nor at {local}: run `kdq data upload PATH --name {name}` (PATH: the unzipped "
                        "course dataset), then `kdq retry`"
                    )
                log.info("uploading the dataset to the Volume", dataset=name, path=str(local))
                mark = upload_dataset(self.gateway, local, name)
        teacher = spec.teacher
        if teacher.kind == "siglip" and teacher.model not in self._hf_checked:
            if not hf.is_stand_in(teacher.model):
                hf.ensure_access(self.settings, teacher.model, gateway=self.gateway)
            self._hf_checked.add(teacher.model)
        return mark

    def waits(self, run_id: str, spec: ExperimentSpec) -> str | None:
        """Why ``run_id`` waits in ``queued`` (no launch slot taken): its pictures, then its teacher cache,
        are being made, once for every experiment that needs them (modal_cache.py). ``None``: it may
        launch."""
        spec_json, d = spec.model_dump(mode="json"), spec.data
        with guarded(live_run=False):
            mark = self.prepare(spec)  # the app deployed and the dataset uploaded: the decode reads it
            key, now = modal_cache.decode_key(spec_json, mark), time.time()
            what = f"the decode of dataset {d.dataset!r} (a CPU-only function: no GPU bills meanwhile)"
            fix = f"upload the dataset again (`kdq data upload PATH --name {d.dataset}`), then `kdq retry`"
            spawn = lambda: self._spawn_decode(spec, mark)  # noqa: E731 — called once, if at all
            if why := modal_cache.made_once(self.gateway, key, spawn, what, now, fix):
                return why
            if not (key := modal_cache.cache_key(spec_json, mark)):
                return None
            what = f"the build of the teacher cache of {spec.teacher.model} on dataset {d.dataset!r}"
            spawn = lambda: self._spawn_build(spec, mark, key)  # noqa: E731
            return modal_cache.made_once(self.gateway, key, spawn, what, now)

    def _spawn_decode(self, spec: ExperimentSpec, mark: dict) -> str:
        """One call of the app's CPU-only decode function on ``spec``'s dataset; returns its id."""
        d = spec.data
        memory = memory_mib(int(mark.get("files", 0)), d.decode_size, None)
        args = dict(dataset=d.dataset, decode_size=d.decode_size, limit_per_class=d.limit_per_class)
        call_id = self._deployed(lambda: self.gateway.spawn_decode(memory_mib=memory, **args))
        log.info("spawned the decode of a dataset", dataset=d.dataset, size=d.decode_size, call_id=call_id)
        return call_id

    def _spawn_build(self, spec: ExperimentSpec, mark: dict, key: str) -> str:
        """One input of the training class that builds teacher cache ``key`` for ``spec`` and trains
        nothing, in run folder ``runs/cache-<key>-<time>``; returns its call id."""
        run_id = modal_cache.build_run_id(key, time.time())
        self.gateway.upload(
            [(spec.model_dump_json(indent=2).encode(), f"{vol.run_path(run_id)}/{runfolder.SPEC}")]
        )
        call_id = self._spawn(run_id, spec, int(mark.get("files", 0)), None, teacher_cache_only=True)
        log.info(
            "spawned the build of a teacher cache", run_id=run_id, teacher=spec.teacher.model, call_id=call_id
        )
        return call_id

    def _deployed(self, spawn: Callable[[], str]) -> str:
        """``spawn()``, and once more after a deploy when the app was stopped or deleted behind our back
        (or deployed before the function existed)."""
        from modal.exception import NotFoundError

        try:
            return spawn()
        except NotFoundError:
            ensure_deployed(self.settings, self.gateway, force=True)
            return spawn()

    def launch(self, run_id: str, spec: ExperimentSpec, resume_from: str | None = None) -> dict[str, Any]:
        """``resume_from``: an earlier run on the Volume whose checkpoint this one starts from."""
        from modal.exception import ResourceExhaustedError

        try:
            return self._launch(run_id, spec, resume_from)
        except TransientError as exc:
            if not isinstance(exc.__cause__, ResourceExhaustedError):
                raise
            minutes = (time.time() - _REFUSED_SINCE.setdefault(run_id, time.time())) / 60
            if minutes * 60 < QUOTA_PATIENCE_S:
                raise
            fix = "see the workspace's limits and billing on modal.com (or stop other apps), then `kdq retry`"
            raise PermanentError(f"{exc}. Modal kept refusing for {minutes:.0f} min: {fix}") from None

    def _launch(self, run_id: str, spec: ExperimentSpec, resume_from: str | None) -> dict[str, Any]:
        run = vol.run_path(run_id)
        with guarded(live_run=False):
            record = self._json(f"{run}/{vol.LAUNCH}") or {}
            owner = self._json(f"{run}/{vol.OWNER}") or {}
        with Store.open(self.settings) as store:
            kept = store.handle_of_run(run_id) or {}
        call_id = record.get("call_id") or owner.get("call_id") or kept.get("call_id")
        if call_id:  # launched before (a retried step, a worker that died after spawning): never twice
            if not record.get("call_id"):
                with guarded(live_run=True):
                    self._put_json(f"{run}/{vol.LAUNCH}", {**record, "call_id": call_id, "adopted": True})
            return self._handle(run_id, call_id, spec)
        with guarded(live_run=bool(record)):  # a record means a call may live: never fail it away
            mark = self.prepare(spec)
            token = uuid.uuid4().hex
            spawning = json.dumps({"state": "spawning", "token": token, "at": time.time()}).encode()
            spec_json = spec.model_dump_json(indent=2).encode()
            self.gateway.upload([(spec_json, f"{run}/{runfolder.SPEC}"), (spawning, f"{run}/{vol.LAUNCH}")])
            call_id = self._spawn(run_id, spec, int(mark.get("files", 0)), resume_from)
        # From here a call exists: its id goes to the database before anything else can fail.
        handle = self._handle(run_id, call_id, spec)
        with Store.open(self.settings) as store:
            store.record_handle(run_id, handle)
        with guarded(live_run=True):
            record = {"state": "spawned", "token": token, "call_id": call_id, "gpu": spec.backend.gpu}
            self._put_json(f"{run}/{vol.LAUNCH}", {**record, "at": time.time()})
        log.info("spawned a Modal training call", run_id=run_id, call_id=call_id, gpu=spec.backend.gpu)
        return handle

    def _spawn(self, run_id: str, spec: ExperimentSpec, images: int, resume_from: str | None, **kw) -> str:
        """One input of the training class (``kw``: ``teacher_cache_only``); returns its call id."""
        timeout_s = int(min(spec.backend.attempt_min, spec.backend.max_gpu_min) * 60)  # the input stops there
        options = spawn_options(spec, images, self.settings.modal_max_running)
        kw |= dict(options=options, timeout_s=timeout_s, resume_from=resume_from)
        return self._deployed(lambda: self.gateway.spawn(run_id, spec.data.dataset, **kw))

    def _handle(self, run_id: str, call_id: str, spec: ExperimentSpec) -> dict[str, Any]:
        b, at = spec.backend, time.time()
        return dict(run_id=run_id, call_id=call_id, gpu=b.gpu, max_gpu_min=b.max_gpu_min, launched_at=at)

    # ------------------------------------------------------------ poll

    def poll(self, handle: dict[str, Any]) -> RunStatus:
        run = vol.run_path(handle["run_id"])
        call_id = handle["call_id"]
        with guarded(live_run=True):
            for _ in range(3):  # follow at most a couple of "duplicate" hand-overs
                state = self.gateway.call_state(call_id)
                result = state.result or {}
                if state.state == "finished" and result.get("outcome") == "duplicate" and result.get("owner"):
                    call_id = result["owner"]
                    continue
                break
            beat = self.gateway.live_get(vol.run_key(handle["run_id"])) or {}  # at once, without a commit
            progress = self._json(f"{run}/{runfolder.PROGRESS}") or beat.get("progress") or {}
            if state.state != "running":
                return self._verdict(run, state, progress)
            progress = beat.get("progress") or progress
            owner = beat if beat.get("attempts") else self._json(f"{run}/{vol.OWNER}") or {}
            used = gpu_minutes(owner.get("attempts") or [], time.time())
            limit = handle.get("max_gpu_min")
            if limit is not None and used > limit:
                self.cancel(handle)
                why = (
                    f"stopped after {used:.1f} GPU-minutes over {len(owner['attempts'])} attempt(s): "
                    f"backend.max_gpu_min = {limit:g} bounds all attempts together "
                    "(backend.timeout_min bounds one; Modal retries a failed attempt once). "
                    "Raise it in the spec to allow more, then `kdq retry`."
                )
                return RunStatus("failed", progress, f"{why}\n{self._log_tail(run)}".strip())
            return RunStatus("running", progress)

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
        reason = EXPIRED if state.state == "expired" else state.error
        reason = reason or f"the call ended ({state.state}) without done.json or error.json"
        return RunStatus("failed", progress, f"{reason}. Last lines of the log:\n{tail}".strip())

    def _log_tail(self, run: str, lines: int = 20) -> str:
        raw = self.gateway.read_file(f"{run}/{runfolder.LOG}") or b""
        return "\n".join(raw.decode(errors="replace").splitlines()[-lines:])

    # ------------------------------------------------------------ fetch and cancel

    def fetch(self, handle: dict[str, Any], dest: Path) -> None:
        run = vol.run_path(handle["run_id"])
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
            for name in (n for n in sorted(listing) if n.startswith(runfolder.EVENTS)):  # beside local runs
                self.gateway.download(f"{run}/{name}", self.settings.runs_dir / handle["run_id"] / name)

    def cancel(self, handle: dict[str, Any]) -> None:
        run = vol.run_path(handle["run_id"])
        with guarded(live_run=True):
            named = [(self._json(f"{run}/{name}") or {}).get("call_id") for name in (vol.LAUNCH, vol.OWNER)]
            for call_id in dict.fromkeys(filter(None, [handle.get("call_id"), *named])):
                self.gateway.cancel(call_id)
