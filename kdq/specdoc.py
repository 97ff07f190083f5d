"""The spec reference (docs/spec-reference.md), generated from the pydantic models.

python -m kdq.specdoc > docs/spec-reference.md       (a test keeps the file in sync)
"""

from __future__ import annotations

import json
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from kdq.spec import ExperimentSpec
from kdq.specfile import MAX_SWEEP

HEADER = f"""# Spec reference

Generated from the pydantic models in `kdq/spec.py` by `python -m kdq.specdoc`; a test fails when
this file and the models disagree. Unknown keys are errors, and every error names the file, the
field, the value and what is allowed.

A spec file is TOML. Every section is optional; `name` defaults to the file name. A `[sweep]` table
maps dotted keys to lists and expands into their cartesian product (at most {MAX_SWEEP} experiments):

```toml
name = "hinton"
[distill]
loss = "hinton"
[sweep]
"distill.temperature" = [2.0, 4.0, 8.0]
"distill.alpha" = [0.1, 0.3]
```

On the command line, `kdq enqueue FILE --set distill.temperature=8` overrides any field (values are
read as TOML: `4`, `0.3`, `true`, `"text"`; a bare word is a string).
"""


SEARCH_SPACE = """A `[search]` table turns the spec into a search (docs/search.md): Optuna proposes each
trial from the results so far and stops bad ones early. Each key of `[search.space]` is a dotted field;
its value is a range `{ low = ..., high = ..., log = true }` (whole numbers for an integer field) or a
list of choices. Every corner of the space must be a valid spec: it is checked at `kdq enqueue`, with
every student of the space size-checked, and the first `parallel` trials are queued at once.

The sampler is TPE, or NSGA-II for `objective = "f1_and_size"`: two sides at once, the holdout F1 up and
the exported model file's MiB (`model_mb` in metrics.json) down. Such a search has a Pareto front, not
one best (`kdq search status` lists it), and no pruner: Optuna stops trials of single-objective studies
only, so `pruner = "successive_halving"` with it is refused at `kdq enqueue`.

```toml
[search]
trials = 24
parallel = 2
objective = "holdout_f1"
[search.space]
"train.lr" = { low = 1e-4, high = 1e-2, log = true }
"distill.temperature" = { low = 1.0, high = 8.0 }
"student.name" = ["shufflenet_v2_x0_5", "mobilenet_v3_small"]
```"""


def _type(annotation) -> str:
    if typing.get_origin(annotation) is dict:
        return "table"
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if args:
        return " or ".join(_type(a) for a in args)
    return {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "none"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _limits(field) -> str:
    out = []
    for meta in field.metadata:
        for attr, sym in (
            ("ge", "≥"),
            ("gt", ">"),
            ("le", "≤"),
            ("lt", "<"),
            ("min_length", "min length"),
            ("max_length", "max length"),
            ("pattern", "matches"),
        ):
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sym} `{value}`")
    return ", ".join(out)


def _default(field) -> str:
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, BaseModel):
        return ""
    return f"`{json.dumps(field.default)}`"


def section(name: str, model: type[BaseModel]) -> str:
    lines = [f"## `[{name}]`", "", "| key | type | default | limits | meaning |", "|---|---|---|---|---|"]
    lines.extend(_row(key, field) for key, field in model.model_fields.items())
    return "\n".join(lines)


def _row(key: str, field, meaning: str = "") -> str:
    cells = (f"`{key}`", _type(field.annotation), _default(field), _limits(field))
    return f"| {' | '.join(cells)} | {field.description or meaning} |"


def _model(annotation) -> type[BaseModel] | None:
    """The section model of a field: ``Model``, or ``Model | None`` for an optional one (``[search]``)."""
    for a in (annotation, *typing.get_args(annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def render() -> str:
    top = {k: f for k, f in ExperimentSpec.model_fields.items() if _model(f.annotation) is None}
    parts = [
        HEADER,
        "## Top level",
        "",
        "| key | type | default | limits | meaning |",
        "|---|---|---|---|---|",
    ]
    name = "Experiment name (default: the file name; a sweep adds its values)."
    parts.extend(_row(key, field, name) for key, field in top.items())
    parts.append("")
    for key, field in ExperimentSpec.model_fields.items():
        if key not in top:
            parts.extend([section(key, _model(field.annotation)), ""])
    parts.extend([SEARCH_SPACE, ""])
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
