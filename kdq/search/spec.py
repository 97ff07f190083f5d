"""The ``[search]`` table of a spec: how many trials, how many at once, what to maximise, how to prune,
and the space the sampler draws from. Pure: a document in, validated trial specs (or a ``SpecError``) out.

    [search]
    trials = 24                      # total trials, across worker restarts
    parallel = 2                     # trials training at once
    objective = "holdout_f1"         # or "expected_score", or "f1_and_size" (two-sided: NSGA-II)
    pruner = "successive_halving"    # or "none" (the two-sided objective's default and only choice)
    [search.space]
    "train.lr" = { low = 1e-4, high = 1e-2, log = true }
    "student.name" = ["shufflenet_v2_x0_5", "mobilenetv3_small_100"]

Every key of the space must be a field of the spec; every corner of the space (each end of each range,
each choice, in every combination) must be a valid spec, so no trial the sampler proposes can fail
validation later. ``kdq enqueue`` of such a document queues the first ``parallel`` trials.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from kdq.spec import ExperimentSpec

MAX_TRIALS = 256
MAX_CORNERS = 512  # beyond this, corners are checked one dimension at a time
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
    pruner: Literal["successive_halving", "none"] = Field(
        "successive_halving",
        description="Stop bad trials early on their per-epoch validation F1; `none` for `f1_and_size` "
        "(its default: Optuna prunes single-objective studies only).",
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


# ---------------------------------------------------------------- the space against the spec


def _leaf(key: str) -> tuple[Any, str | None]:
    """The pydantic field a dotted key names, or a problem saying which keys exist."""
    from kdq.spec import ExperimentSpec

    model: Any = ExperimentSpec
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = {k: f for k, f in model.model_fields.items() if i or k not in ("name", "search")}
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            return None, f"not a field of the spec; fields at {where}: {', '.join(fields)}"
        field = fields[part]
        if i < len(parts) - 1:
            if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
                return None, f"{'.'.join(parts[: i + 1])} is a value, not a section"
            model = field.annotation
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            return None, f"a section, not a field; e.g. {key}.{next(iter(field.annotation.model_fields))}"
    return field, None


def is_int_field(key: str) -> bool:
    field, _ = _leaf(key)
    return field is not None and field.annotation in (int, int | None)


def _check_space(space: Any, where: str) -> list[str]:
    if not isinstance(space, dict) or not space:
        example = '"train.lr" = { low = 1e-4, high = 1e-2 }'
        return [f"{where}.space: must be a table, e.g. [search.space] {example}"]
    problems = []
    for key, value in space.items():
        at = f'{where}.space."{key}"'
        field, problem = _leaf(key)
        if problem:
            problems.append(f"{at}: {problem}")
            continue
        if isinstance(value, list):
            if not value:
                problems.append(f"{at}: an empty list; give the choices, e.g. [1, 2]")
            continue
        if not isinstance(value, dict) or not {"low", "high"} <= value.keys():
            problems.append(f"{at}: must be {{ low = ..., high = ... }} (log = true optional) or a list")
            continue
        low, high = value["low"], value["high"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
            problems.append(f"{at}: low and high must be numbers")
        elif not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            problems.append(f"{at}: needs low < high (got low = {low}, high = {high})")
        elif value.get("log") and low <= 0:
            problems.append(f"{at}: log = true needs low > 0 (got {low})")
        elif is_int_field(key) and not (float(low).is_integer() and float(high).is_integer()):
            problems.append(f"{at}: {key} is a whole number: give whole low and high")
    return problems


def corners(search: SearchSpec) -> list[dict[str, Any]]:
    """Every combination of each range's ends and each choice (one dimension at a time when too many)."""
    ends = {
        k: list(v) if isinstance(v, list) else [_typed(k, v.low), _typed(k, v.high)]
        for k, v in search.space.items()
    }
    total = math.prod(len(v) for v in ends.values())
    if total <= MAX_CORNERS:
        return [dict(zip(ends, combo)) for combo in itertools.product(*ends.values())]
    first = {k: v[0] for k, v in ends.items()}
    return [{**first, k: x} for k, values in ends.items() for x in values]


def _typed(key: str, value: float) -> float | int:
    return int(value) if is_int_field(key) else float(value)


def point_name(params: dict[str, Any]) -> str:
    short = {k.rsplit(".", 1)[-1]: v for k, v in params.items()}
    return ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in short.items())


def with_params(doc: dict, params: dict[str, Any]) -> dict:
    from kdq.specfile import set_dotted

    doc = copy.deepcopy(doc)
    for key, value in params.items():
        set_dotted(doc, key, value)
    return doc


def params_of(spec: ExperimentSpec) -> dict[str, Any]:
    """A trial's parameters, read back from its spec (the space's keys)."""
    body = spec.model_dump(mode="json")
    out = {}
    for key in spec.search.space:
        node: Any = body
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def expand_search(raw: dict, source: str, overrides: Sequence[tuple[str, Any]] = ()) -> list[ExperimentSpec]:
    """A document with a ``[search]`` table → the specs of its first ``parallel`` trials (``SpecError``)."""
    from kdq.search.study import first_params
    from kdq.spec import ExperimentSpec
    from kdq.specfile import SpecError, _describe, set_dotted

    raw = copy.deepcopy(raw)
    for key, value in overrides:
        try:
            set_dotted(raw, key, value)
        except KeyError as exc:
            raise SpecError([f"{source}: --set {key}: {exc.args[0]}"]) from None
    table = raw.pop("search")
    if "sweep" in raw:
        raise SpecError([f"{source}: a spec has [sweep] (every point) or [search] (the sampler), not both"])
    if not isinstance(table, dict):
        raise SpecError([f"{source}: search: must be a table, e.g. [search] trials = 12"])
    problems = _check_space(table.get("space"), f"{source}: search")
    table = {"name": raw.get("name"), **table}
    # The rest is checked too (with a stand-in space if the space is bad): every problem at once.
    checked = {**table, "space": {"train.seed": [0]}} if problems else table
    try:
        base = ExperimentSpec.model_validate({**raw, "search": checked})
    except ValidationError as exc:
        problems += [_describe(source, e, raw) for e in exc.errors()]
    if problems:
        raise SpecError(problems)
    search = base.search
    if search.parallel > search.trials:
        too_many = f"search.parallel = {search.parallel} is more than search.trials = {search.trials}"
        raise SpecError([f"{source}: {too_many}: lower parallel or raise trials"])
    for point in corners(search):
        try:
            ExperimentSpec.model_validate(with_params({**raw, "search": table}, point))
        except ValidationError as exc:
            where = f"{source} (search point {point_name(point)})"
            problems.extend(_describe(where, e, raw) for e in exc.errors())
    if problems:
        raise SpecError(sorted(set(problems), key=problems.index))
    doc = {**raw, "search": search.model_dump(mode="json")}
    return [
        trial_spec(doc, params, number) for number, params in enumerate(first_params(search, search.parallel))
    ]


def trial_spec(doc: dict, params: dict[str, Any], number: int) -> ExperimentSpec:
    """The spec of trial ``number``: the search's document with the trial's parameters set."""
    from kdq.spec import ExperimentSpec

    doc = with_params(doc, params)
    doc["name"] = f"{doc['search']['name']}#{number}"
    return ExperimentSpec.model_validate(doc)


def fewest_epochs(spec: ExperimentSpec) -> int:
    """The fewest epochs a trial of this search trains (``train.epochs`` may be in the space)."""
    value = spec.search.space.get("train.epochs")
    if value is None:
        return spec.train.epochs
    return int(min(value) if isinstance(value, list) else value.low)


def document(spec: ExperimentSpec) -> dict:
    """The search's document, from any one of its trials (their parameters are overwritten per trial)."""
    return spec.model_dump(mode="json")


def students(spec: ExperimentSpec) -> list[Any]:
    """Every student a search may train (for the size check at enqueue): one per choice of its space."""
    if spec.search is None:
        return [spec.student]
    from kdq.spec import ExperimentSpec

    doc = document(spec)
    seen, out = set(), []
    for point in corners(spec.search):
        student = ExperimentSpec.model_validate(with_params(doc, point)).student
        if (student.library, student.name) not in seen:
            seen.add((student.library, student.name))
            out.append(student)
    return out
