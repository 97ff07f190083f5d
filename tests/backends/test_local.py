"""The local backend's cancel when all it has is the run id (a launch whose handle was never kept)."""

from __future__ import annotations

import json
import time

from kdq import runfolder
from kdq.backends.local import LocalBackend
from kdq.spec import ExperimentSpec

SPEC = {
    "name": "tiny-local",
    "student": {"library": "kdq", "name": "tiny_cnn"},
    "teacher": {"kind": "none"},
    "distill": {"loss": "ce"},
    "train": {"epochs": 500, "batch_size": 32, "image_size": 32, "device": "cpu", "patience": None},
    "data": {"dataset": "synth", "decode_size": 40},
    "submit": {"policy": "never"},
}


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_cancel_with_only_the_run_id_stops_the_training(settings):
    from kdq.synth import synth

    synth(settings.datasets_dir / "synth", per_class=4, seed=0, size_range=(40, 48), balanced=True)
    backend = LocalBackend(settings)
    handle = backend.launch("l-1", ExperimentSpec.model_validate(json.loads(json.dumps(SPEC))))
    run_dir = backend.run_dir("l-1")
    wait_for(lambda: runfolder.is_running(run_dir))
    backend.cancel({"run_id": "l-1"})
    wait_for(lambda: not runfolder.is_running(run_dir))
    assert handle["pid"]


def test_a_hub_teacher_this_user_cannot_read_refuses_the_launch_at_once_and_pauses(settings, monkeypatch):
    """No training process, no transient wait: one whole line saying what to do; an unreachable Hub
    does not stop a launch (the weights may be in the local cache)."""
    import huggingface_hub.constants
    from hf_hub import GATED, serve

    from kdq.errors import PermanentError
    from kdq.steps import Context, advance
    from kdq.store import Store

    (settings.datasets_dir / "synth").mkdir(parents=True)
    gated = ExperimentSpec.model_validate({**SPEC, "teacher": {"model": "google/medsiglip-448"}})
    monkeypatch.setenv("HF_TOKEN", GATED)
    from kdq.settings import Settings

    settings = Settings()
    with serve() as hub, Store.open(settings) as store:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        backend = LocalBackend(settings)
        try:
            backend.launch("l-2", gated)
            raise AssertionError("launched")
        except PermanentError as exc:
            assert str(exc).startswith("your Hugging Face account has not accepted the terms of google/med")
            assert str(exc).endswith("then the paused experiments go on by themselves") and "\n" not in str(
                exc
            )
        assert not backend.run_dir("l-2").exists()  # no training was started
        [exp_id] = store.add([(None, gated)])
        ctx = Context(settings, store)
        for _ in range(3):  # queued -> launching, then paused (kdq/pause.py): back in line, holding no slot
            advance(ctx, exp_id)
        exp = store.get(exp_id)
        [paused] = [e["message"] for e in store.events(exp_id) if e["kind"] == "paused"]
        assert exp.stage == "queued" and "accept them" in paused
        assert [e for e in store.events(exp_id) if e["kind"] == "transient"] == []
        assert GATED not in paused
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # offline
        backend.cancel(backend.launch("l-3", gated))  # the check could not be made: it launches


def test_a_relaunch_after_a_worker_crash_keeps_the_trainings_start(settings, monkeypatch):
    """The worker died after the launch and lost its handle; the next launch finds the training alive
    and adopts it: backend.timeout_min still counts from the training's start, not from the relaunch."""
    from kdq.synth import synth

    synth(settings.datasets_dir / "synth", per_class=4, seed=0, size_range=(40, 48), balanced=True)
    backend = LocalBackend(settings)
    spec = ExperimentSpec.model_validate(json.loads(json.dumps(SPEC)))
    first = backend.launch("l-4", spec)
    try:
        wait_for(lambda: runfolder.is_running(backend.run_dir("l-4")))
        later = time.time() + 3600
        monkeypatch.setattr("kdq.backends.local.time.time", lambda: later)
        again = backend.launch("l-4", spec)  # the worker restarted an hour later
        assert again["pid"] == first["pid"] and again["started_at"] == first["started_at"]
        short = {**spec.model_dump(mode="json"), "backend": {"timeout_min": 30}}
        (backend.run_dir("l-4") / runfolder.SPEC).write_text(json.dumps(short))
        status = backend.poll(again)  # an hour after the start: past a 30-minute timeout
        assert status.state == "failed" and "timeout_min" in status.error
    finally:
        monkeypatch.undo()
        backend.cancel(first)
        wait_for(lambda: not runfolder.is_running(backend.run_dir("l-4")))
