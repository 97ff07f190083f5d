"""Experiment specs: the pydantic model, TOML loading, ``[sweep]`` expansion, ``--set`` overrides.

A spec file is one experiment, or many when it has a ``[sweep]`` table of dotted keys to lists:

    name = "hinton-shufflenet"
    [student]
    name = "shufflenet_v2_x1_0"
    [distill]
    loss = "hinton"
    [sweep]
    "distill.temperature" = [2.0, 4.0, 8.0]

Everything here is pure: files in, validated specs (or one ``SpecError`` listing every problem) out.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import stat
import tomllib
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdq.search.spec import SearchSpec

MAX_SWEEP = 256  # a sweep larger than this is almost certainly a typo
MAX_SPEC_BYTES = 1 << 20  # a spec file is a few hundred bytes; more is the wrong file
MAX_SEED = 2**32 - 1  # every random generator kdq seeds takes this range
SHOWN_CHARS = 80  # a value quoted in an error is cut to this
KDQ_STUDENTS = ("tiny_cnn",)  # the models of student.library = "kdq" (kdq.train.students.KDQ_MODELS)


class Section(BaseModel):
    # strict: `true` is not a number and "4" is not 4; every float finite (inf and nan crash later)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class StudentSpec(Section):
    library: Literal["kdq", "timm", "torchvision"] = Field(
        "torchvision", description="Where the architecture comes from. `kdq` has a small CNN for tests."
    )
    name: str = Field("shufflenet_v2_x1_0", description="Model name in that library.")
    pretrained: bool = Field(False, description="Start from ImageNet weights (when they can be fetched).")
    drop_rate: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier.")

    @model_validator(mode="after")
    def _known_kdq_model(self) -> StudentSpec:
        # timm/torchvision names and sizes need those libraries: kdq.train.students.preflight checks them
        if self.library == "kdq" and self.name not in KDQ_STUDENTS:
            raise ValueError(
                f"student.name = {self.name!r} is not a kdq model; choose one of: "
                f"{', '.join(KDQ_STUDENTS)} (or set student.library = 'timm' / 'torchvision')"
            )
        return self


class TeacherSpec(Section):
    kind: Literal["none", "siglip"] = Field("siglip", description="`none` trains without a teacher.")
    model: str = Field(
        "google/medsiglip-448",
        description="Hugging Face model id, or `tiny` for a tiny random SigLIP (tests, demo).",
    )
    head: Literal["probe", "zeroshot"] = Field(
        "probe", description="Linear probe on embeddings (out-of-fold) or zero-shot text prompts."
    )
    views: int = Field(
        4, ge=1, le=256, description="Augmented views per image in the teacher cache (the plain picture too)."
    )
    resize: Literal["pad", "squash"] = Field(
        "pad", description="Teacher input: pad to a square then resize (MedSigLIP's own code), or squash."
    )


class DistillSpec(Section):
    loss: Literal["ce", "hinton", "dkd"] = Field("hinton", description="Logit loss.")
    temperature: float = Field(4.0, gt=0, le=100, description="Softmax temperature T.")
    alpha: float = Field(0.3, ge=0, le=1, description="Weight of cross-entropy: alpha*CE + (1-alpha)*T^2*KL.")
    dkd_alpha: float = Field(1.0, ge=0, description="DKD weight of target-class KD.")
    dkd_beta: float = Field(8.0, ge=0, description="DKD weight of non-target-class KD.")
    embed_weight: float = Field(0.0, ge=0, description="Weight of embedding distillation (0: off).")
    embed_loss: Literal["cosine", "mse"] = "cosine"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weighted: bool = Field(True, description="Weight cross-entropy by inverse class frequency.")
    fresh_fraction: float = Field(
        0.0, ge=0, le=1, description="Share of each batch on fresh random views, trained on the label alone."
    )


class TrainSpec(Section):
    epochs: int = Field(30, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=8192)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.05, ge=0, le=1)
    warmup_epochs: float = Field(1.0, ge=0)
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of weights; none: off.")
    patience: int | None = Field(
        10, ge=1, le=1000, description="Early stop after this many epochs without gain."
    )
    image_size: int = Field(224, ge=32, le=512, description="Student input size (the grader uses 224).")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    tune_bias: bool = Field(False, description="Tune a per-class logit bias on validation for macro-F1.")
    tta_flip: bool = Field(False, description="Average with the horizontal flip inside the exported model.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = Field(False, description="torch.compile the student for training (export is uncompiled).")


class DataSpec(Section):
    dataset: str = Field(
        "hw3", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Dataset name (not a path)."
    )
    val_fraction: float = Field(0.15, gt=0, lt=1)
    holdout_fraction: float = Field(
        0.08, ge=0, lt=1, description="Untouched split for an honest F1 estimate (never used to train)."
    )
    split_seed: int = Field(0, ge=0, le=MAX_SEED)
    decode_size: int = Field(256, ge=32, le=1024, description="Images are decoded once at this size.")
    limit_per_class: int | None = Field(
        None, ge=1, le=10**9, description="Use at most this many images per class."
    )


class SubmitSpec(Section):
    policy: Literal["if_better", "always", "never", "manual"] = Field(
        "if_better",
        description="`if_better`: submit only if better than the live submission; "
        "`manual`: wait for `kdq submit`.",
    )


class BackendSpec(Section):
    kind: Literal["local", "modal"] = "local"
    gpu: str = Field("H100", description="Modal GPU type (ignored by the local backend).")
    timeout_min: int = Field(240, ge=1, le=24 * 60, description="Wall-clock limit of one training attempt.")


class ExperimentSpec(Section):
    name: str = Field(..., min_length=1, max_length=200)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, name: str) -> str:
        """Control characters (terminal escape codes among them) would reach every table: drop them."""
        clean = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C")).strip()
        if not clean:
            raise ValueError("name: has no printable character; give the experiment a readable name")
        return clean

    student: StudentSpec = StudentSpec()
    teacher: TeacherSpec = TeacherSpec()
    distill: DistillSpec = DistillSpec()
    train: TrainSpec = TrainSpec()
    data: DataSpec = DataSpec()
    submit: SubmitSpec = SubmitSpec()
    backend: BackendSpec = BackendSpec()
    search: SearchSpec | None = Field(None, description="A search over this spec: docs/search.md.")

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        if self.teacher.kind == "none" and self.distill.loss != "ce":
            raise ValueError(
                f"distill.loss = {self.distill.loss!r} needs a teacher, but teacher.kind = 'none': "
                "set distill.loss = 'ce' or choose a teacher"
            )
        if self.teacher.kind == "none" and self.distill.embed_weight > 0:
            raise ValueError("distill.embed_weight > 0 needs a teacher: set it to 0 or choose a teacher")
        if self.data.val_fraction + self.data.holdout_fraction >= 0.9:
            raise ValueError(
                "data.val_fraction + data.holdout_fraction leave under 10% of the pictures to train on: "
                "lower one of them"
            )
        return self

    def content_hash(self) -> str:
        """Stable hash of what the experiment does (its name excluded)."""
        body = self.model_dump(mode="json", exclude={"name"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


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


def set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise KeyError(f"{'.'.join(parts[:-1])} is not a table")
        node = child
    node[parts[-1]] = value


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
    if "search" in raw:  # a search: its first trials (kdq.search.spec)
        from kdq.search.spec import expand_search

        return expand_search(raw, source, overrides)
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
            set_dotted(raw, key, value)
        except KeyError as exc:
            raise SpecError([f"{source}: --set {key}: {exc.args[0]}"]) from None

    keys = list(sweep)
    specs: list[ExperimentSpec] = []
    for values in itertools.product(*(sweep[k] for k in keys)) if keys else [()]:
        doc = copy.deepcopy(raw)
        combo = dict(zip(keys, values))
        try:
            for key, value in combo.items():
                set_dotted(doc, key, value)
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
