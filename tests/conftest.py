"""Shared fixtures. Every test gets its own KDQ_HOME; nothing touches the repository's .kdq."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from spectext import tiny_spec

# A session-wide home, so that nothing a test forgets to point elsewhere lands in the repository.
os.environ.setdefault("KDQ_HOME", tempfile.mkdtemp(prefix="kdq-session-"))
# The student check's verdicts, shared by every test's home (they depend on the installed libraries only):
# each enqueue of a known student then starts no torch process. tests/test_preflight.py, and the tests
# that run kdq without the KDQ_* variables (tests/cli/test_imports.py), keep their own, empty.
os.environ["KDQ_STUDENT_CACHE"] = os.path.join(tempfile.mkdtemp(prefix="kdq-students-"), "students.json")
for _var in ("KDQ_TOKEN", "KDQ_TEAM", "KDQ_SERVER_URL", "HF_TOKEN", "KDQ_HF_TOKEN"):
    os.environ.pop(_var, None)
# No test reaches huggingface.co: the Hub is a port nothing listens on (tests/hf_hub.py stands in for it).
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh KDQ_HOME for this test."""
    h = tmp_path / "home"
    monkeypatch.setenv("KDQ_HOME", str(h))
    monkeypatch.chdir(tmp_path)  # no stray .env from the working directory
    return h


@pytest.fixture
def settings(home: Path):
    from kdq.settings import Settings

    return Settings()


@pytest.fixture
def store(settings):
    from kdq.store import Store

    with Store.open(settings) as s:
        yield s


TINY_SPEC = tiny_spec()  # the tiny student, 2 epochs, policy "never" (tests/spectext.py)


@pytest.fixture
def tiny_spec_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(TINY_SPEC)
    return p


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """A small generated dataset, made once per session (read-only by convention)."""
    from kdq.synth import synth

    root = tmp_path_factory.mktemp("synth") / "synth"
    synth(root, per_class=16, seed=0)
    return root


@pytest.fixture
def hw3(settings, synth_dataset) -> Path:
    """The session dataset as the default ``data.dataset = "hw3"`` (enqueue checks a local spec's dataset)."""
    return linked(settings, synth_dataset, "hw3")


@pytest.fixture
def dataset(settings, synth_dataset) -> Path:
    """The session dataset, visible as ``data.dataset = "synth"`` in this test's KDQ_HOME."""
    return linked(settings, synth_dataset, "synth")


def linked(settings, target: Path, name: str) -> Path:
    settings.datasets_dir.mkdir(parents=True, exist_ok=True)
    link = settings.datasets_dir / name
    link.symlink_to(target, target_is_directory=True)
    return link
