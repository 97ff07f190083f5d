"""The end of a run (``kdq.train.loop``'s last two phases): the best epoch exported, then scored.

    best = export_best(spec, step, state, split, run_dir)   # model.pt: the best epoch's weights, its bias
    metrics = evaluate(spec, best, state, split, targets)    # metrics.json: the holdout, scored once

The holdout is scored only here, on the exported file itself, on the CPU like the grader: nothing that
trained, stopped, picked the epoch or tuned the bias has seen it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdq import grader, runfolder
from kdq.spec import ExperimentSpec
from kdq.train import augment, export, losses
from kdq.train.bias import crossfit_f1, tune_bias
from kdq.train.data import Split
from kdq.train.evaluate import holdout_scores, predict
from kdq.train.step import Step

NO_VALIDATION = ("val_f1", "val_acc", "per_class_f1", "confusion", "val_f1_before_bias", "teacher_probe_f1")


@dataclass
class Best:
    """The exported model: the best epoch's weights on the CPU, the bias tuned on validation, the
    cross-fitted validation F1 that tuning leaves honest, and the file (``export.export``'s facts)."""

    model: nn.Module
    bias: torch.Tensor | None
    honest_f1: float | None
    file: Path
    export: dict

    @property
    def mb(self) -> float:
        return self.export["model_mb"]


def export_best(spec: ExperimentSpec, step: Step, state: dict, split: Split, run_dir: Path) -> Best:
    """The best epoch's weights and bias, written to model.pt."""
    tr = spec.train
    model = copy.deepcopy(step.ema.module if step.ema else step.model).cpu()
    model.load_state_dict(state["best_state"])
    bias, honest = None, None
    if tr.tune_bias:
        y_val = split.labels[split.val]
        bias, _, _ = tune_bias(state["best_val_logits"], y_val)
        honest = crossfit_f1(state["best_val_logits"], y_val, seed=tr.seed)
    # the float and the exported model compared on validation pictures as the grader renders them
    shown = split.ds.images[split.val[:64]]
    example = augment.render(shown, None, grader.INPUT_SIZE) if len(shown) else None
    file = run_dir / runfolder.MODEL
    ex = spec.export
    info = export.export(
        model, file, bias=bias, tta=ex.tta, train_size=tr.image_size, weights=ex.weights, example=example
    )
    return Best(model, bias, honest, file, info)


# ---------------------------------------------------------------- evaluate


def evaluate(spec: ExperimentSpec, best: Best, state: dict, split: Split, targets) -> dict:
    """metrics.json: the holdout, scored once, on the CPU like the grader (nothing above has seen it),
    beside validation's scores and what the run was."""
    tr, t, ds, labels, nc, bias = spec.train, spec.teacher, split.ds, split.labels, split.nc, best.bias
    # the file itself (its bias, views, resize and int8 weights inside) on the grader's 224 input
    file = torch.jit.load(str(best.file), map_location="cpu")
    hold_logits = predict(file, ds.images[split.hold], grader.INPUT_SIZE, torch.device("cpu"))
    holdout = holdout_scores(hold_logits, None, labels[split.hold], nc, seed=tr.seed)
    y_val = labels[split.val]
    val_logits = state["best_val_logits"] if len(y_val) else torch.zeros(0, nc)  # a refit: none
    final_logits = val_logits + (bias if bias is not None else 0)
    in_sample, per_class, confusion = losses.macro_f1(final_logits.argmax(1), y_val, nc)
    # A bias tuned on validation and scored on it overstates its gain: then val_f1 is the cross-fitted
    # estimate (tuned on one half, scored on the other); per_class_f1 and confusion are the exported
    # model's own predictions on validation.
    metrics = {
        "val_f1": best.honest_f1 if best.honest_f1 is not None else in_sample,
        **holdout,
        # the holdout pictures, so verification can score the exported file on them as the grader would
        "holdout_files": [str(ds.files[int(i)]) for i in split.hold],
        "holdout_labels": [int(y) for y in labels[split.hold]],
        "val_acc": float((final_logits.argmax(1) == y_val).float().mean()),
        "per_class_f1": dict(zip(ds.classes, per_class)),
        "confusion": confusion,
        "classes": ds.classes,
        "best_epoch": state["best_epoch"] + 1,  # people count epochs from 1: every view shows it as is
        "epochs_run": state["epoch"] + 1,
        "model_mb": round(best.mb, 4),
        "export": best.export,  # weights, tta, agreement and max_logit_error against the float model
        "params": sum(p.numel() for p in best.model.parameters()),
        "torch_version": torch.__version__,
        "device": str(split.device),
        "n_train": len(split.train),
        "n_val": len(split.val),
        "skipped_files": ds.skipped,
        "dataset_fingerprint": ds.fingerprint,
        "val_f1_before_bias": state["best_f1"],
        "val_f1_bias_in_sample": in_sample if tr.tune_bias else None,
        "bias": bias.tolist() if bias is not None else None,
        "pretrained_loaded": state["pretrained_loaded"],  # False: from scratch (or a kdq model)
        "teacher_probe_f1": targets.val_f1 if targets is not None else None,  # the head's F1: the ceiling
        "teacher_probe": targets.probe if targets is not None else None,  # head, l2, cv_f1, temperature
        "teacher_per_class_f1": None
        if targets is None or targets.per_class_f1 is None
        else dict(zip(ds.classes, targets.per_class_f1)),
        "teacher": None
        if targets is None
        else f"{t.model} ({t.head}, {t.resize}, {t.views} views, {t.mix_views} mixed)",
    }
    if len(y_val) == 0:  # a refit (data.train_on = "all"): nothing was validated
        metrics.update(dict.fromkeys(NO_VALIDATION, None))
    return metrics
