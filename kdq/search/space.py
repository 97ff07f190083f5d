"""The ``[search]`` table's models: how many trials, how many at once, what to maximise, how to prune,
and the space the sampler draws from. Pure: it imports nothing of kdq (``kdq.spec`` holds it as a
section; ``kdq.search.spec`` checks the space against the spec's fields and expands it into trials).

    [search]
    trials = 24                      # total trials, across worker restarts
    parallel = 2                     # trials training at once
    objective = "holdout_f1"         # or "expected_score", or "f1_and_size" (two-sided: NSGA-II)
    pruner = "hyperband"             # or "successive_halving", or "none" (the two-sided objective's only one)
    [search.space]
    "train.lr" = { low = 1e-4, high = 1e-2, log = true }
    "student.name" = ["shufflenet_v2_x0_5", "mobilenetv3_small_100"]
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TRIALS = 256
TWO_SIDED = "f1_and_size"  # holdout F1 up, the exported file's MiB down: a Pareto front, not one best
Choice = str | int | float | bool


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    low: float | int
    high: float | int
    log: bool = False


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str | None = Field(None, description="The search's name; default: the spec's `name`.")
    trials: int = Field(..., ge=1, le=MAX_TRIALS, description="Total trials, across worker restarts.")
    parallel: int = Field(1, ge=1, le=64, description="Trials live at once (the launch gate may hold fewer).")
    objective: Literal["holdout_f1", "expected_score", "f1_and_size"] = Field(
        "holdout_f1",
        description="What a trial is scored by: `holdout_f1`, `expected_score` (kdq.course), or "
        "`f1_and_size`: holdout F1 up and the model file's MiB down, searched by NSGA-II.",
    )
    pruner: Literal["hyperband", "successive_halving", "none"] = Field(
        "hyperband",
        description="Stop bad trials early on their per-epoch validation F1: `hyperband` (two successive "
        "halvings side by side, one looking first at a sixth of the epochs, the other at a half), "
        "`successive_halving` (one, looking first at a quarter), or `none`: the only choice for "
        "`f1_and_size`, and its default (Optuna prunes single-objective studies only).",
    )
    gpu_hours: float | None = Field(None, gt=0, description="Stop proposing trials once this much is spent.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the sampler.")
    space: dict[str, Range | list[Choice]] = Field(
        ..., min_length=1, description="Dotted field → `{ low, high, log }` or a list of choices."
    )

    @model_validator(mode="before")
    @classmethod
    def _two_sided_default_pruner(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("objective") == TWO_SIDED and "pruner" not in data:
            return {**data, "pruner": "none"}
        return data

    @model_validator(mode="after")
    def _two_sided_is_not_pruned(self) -> SearchSpec:
        # Optuna's Trial.report and should_prune raise NotImplementedError in a multi-objective study.
        if self.two_sided and self.pruner != "none":
            raise ValueError(
                f'search.pruner = "{self.pruner}" cannot stop trials of objective = "{TWO_SIDED}" '
                '(Optuna prunes single-objective studies only): set pruner = "none" or leave it out, '
                'or use objective = "holdout_f1"'
            )
        return self

    @property
    def two_sided(self) -> bool:
        return self.objective == TWO_SIDED
