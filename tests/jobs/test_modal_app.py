"""The real Modal app objects, built offline: what the training function asks Modal for, what the image
installs. The app's declarations are module-level values of jobs/modal_app.py, read here as such;
Modal's own objects are only built (offline) and checked through their public attributes."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import modal
import pytest

from kdq.spec import BackendSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_module(monkeypatch):
    def load(**env):
        monkeypatch.setenv("KDQ_MODAL_TORCH", "2.14.1")
        monkeypatch.setenv("KDQ_MODAL_VOLUME", "kdq-test-vol")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # Under pytest, tests/jobs can shadow the real `jobs` package as a namespace package; Modal looks
        # up the package's folder, so give it the real one for the length of the test.
        spec = importlib.util.spec_from_file_location(
            "jobs", REPO / "jobs" / "__init__.py", submodule_search_locations=[str(REPO / "jobs")]
        )
        package = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(package)
        monkeypatch.setitem(sys.modules, "jobs", package)
        monkeypatch.delitem(sys.modules, "jobs.modal_app", raising=False)
        return importlib.import_module("jobs.modal_app")

    yield load
    sys.modules.pop("jobs.modal_app", None)


def test_the_training_function_is_built_with_its_defaults(app_module):
    m = app_module()
    assert isinstance(m.train, modal.Function) and m.app.name == "kdq"
    opts = m.FUNCTION_OPTIONS
    assert opts["gpu"] == BackendSpec().gpu and opts["timeout"] == BackendSpec().timeout_min * 60
    assert opts["retries"].max_retries == 2 and opts["single_use_containers"] is True
    assert opts["memory"] >= 16 * 1024  # spawns size it from the dataset; the default is generous
    assert "kdq-hf" in repr(m.hf_secret) and "kdq-test-vol" in repr(m.volume)
    other = m.train.with_options(gpu="A100-80GB", timeout=600, memory=40_000)  # what a spawn does
    assert isinstance(other, modal.Function)


def test_the_image_pins_everything_training_imports(app_module):
    m = app_module()
    assert m.PACKAGES[:2] == ["torch==2.14.1", "torchvision==0.29.1"] and m.TORCH_INDEX is None
    assert all("==" in p for p in m.PACKAGES)
    names = {p.split("==")[0] for p in m.PACKAGES}
    assert {"timm", "transformers", "numpy", "scipy", "sentencepiece", "protobuf"} <= names
    assert isinstance(m.image, modal.Image)


def test_a_cuda_build_of_torch_comes_from_the_pytorch_index(app_module):
    m = app_module(KDQ_MODAL_TORCH="2.14.1+cu130")
    assert m.PACKAGES[:2] == ["torch==2.14.1+cu130", "torchvision==0.29.1+cu130"]
    assert m.TORCH_INDEX == "https://download.pytorch.org/whl/cu130"


@pytest.mark.parametrize(
    "torch, vision",
    [("2.14.1", "0.29.1"), ("2.5.0", "0.20.0"), ("2.8", "0.23.0"), ("2.9.1+cu128", "0.24.1+cu128")],
)
def test_torchvision_matches_torch(app_module, torch, vision):
    assert app_module().torch_packages(torch)[0] == [f"torch=={torch}", f"torchvision=={vision}"]


def test_torch_1_is_refused_with_the_setting_named(app_module):
    with pytest.raises(ValueError, match="KDQ_MODAL_TORCH"):
        app_module().torch_packages("1.13.1")
