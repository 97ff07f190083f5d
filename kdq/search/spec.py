"""A ``[search]`` table against the spec: every key of its space must be a field of the spec, and every
corner of the space (each end of each range, each choice, in every combination) must be a valid spec, so
no trial the sampler proposes can fail validation later. Then the spec of each trial: the search's
document with the trial's parameters set. Pure. The models are ``kdq.search.space``; ``kdq.specfile``
expands a document with a ``[search]`` table into its first trials.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

from pydantic import BaseModel

from kdq.search.space import SearchSpec
from kdq.spec import ExperimentSpec

MAX_CORNERS = 512  # beyond this, corners are checked one dimension at a time


# ---------------------------------------------------------------- the space against the spec


def _leaf(key: str) -> tuple[Any, str | None]:
    """The pydantic field a dotted key names, or a problem saying which keys exist."""
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


def check_space(space: Any, where: str) -> list[str]:
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


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set a dotted field (``distill.temperature``) in a spec document as TOML parses it, making the
    tables on the way; ``KeyError`` when a part of the way is a value, not a table."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise KeyError(f"{'.'.join(parts[:-1])} is not a table")
        node = child
    node[parts[-1]] = value


def with_params(doc: dict, params: dict[str, Any]) -> dict:
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


def trial_spec(doc: dict, params: dict[str, Any], number: int) -> ExperimentSpec:
    """The spec of trial ``number``: the search's document with the trial's parameters set."""
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
    doc = document(spec)
    seen, out = set(), []
    for point in corners(spec.search):
        student = ExperimentSpec.model_validate(with_params(doc, point)).student
        if (student.library, student.name) not in seen:
            seen.add((student.library, student.name))
            out.append(student)
    return out
