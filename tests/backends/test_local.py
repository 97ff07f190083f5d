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
