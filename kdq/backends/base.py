"""The types every backend shares. Backends run kdq's training entry point somewhere and report on
it through its run folder.

Every backend has the same five verbs. ``handle`` is a small JSON-able dict the backend gets back
on every later call (the worker stores it); ``run_id`` is fixed before launch so that a retried
launch finds the run it already started instead of starting a second one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kdq.spec import ExperimentSpec


@dataclass(frozen=True)
class RunStatus:
    state: str  # "running" | "succeeded" | "failed"
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Backend(Protocol):
    def launch(self, run_id: str, spec: ExperimentSpec) -> dict[str, Any]: ...

    def poll(self, handle: dict[str, Any]) -> RunStatus: ...

    def fetch(self, handle: dict[str, Any], dest: Path) -> None:
        """Copy ``runfolder.ARTIFACTS`` of the finished run into ``dest``."""

    def cancel(self, handle: dict[str, Any]) -> None: ...
