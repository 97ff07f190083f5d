"""The real Modal app objects, built offline: what the training function asks Modal for, what the image
installs. The app's declarations are module-level values of jobs/modal_app.py, read here as such;
Modal's own objects are only built (offline) and checked through their public attributes."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
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


def test_the_training_class_packs_experiments_with_its_defaults(app_module):
    """One input per experiment, up to backend.pack at once in a container; a bounded pool of GPU
    containers kept warm a short while; one retry; Modal's timeout only a backstop (each input stops
    itself at its spec's timeout, and a timeout per spawn would give every spec a pool of its own)."""
    m = app_module(KDQ_MODAL_MAX_RUNNING="8")
    assert isinstance(m.Trainer, modal.Cls) and m.app.name == "kdq"
    opts = m.CLASS_OPTIONS
    assert opts["gpu"] == BackendSpec().gpu and m.PACK == BackendSpec().pack == 4
    assert opts["max_containers"] == 2 and 0 < opts["scaledown_window"] <= 300
    assert opts["timeout"] >= BackendSpec.model_fields["timeout_min"].metadata[-1].le * 60
    assert opts["retries"].max_retries == 1 and "single_use_containers" not in opts
    assert opts["memory"] >= 16 * 1024  # spawns size it from the dataset and the pack
    assert opts["cpu"] >= 8  # not Modal's 1/8-core default: decode, holdout and export run on it
    assert "kdq-hf" in repr(m.hf_secret) and "kdq-test-vol" in repr(m.volume)
    assert isinstance(m.live, modal.Dict)  # the leases: one training per run, whatever was spawned
    other = m.Trainer.with_options(gpu="A100-80GB", memory=40_000, max_containers=3).with_concurrency(
        max_inputs=2
    )
    assert isinstance(other, modal.Cls)  # what a spawn does (kdq.backends.modal_gateway)
    train = inspect.unwrap(m.Trainer._get_user_cls().train._get_raw_f())
    assert inspect.iscoroutinefunction(train)  # async inputs are cancelled one by one


def test_the_decode_function_asks_for_cpus_and_no_gpu(app_module):
    """A dataset's pictures are decoded once, in a function of their own on CPUs: no GPU bills for
    JPEG decoding, and the name the worker spawns it by is the one the app declares."""
    from kdq.backends.modal_gateway import DECODER

    m = app_module()
    assert isinstance(m.decode, modal.Function) and m.decode._tag_ == DECODER
    opts = m.DECODE_OPTIONS
    assert "gpu" not in opts and opts["cpu"] >= 8 and opts["memory"] >= 16 * 1024
    assert opts["retries"].max_retries == 1 and opts["timeout"] <= 2 * 60 * 60
    other = m.decode.with_options(memory=32 * 1024)  # what a spawn does (kdq.backends.modal_gateway)
    assert isinstance(other, modal.Function)


def test_the_bounds_are_sized_to_a_run_that_bills_minutes():
    """A normal run bills 2-4 minutes, a first run that builds the teacher cache about 10: a hung or
    CPU-bound attempt stops at 20 minutes, and a run with all its attempts at 40."""
    modal, local = BackendSpec(kind="modal"), BackendSpec()
    assert (modal.attempt_min, modal.max_gpu_min) == (20, 40)
    assert local.attempt_min == 240  # a CPU trains for hours
    assert BackendSpec(kind="modal", timeout_min=45).attempt_min == 45


def test_the_image_pins_everything_training_imports(app_module):
    m = app_module()
    assert m.TORCH == ["torch==2.14.1", "torchvision==0.29.1"] and m.TORCH_INDEX is None
    assert all("==" in p for p in m.PACKAGES) and m.UV_VERSION.count(".") == 2
    names = {p.split("==")[0] for p in m.PACKAGES}
    assert {"timm", "transformers", "numpy", "scipy", "sentencepiece", "protobuf"} <= names
    assert isinstance(m.image, modal.Image)


def test_a_cuda_build_of_torch_comes_from_the_pytorch_index(app_module):
    """torch and torchvision from the PyTorch index alone, in their own layer; every other pin from PyPI
    (with that index as an extra one, uv would look for numpy and pillow only there)."""
    m = app_module(KDQ_MODAL_TORCH="2.14.1+cu130")
    assert m.TORCH == ["torch==2.14.1+cu130", "torchvision==0.29.1+cu130"]
    assert m.TORCH_INDEX == "https://download.pytorch.org/whl/cu130"
    assert not any(p.startswith(("torch==", "torchvision==")) for p in m.PACKAGES)
    source = Path(m.__file__).read_text()
    assert "extra_index_url" not in source
    assert ".uv_pip_install(*TORCH, index_url=TORCH_INDEX, uv_version=UV_VERSION)" in source
    assert ".uv_pip_install(*PACKAGES, uv_version=UV_VERSION)" in source


@pytest.mark.parametrize(
    "torch, vision",
    [("2.14.1", "0.29.1"), ("2.5.0", "0.20.0"), ("2.8", "0.23.0"), ("2.9.1+cu128", "0.24.1+cu128")],
)
def test_torchvision_matches_torch(app_module, torch, vision):
    assert app_module().torch_packages(torch)[0] == [f"torch=={torch}", f"torchvision=={vision}"]


def test_torch_1_is_refused_with_the_setting_named(app_module):
    with pytest.raises(ValueError, match="KDQ_MODAL_TORCH"):
        app_module().torch_packages("1.13.1")


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """The modules a file imports at module level, and those it imports inside functions (what only
    type checkers read, under ``if TYPE_CHECKING:``, left out)."""
    import ast

    def names(node) -> set[str]:
        if isinstance(node, ast.Import):
            return {a.name for a in node.names}
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            return {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        return set()

    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for top in ast.walk(tree)
        if isinstance(top, ast.If) and "TYPE_CHECKING" in ast.unparse(top.test)
        for n in ast.walk(top)
    }
    top_level = {id(n) for n in tree.body}
    found = [n for n in ast.walk(tree) if id(n) not in typing_only]
    return (
        set().union(*(names(n) for n in found if id(n) in top_level)),
        set().union(*(names(n) for n in found if id(n) not in top_level)),
    )


def test_the_image_holds_every_package_the_container_code_imports(app_module):
    """Follow kdq's imports from what the container runs (the app and `python -m kdq.train`): each
    package outside the standard library and kdq must be pinned in the image (modal and what it
    requires come with the container).
    Imports inside functions are followed within the training package, where they run."""
    import re
    from importlib.metadata import packages_distributions, requires

    m = app_module()
    todo, seen, third = ["jobs.modal_app", "kdq.train.__main__"], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = REPO.joinpath(*name.split(".")).with_suffix(".py")
        if not path.is_file():
            path = REPO.joinpath(*name.split("."), "__init__.py")
        if not path.is_file():
            continue  # `from kdq import runfolder` reads as kdq.runfolder: that one is tried too
        module_level, in_functions = _imports(path)
        followed = module_level | (in_functions if name.startswith(("kdq.train", "jobs")) else set())
        for imported in module_level | in_functions:
            top = imported.split(".")[0]
            if top in ("kdq", "jobs"):
                if imported in followed:
                    parts = imported.split(".")
                    todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    dists = packages_distributions()
    with_modal = {re.split(r"[^A-Za-z0-9_.-]", r, maxsplit=1)[0] for r in requires("modal") or []}
    pinned = {p.split("==")[0] for p in m.PACKAGES + m.TORCH} | {"modal"} | with_modal  # modal brings its own
    pinned = {p.lower().replace("_", "-") for p in pinned}
    missing = {t for t in third if not {d.lower().replace("_", "-") for d in dists.get(t, [t])} & pinned}
    assert not missing, (
        f"imported in the container but not in jobs/modal_app.py's PACKAGES: {sorted(missing)}"
    )


def test_the_image_carries_the_graders_operator_list_the_export_reads(app_module):
    from kdq import grader_ops

    ignored = app_module().SOURCE_IGNORED
    listing = grader_ops.LIST.relative_to(REPO)
    assert listing.is_relative_to("kdq") and not ignored(listing)  # Modal's default copies .py files alone
    assert not ignored(Path("kdq/verify.py")) and ignored(Path("kdq/__pycache__/verify.cpython-311.pyc"))
