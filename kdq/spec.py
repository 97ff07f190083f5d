"""Experiment specs: the pydantic models, one section per table of a spec file, every field checked.

Each field says its type, default, limits and meaning (docs/spec-reference.md is generated from them).
Reading spec files, ``[sweep]`` expansion and ``--set`` overrides are ``kdq.specfile``.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kdq.search.space import SearchSpec

MAX_SEED = 2**32 - 1  # every random generator kdq seeds takes this range
KDQ_STUDENTS = ("tiny_cnn",)  # the models of student.library = "kdq" (kdq.train.students.KDQ_MODELS)
L2_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # the teacher head's L2 candidates


class Section(BaseModel):
    # strict: `true` is not a number and "4" is not 4; every float finite (inf and nan crash later)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class StudentSpec(Section):
    library: Literal["kdq", "timm", "torchvision"] = Field(
        "torchvision", description="Where the architecture comes from. `kdq` has a small CNN for tests."
    )
    name: str = Field("shufflenet_v2_x1_0", description="Model name in that library.")
    pretrained: bool = Field(True, description="Start from ImageNet weights (kdq's own models have none).")
    allow_scratch: bool = Field(
        False, description="When the pretrained weights cannot be fetched, train from scratch (else: fail)."
    )
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

    @property
    def wants_weights(self) -> bool:
        """Asked for pretrained weights that exist: kdq's own models have none to load."""
        return self.pretrained and self.library != "kdq"


class TeacherSpec(Section):
    kind: Literal["none", "siglip"] = Field("siglip", description="`none` trains without a teacher.")
    model: str = Field(
        "google/medsiglip-448",
        description="Hugging Face model id, or `tiny` for a tiny random SigLIP (tests, demo).",
    )
    head: Literal["probe", "mlp", "ensemble", "zeroshot"] = Field(
        "probe",
        description="Head on the frozen embeddings, out-of-fold for training pictures: a linear probe, a "
        "one-hidden-layer MLP, a bagged ensemble of both (`members`), or zero-shot text prompts.",
    )
    features: Literal["pooled", "pooled+patch"] = Field(
        "pooled",
        description="Head input: the pooled embedding, or beside it the mean of the last layer's patch "
        "tokens (its own cache entry).",
    )
    l2: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=lambda: list(L2_GRID),
        min_length=1,
        max_length=30,
        description="L2 values the head's grouped cross-validation chooses from (one value: fixed).",
    )
    members: int = Field(5, ge=2, le=20, description="`head = 'ensemble'`: bagged members (probe, MLP, ...).")
    views: int = Field(
        32,
        ge=1,
        le=256,
        description="Augmented views per image in the teacher cache (the plain picture too).",
    )
    resize: Literal["pad", "squash"] = Field(
        "pad", description="Teacher input: pad to a square then resize (MedSigLIP's own code), or squash."
    )
    mix_views: int = Field(
        8,
        ge=0,
        le=64,
        description="Cached views per picture that mix it with a partner (mixup or cutmix), embedded once; "
        "the student trains on exactly that mix.",
    )
    mix_alpha: float = Field(
        1.0, gt=0, le=10, description="Mixed views: lambda ~ Beta(mix_alpha, mix_alpha)."
    )
    mix_cutmix: float = Field(0.5, ge=0, le=1, description="Share of the mixed views that are cutmix boxes.")
    crop_min: float = Field(0.25, gt=0, le=1, description="Smallest crop of a view, a fraction of the area.")
    dihedral: bool = Field(
        True, description="Views turned by quarter turns too (with the flip: vertical flips as well)."
    )
    jitter: float = Field(0.25, ge=0, lt=1, description="Brightness, contrast and saturation jitter (+-).")


TEMPERATURE = {"hinton": 4.0, "dkd": 1.0, "dist": 1.0}  # each loss's own T (docs/training.md: sources)


class DistillSpec(Section):
    loss: Literal["ce", "hinton", "dkd", "dist"] = Field("hinton", description="Logit loss.")
    temperature: float = Field(
        4.0,
        gt=0,
        le=100,
        description="Softmax temperature T. Unset: the loss's own (hinton 4, dkd 1, dist 1).",
    )
    alpha: float = Field(0.3, ge=0, le=1, description="Weight of cross-entropy: alpha*CE + (1-alpha)*T^2*KL.")
    dkd_alpha: float = Field(0.5, ge=0, description="DKD weight of target-class KD.")
    dkd_beta: float = Field(0.5, ge=0, description="DKD weight of non-target-class KD.")
    dist_beta: float = Field(1.0, ge=0, description="DIST weight of the inter-class (per picture) relation.")
    dist_gamma: float = Field(1.0, ge=0, description="DIST weight of the intra-class (per class) relation.")
    kd_warmup_epochs: float = Field(
        1.0, ge=0, description="The distillation term's weight ramps from 0 to 1 over these epochs."
    )
    embed_weight: float = Field(0.0, ge=0, description="Weight of embedding distillation (0: off).")
    embed_loss: Literal["cosine", "mse"] = "cosine"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weighted: bool = Field(True, description="Weight cross-entropy by inverse class frequency.")
    fresh_fraction: float = Field(
        0.0, ge=0, le=1, description="Share of each batch on fresh random views, trained on the label alone."
    )

    @model_validator(mode="before")
    @classmethod
    def _loss_temperature(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("temperature") is None:
            return {**data, "temperature": TEMPERATURE.get(data.get("loss", "hinton"), 4.0)}
        return data


class TrainSpec(Section):
    epochs: int = Field(300, ge=1, le=1000, description="Epochs; the cosine schedule ends with the last.")
    batch_size: int = Field(128, ge=1, le=8192)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.05, ge=0, le=1)
    warmup_epochs: float = Field(1.0, ge=0)
    ema_decay: float | None = Field(
        0.998, gt=0, lt=1, description="EMA of weights, validated and exported; its decay ramps up to this."
    )
    patience: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Early stop after this many epochs without gain, never in the schedule's first 2/3.",
    )
    image_size: int = Field(224, ge=32, le=512, description="Student input size (the grader uses 224).")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    tune_bias: bool = Field(False, description="Tune a per-class logit bias on validation for macro-F1.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = Field(False, description="torch.compile the student for training (export is uncompiled).")
    checkpoint_every_s: float = Field(
        300,
        ge=0,
        le=86400,
        description="Seconds between checkpoints (at an epoch's end; 0: every epoch); also one at the last "
        "epoch and one at the next step after a SIGTERM. Not part of what the run computes: the spec's "
        "hash leaves it out.",
    )


class ExportSpec(Section):
    weights: Literal["fp32", "int8"] = Field(
        "int8",
        description="How model.pt stores the weights: `int8` (per output channel, float32 scales, "
        "dequantised in forward: float32 in, compute and out; ~4x smaller) or `fp32`.",
    )
    tta: Literal["none", "hflip", "dihedral4", "dihedral8"] = Field(
        "none",
        description="Views averaged inside model.pt: the picture and its mirror (`hflip`), its 4 flips, "
        "or all 8 flips and rotations. `train.tta_flip = true` of older specs reads as `hflip`.",
    )


class DataSpec(Section):
    dataset: str = Field(
        "hw3", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Dataset name (not a path)."
    )
    val_fraction: float = Field(0.15, gt=0, lt=1)
    holdout_fraction: float = Field(
        0.08, ge=0, lt=1, description="Untouched split for an honest F1 estimate (never used to train)."
    )
    split_seed: int = Field(0, ge=0, le=MAX_SEED)
    decode_size: int = Field(384, ge=32, le=1024, description="Images are decoded once at this size.")
    limit_per_class: int | None = Field(
        None, ge=1, le=10**9, description="Use at most this many images per class."
    )
    refit: bool = Field(
        False,
        description="Once this run is validated, queue its refit: the same spec trained on every picture "
        "(train + val + holdout) for this run's best epoch count; it is submitted in this run's place, "
        "expected to score this run's holdout F1 (docs/submission-policy.md).",
    )
    train_on: Literal["split", "all"] = Field(
        "split",
        description="`all`: train on every picture for exactly `train.epochs`, no validation or holdout "
        "(the refit run `data.refit` queues); the teacher's logits are out-of-fold over all of them.",
    )


class SubmitSpec(Section):
    policy: Literal["if_better", "explore", "always", "never", "manual"] = Field(
        "if_better",
        description="`if_better`: submit only if better than the live submission; `explore`: try "
        "models within the noise of the best graded one, and put the best graded back when nothing is "
        "left to try; `manual`: wait for `kdq submit` (docs/submission-policy.md).",
    )


MODAL_ATTEMPT_MIN = 20  # the least backend.timeout_min a Modal spec gets when it sets none


class BackendSpec(Section):
    kind: Literal["local", "modal"] = "local"
    gpu: str = Field(
        "H100",
        description="Modal GPU type (ignored by the local backend). `H100` may be served by an H200; "
        "`H100!` insists on an H100 (benchmark runs, so timings compare).",
    )
    timeout_min: int | None = Field(
        None,
        ge=1,
        le=24 * 60,
        description="Wall-clock limit of one training attempt. Unset on Modal: the recipe's estimated first "
        "run (teacher cache included) and half again, at least 20 (a normal run bills 2-4 minutes); 240 "
        "locally (a CPU).",
    )
    max_gpu_min: float = Field(
        40,
        gt=0,
        le=72 * 60,
        description="Modal: GPU-minutes one run may use, all its attempts together (Modal retries a "
        "failed or preempted attempt once); kdq cancels the call past it. Unset with timeout_min unset: two "
        "of its attempts, at least 40.",
    )
    pack: int = Field(
        4,
        ge=1,
        le=16,
        description="Modal: experiments trained at once on one GPU, each in its own process with 1/pack of "
        "the GPU's memory (a small student uses a few percent of an H100); 1: a GPU per experiment.",
    )

    @property
    def attempt_min(self) -> int:
        """``timeout_min``, or its default for this backend."""
        return self.timeout_min or (MODAL_ATTEMPT_MIN if self.kind == "modal" else 240)


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
    export: ExportSpec = ExportSpec()
    submit: SubmitSpec = SubmitSpec()
    backend: BackendSpec = BackendSpec()
    search: SearchSpec | None = Field(None, description="A search over this spec: docs/search.md.")
    _derived: frozenset[str] = pydantic.PrivateAttr(frozenset())  # limits sized to the recipe, unwritten

    @model_validator(mode="after")
    def _modal_limits_fit_the_recipe(self) -> ExperimentSpec:
        """On Modal, a ``backend.timeout_min`` left unset fits this recipe's first run (kdq/train/estimate.py,
        at least 20 minutes), and then a ``backend.max_gpu_min`` left unset allows two such attempts (at
        least 40): a fixed 20 stopped the default recipe's first run, which builds the teacher cache."""
        b = self.backend
        if b.kind != "modal" or b.timeout_min is not None:
            return self
        from kdq.train.estimate import attempt_limit_min

        attempt = max(MODAL_ATTEMPT_MIN, attempt_limit_min(self))
        total = b.max_gpu_min if "max_gpu_min" in b.model_fields_set else max(40, 2 * attempt)
        limits = BackendSpec.model_validate({**b.model_dump(), "timeout_min": attempt, "max_gpu_min": total})
        object.__setattr__(self, "backend", limits)  # frozen: set once, while it is validated
        self._derived = frozenset({"timeout_min", "max_gpu_min"} - b.model_fields_set)
        return self

    @pydantic.model_serializer(mode="wrap")
    def _limits_left_to_size(self, handler) -> dict[str, Any]:
        """The limits sized to the recipe stay out of the spec's document (stored, then copied into a
        search's next trial or a refit): a spec made from it with another recipe sizes its own."""
        out = handler(self)
        if self._derived and isinstance(out.get("backend"), dict):
            out["backend"] = {k: v for k, v in out["backend"].items() if k not in self._derived}
        return out

    @model_validator(mode="before")
    @classmethod
    def _tta_flip_is_export_tta(cls, raw: Any) -> Any:
        """``train.tta_flip`` (older specs) is ``export.tta = "hflip"`` (false: the default)."""
        train = raw.get("train") if isinstance(raw, dict) else None
        if not isinstance(train, dict) or "tta_flip" not in train:
            return raw
        if not isinstance(train["tta_flip"], bool):
            raise ValueError("train.tta_flip: true or false; better, export.tta = 'hflip' (or 'none')")
        raw = {**raw, "train": {k: v for k, v in train.items() if k != "tta_flip"}}
        if train["tta_flip"] is True:
            export = raw.get("export") if isinstance(raw.get("export"), dict) else {}
            raw["export"] = {"tta": "hflip", **export}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        if self.teacher.kind == "none" and self.distill.loss != "ce":
            raise ValueError(
                f"distill.loss = {self.distill.loss!r} needs a teacher, but teacher.kind = 'none': "
                "set distill.loss = 'ce' or choose a teacher"
            )
        if self.teacher.kind == "none" and self.distill.embed_weight > 0:
            raise ValueError("distill.embed_weight > 0 needs a teacher: set it to 0 or choose a teacher")
        if self.data.train_on == "all" and (self.data.refit or self.train.tune_bias):
            what = "data.refit" if self.data.refit else "train.tune_bias"
            raise ValueError(
                f"data.train_on = 'all' keeps no pictures to validate on, which {what} needs: "
                f"set {what} = false or data.train_on = 'split'"
            )
        if self.data.val_fraction + self.data.holdout_fraction >= 0.9:
            raise ValueError(
                "data.val_fraction + data.holdout_fraction leave under 10% of the pictures to train on: "
                "lower one of them"
            )
        return self

    def content_hash(self) -> str:
        """Stable hash of what the experiment does (its name and how often it checkpoints excluded)."""
        body = self.model_dump(mode="json", exclude={"name": True, "train": {"checkpoint_every_s"}})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
