"""One row of the experiments table, as the rest of kdq sees it (read-only; the store writes)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, NamedTuple

from kdq.stages import Stage

if TYPE_CHECKING:
    from kdq.spec import ExperimentSpec

JSON_FIELDS = ("handle", "progress", "metrics")


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    stage: Stage
    backend: str
    attempt: int
    spec_hash: str
    spec_json: str
    source: str | None
    priority: int
    run_id: str | None
    handle: dict | None
    progress: dict | None
    metrics: dict | None
    val_f1: float | None
    teacher_f1: float | None
    artifacts: str | None
    error: str | None
    cancel_requested: bool
    submit_requested: bool
    server_attempt: int | None
    server_score: float | None
    server_rank: int | None
    search: str | None
    trial: int | None
    resume_from: str | None  # the run whose checkpoint this attempt starts from (kdq retry)
    refit_of: int | None  # the experiment this one retrains on every picture (data.refit, kdq.refit)
    created_at: float
    updated_at: float
    next_check_at: float | None

    @property
    def spec(self) -> ExperimentSpec:
        from kdq.spec import ExperimentSpec  # here: `kdq status` reads a thousand rows and few specs

        return ExperimentSpec.model_validate_json(self.spec_json)

    @property
    def from_scratch(self) -> bool:
        """Asked for pretrained weights, trained from scratch: they did not load (the training records
        ``pretrained_loaded``)."""
        return (self.metrics or {}).get("pretrained_loaded") is False and self.spec.student.wants_weights

    @classmethod
    def from_row(cls, row: dict) -> Experiment:
        values = {name: row.get(name) for name in _COLUMNS}
        for key in JSON_FIELDS:
            values[key] = json.loads(row[key]) if row[key] else None
        for key in ("cancel_requested", "submit_requested"):
            values[key] = bool(row[key])
        values.update(stage=Stage(row["stage"]), priority=row["priority"] or 0, spec_json=row["spec"])
        return cls(**values)

    def summary(self) -> dict[str, Any]:
        """A JSON-able view for ``--json`` output."""
        return {
            "id": self.id,
            "name": self.name,
            "stage": str(self.stage),
            "backend": self.backend,
            "attempt": self.attempt,
            "run_id": self.run_id,
            "val_f1": self.val_f1,
            "teacher_f1": self.teacher_f1,
            "server_score": self.server_score,
            "server_rank": self.server_rank,
            "server_attempt": self.server_attempt,
            "search": self.search,
            "trial": self.trial,
            "resume_from": self.resume_from,
            "refit_of": self.refit_of,
            "progress": self.progress,
            "error": self.error,
            "artifacts": self.artifacts,
            "spec_hash": self.spec_hash,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class Outline(NamedTuple):
    """The few columns that decide whether ``kdq status`` shows an experiment (kdq.cli.views.pick):
    read for every row, so that only the rows shown are read whole."""

    id: int
    stage: Stage
    priority: int
    updated_at: float | None
    server_attempt: int | None


_COLUMNS = tuple(f.name for f in fields(Experiment) if f.name != "spec_json")  # once, not per row


def local_f1(metrics: dict | None) -> tuple[float | None, tuple[float, float] | None, bool]:
    """(F1, its 90% interval, whether it is the holdout's): ``holdout_f1`` when the run has one; a refit
    (kdq.refit), which has none, its parent's."""
    m = metrics or {}
    if m.get("holdout_f1") is not None:
        ci = m.get("holdout_f1_ci")
        return float(m["holdout_f1"]), (float(ci[0]), float(ci[1])) if ci else None, True
    if m.get("parent_f1") is not None:
        ci = m.get("parent_f1_ci")
        return float(m["parent_f1"]), (float(ci[0]), float(ci[1])) if ci else None, bool(m["parent_holdout"])
    return (None if m.get("val_f1") is None else float(m["val_f1"])), None, False
