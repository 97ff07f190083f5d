"""CLI fixtures."""

from __future__ import annotations

import pytest
from cli_helpers import fill


@pytest.fixture
def morning(store):
    return fill(store)
