"""The real Modal app objects, built offline: what the training function declares.

Modal keeps a function's options in the closure of its loader; these tests read them there (and the
image's Dockerfile commands from its layers), so they prove the definition without a network."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import modal
import pytest
from modal._utils.async_utils import synchronizer

from kdq.backends import modal_remote as remote
from kdq.spec import BackendSpec


def _closure(obj) -> dict:
    load = synchronizer._translate_in(obj)._load
    return {n: c.cell_contents for n, c in zip(load.__code__.co_freevars, load.__closure__ or [])}


def _dockerfile(image) -> list[str]:
    """Every Dockerfile command of the image's layers, base first."""
    layers, img = [], synchronizer._translate_in(image)
    while img is not None:
        cv = _closure(img)
        if "dockerfile_function" in cv:
            layers.append(cv["dockerfile_function"]("2025.06").commands)
            img = (cv.get("base_images") or {}).get("base")
        else:
            img = cv.get("base_image")
    return [c for layer in reversed(layers) for c in layer]


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_module(monkeypatch):
    monkeypatch.setenv("KDQ_MODAL_TORCH", "2.14.1")
    monkeypatch.setenv("KDQ_MODAL_VOLUME", "kdq-test-vol")
    # Under pytest, tests/jobs can shadow the real `jobs` package as a namespace package; Modal looks
    # up the package's folder, so give it the real one for the length of the test.
    spec = importlib.util.spec_from_file_location(
        "jobs", REPO / "jobs" / "__init__.py", submodule_search_locations=[str(REPO / "jobs")]
    )
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    monkeypatch.setitem(sys.modules, "jobs", package)
    monkeypatch.delitem(sys.modules, "jobs.modal_app", raising=False)
    module = importlib.import_module("jobs.modal_app")
    yield module
    sys.modules.pop("jobs.modal_app", None)


def test_the_training_function_declares_gpu_volume_secret_timeout_retries(app_module):
    fn = app_module.train
    spec = synchronizer._translate_in(fn)._spec_
    assert spec.gpus == "H100" == BackendSpec().gpu
    assert set(spec.volumes) == {remote.MOUNT}
    impl = synchronizer._translate_in
    assert spec.volumes[remote.MOUNT] is impl(app_module.volume)
    assert list(spec.secrets) == [impl(app_module.hf_secret)]
    assert "kdq-hf" in repr(app_module.hf_secret)
    opts = _closure(fn)
    assert opts["timeout"] == BackendSpec().timeout_min * 60
    assert opts["retry_policy"].retries == 2
    assert opts["single_use_containers"] is True
    assert app_module.app.name == "kdq"


def test_the_image_pins_torch_from_the_settings_and_carries_kdq(app_module):
    commands = _dockerfile(app_module.image)
    assert commands[0].startswith("FROM python:3.11")
    install = next(c for c in commands if "uv pip install" in c)
    for pin in ("torch==2.14.1", "torchvision==0.29.1", "timm==", "transformers==", "numpy=="):
        assert pin in install
    assert all("==" in word for word in install.split("--compile-bytecode")[1].split())  # everything pinned
    assert "ENV HF_HOME=/vol/cache/huggingface" in commands
    added = synchronizer._translate_in(app_module.image)._added_python_source_set
    assert {"kdq", "jobs"} <= set(added)
    mounts = synchronizer._translate_in(app_module.train)._spec_.mounts
    assert "jobs" not in repr(mounts)  # the app's own source is in the image, not mounted a second time


def test_names_come_from_the_settings(app_module):
    assert "kdq-test-vol" in repr(app_module.volume)


def test_with_options_can_pick_another_gpu_offline(app_module):
    other = app_module.train.with_options(gpu="A100-80GB", timeout=600)
    assert isinstance(other, modal.Function)


@pytest.mark.parametrize("torch, vision", [("2.14.1", "0.29.1"), ("2.5.0", "0.20.0"), ("2.8", "0.23.0")])
def test_torchvision_matches_torch(app_module, torch, vision):
    assert app_module.torchvision_for(torch) == vision
