"""A small synthetic dataset shared by the training tests (tiny pictures, a few per class)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdq.synth import synth


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> tuple[Path, object]:
    """``(folder, manifest)``: 10 classes, ~8 images each, with planted duplicates and junk."""
    out = tmp_path_factory.mktemp("synth")
    man = synth(
        out,
        per_class=8,
        seed=1,
        size_range=(24, 40),
        exact_duplicates=3,
        near_duplicates=3,
        cross_class=1,
        corrupt=2,
    )
    return out, man


@pytest.fixture(scope="session")
def clean_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    synth(out, per_class=12, seed=2, size_range=(24, 40))
    return out
