"""Spec files: TOML in, validated specs out (or one ``SpecError`` listing every problem of every file).

A spec file is one experiment, or many when it has a ``[sweep]`` table of dotted keys to lists:

    name = "hinton-shufflenet"
    [student]
    name = "shufflenet_v2_x1_0"
    [distill]
    loss = "hinton"
    [sweep]
    "distill.temperature" = [2.0, 4.0, 8.0]

A ``[search]`` table instead makes it a search: its space is checked against the spec
(``kdq.search.spec``) and its first ``parallel`` trials are drawn (``kdq.search.study``).

Only regular files are read (a pipe or a device would hang), at most ``MAX_SPEC_BYTES``; every problem
names the file, the field, the value (cut short) and the fix. ``--set KEY=VALUE`` overrides apply before
validation. The models themselves are ``kdq.spec``.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kdq.search import spec as search
from kdq.spec import ExperimentSpec

MAX_SWEEP = 256  # a sweep larger than this is almost certainly a typo
MAX_SPEC_BYTES = 1 << 20  # a spec file is a few hundred bytes; more is the wrong file
SHOWN_CHARS = 80  # a value quoted in an error is cut to this


# ---------------------------------------------------------------- errors


class SpecError(ValueError):
    """Every problem found in one or more spec files; each line names file, field, value and fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _allowed(model: type[BaseModel], loc: tuple) -> str:
    """The keys allowed at ``loc`` (for unknown-key errors)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if (
            field is None
            or not isinstance(field.annotation, type)
            or not issubclass(field.annotation, BaseModel)
        ):
            return ""
        model = field.annotation
    return ", ".join(model.model_fields)


def _section_model(loc: tuple) -> type[BaseModel]:
    model: type[BaseModel] = ExperimentSpec
    for part in loc:
        model = model.model_fields[str(part)].annotation
    return model


def _describe(source: str, err: dict, raw: dict) -> str:
    loc = tuple(p for p in err["loc"])
    field = _cut(".".join(str(p) for p in loc) or "(spec)")
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        allowed = _allowed(ExperimentSpec, loc)
        section = ".".join(str(p) for p in loc[:-1]) or "top level"
        return f"{source}: {field}: unknown key. Allowed at {section}: {allowed}"
    if err["type"] == "missing":
        return f"{source}: {field}: missing. Add `{loc[-1]} = ...`"
    shown = _shown(err.get("input"))
    if err["type"] == "value_error":  # a validator of ours: its message names the fields already
        return f"{source}: {msg.removeprefix('Value error, ')}"
    if err["type"] == "model_type":
        allowed = ", ".join(_section_model(loc).model_fields)
        return f"{source}: {field} = {shown}: must be a table, e.g. [{field}] with keys {allowed}"
    if err["type"] in ("int_type", "float_type") and isinstance(err.get("input"), bool):
        msg += " (true and false are not numbers)"
    return f"{source}: {field} = {shown}: {msg}"


def _shown(value: Any) -> str:
    """A value as the spec file wrote it (TOML spelling), cut to ``SHOWN_CHARS``."""
    if isinstance(value, float) and not math.isfinite(value):
        text = "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    elif isinstance(value, (str, int, float, bool, type(None))):
        text = json.dumps(value)
    else:
        text = repr(value)
    return _cut(text)


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 20]}… ({len(text):,} characters)"


# ---------------------------------------------------------------- overrides and sweeps


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML would read it (``4``, ``0.3``, ``true``, ``[1, 2]``, ``"x"``).

    Bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError([f"--set {item!r}: expected KEY=VALUE, e.g. --set distill.temperature=4"])
        out.append((key.strip(), parse_value(text.strip())))
    return out


def _repeated(values: list) -> list:
    """Values that occur more than once (1 and 1.0 and true are different values in a spec)."""
    seen, out = set(), []
    for v in values:
        key = (type(v).__name__, json.dumps(v, sort_keys=True, default=str))
        if key in seen:
            out.append(v)
        seen.add(key)
    return out


def _sweep_suffix(combo: dict[str, Any]) -> str:
    return ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in combo.items())


def expand(raw: dict, source: str, overrides: list[tuple[str, Any]] = ()) -> list[ExperimentSpec]:
    """Validate one spec document into one spec per point of its sweep (raises ``SpecError``)."""
    raw = copy.deepcopy(raw)
    raw.setdefault("name", Path(source).stem)
    if "search" in raw:  # a search: its first trials
        return _expand_search(raw, source, overrides)
    sweep = raw.pop("sweep", {}) or {}
    problems: list[str] = []
    if not isinstance(sweep, dict):
        raise SpecError([f"{source}: sweep: must be a table of dotted keys to lists"])
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            problems.append(f'{source}: sweep.{_cut(key)}: must be a non-empty list, e.g. "{key}" = [1, 2]')
        elif repeated := _repeated(values):
            problems.append(
                f"{source}: sweep.{_cut(key)}: the value {_shown(repeated[0])} appears twice; "
                "each point of a sweep must differ"
            )
    total = 1
    for values in sweep.values():
        total *= len(values) if isinstance(values, list) else 1
    if total > MAX_SWEEP:
        problems.append(
            f"{source}: sweep: {total} combinations, more than the {MAX_SWEEP} allowed; shorten a list"
        )
    if problems:
        raise SpecError(problems)
    for key, value in overrides:
        try:
            search.set_dotted(raw, key, value)
        except KeyError as exc:
            raise SpecError([f"{source}: --set {key}: {exc.args[0]}"]) from None

    keys = list(sweep)
    specs: list[ExperimentSpec] = []
    for values in itertools.product(*(sweep[k] for k in keys)) if keys else [()]:
        doc = copy.deepcopy(raw)
        combo = dict(zip(keys, values))
        try:
            for key, value in combo.items():
                search.set_dotted(doc, key, value)
        except KeyError as exc:
            raise SpecError([f"{source}: sweep: {exc.args[0]}"]) from None
        if combo:
            doc["name"] = f"{doc['name']}[{_sweep_suffix(combo)}]"
        try:
            specs.append(ExperimentSpec.model_validate(doc))
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                where = f"{source} (sweep {_sweep_suffix(combo)})" if field in combo else source
                problems.append(_describe(where, err, doc))
    if problems:
        raise SpecError(sorted(set(problems), key=problems.index))
    return specs


def _expand_search(raw: dict, source: str, overrides: list[tuple[str, Any]]) -> list[ExperimentSpec]:
    """A document with a ``[search]`` table → the specs of its first ``parallel`` trials (``SpecError``).
    ``raw``: ``expand``'s own copy, changed here."""
    from kdq.search.study import first_params  # Optuna is loaded for a search only

    for key, value in overrides:
        try:
            search.set_dotted(raw, key, value)
        except KeyError as exc:
            raise SpecError([f"{source}: --set {key}: {exc.args[0]}"]) from None
    table = raw.pop("search")
    if "sweep" in raw:
        raise SpecError([f"{source}: a spec has [sweep] (every point) or [search] (the sampler), not both"])
    if not isinstance(table, dict):
        raise SpecError([f"{source}: search: must be a table, e.g. [search] trials = 12"])
    problems = search.check_space(table.get("space"), f"{source}: search")
    table = {"name": raw.get("name"), **table}
    # The rest is checked too (with a stand-in space if the space is bad): every problem at once.
    checked = {**table, "space": {"train.seed": [0]}} if problems else table
    try:
        base = ExperimentSpec.model_validate({**raw, "search": checked})
    except ValidationError as exc:
        problems += [_describe(source, e, raw) for e in exc.errors()]
    if problems:
        raise SpecError(problems)
    table_spec = base.search
    if table_spec.parallel > table_spec.trials:
        too_many = f"search.parallel = {table_spec.parallel} is more than search.trials = {table_spec.trials}"
        raise SpecError([f"{source}: {too_many}: lower parallel or raise trials"])
    for point in search.corners(table_spec):
        try:
            ExperimentSpec.model_validate(search.with_params({**raw, "search": table}, point))
        except ValidationError as exc:
            where = f"{source} (search point {search.point_name(point)})"
            problems.extend(_describe(where, e, raw) for e in exc.errors())
    if problems:
        raise SpecError(sorted(set(problems), key=problems.index))
    doc = {**raw, "search": table_spec.model_dump(mode="json")}
    first = first_params(table_spec, table_spec.parallel)
    return [search.trial_spec(doc, params, number) for number, params in enumerate(first)]


def read_spec_text(path: Path) -> str:
    """The text of a spec file: a regular file (a pipe or a device would hang or never end), UTF-8,
    at most ``MAX_SPEC_BYTES``, a byte-order mark dropped. Raises ``SpecError``."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SpecError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise SpecError([f"{path}: cannot be read ({exc.strerror or exc})"]) from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(
            [f"{path}: is a folder, not a spec file; name the .toml files (or a glob: {path}/*.toml)"]
        )
    if not stat.S_ISREG(info.st_mode):
        raise SpecError([f"{path}: not a regular file (a pipe or a device?); give a .toml spec file"])
    if info.st_size > MAX_SPEC_BYTES:
        raise SpecError(
            [f"{path}: {info.st_size:,} bytes, more than a spec's {MAX_SPEC_BYTES:,}; is it the right file?"]
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # swapped for a pipe since the stat: never block
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError([f"{path}: cannot be read ({exc.strerror or exc})"]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError([f"{path}: more than a spec's {MAX_SPEC_BYTES:,} bytes; is it the right file?"])
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise SpecError([f"{path}: not a UTF-8 text file"]) from None


def load_file(path: str | Path, overrides: list[tuple[str, Any]] = ()) -> list[ExperimentSpec]:
    path = Path(path)
    try:
        raw = tomllib.loads(read_spec_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([f"{path}: TOML syntax error: {exc}"]) from None
    if not raw:
        raise SpecError(
            [f'{path}: empty spec: a spec needs at least a name, e.g. name = "hinton-shufflenet"']
        )
    return expand(raw, str(path), overrides)


def load_files(
    paths: list[str | Path], overrides: list[tuple[str, Any]] = ()
) -> list[tuple[Path, ExperimentSpec]]:
    """All specs of all files, or a ``SpecError`` with every problem of every file (then nothing is used)."""
    out: list[tuple[Path, ExperimentSpec]] = []
    problems: list[str] = []
    for path in paths:
        try:
            out.extend((Path(path), spec) for spec in load_file(path, overrides))
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return out
