"""The training loop: ``run(spec, run_dir, data_dir, cache_dir) -> summary``, a sequence of phases.

    split   = load(spec, ...)                   # pictures decoded once; train / val / holdout
    targets = teacher_targets(spec, split, ...) # the teacher's views, logits, embeddings (cached)
    step    = student(spec, split, targets)     # model, optimizer, schedule, EMA: one training step
    state   = resume(saver, step)               # the checkpoint's epochs (and steps), or none
    epochs(spec, split, step, state, ...)       # train, validate, progress; checkpoint by the clock
    best    = export_best(spec, step, state, ...)  # the best epoch's weights and bias -> model.pt
    metrics = evaluate(spec, best, state, ...)  # the holdout, scored once, on the CPU like the grader
                                                # (the last two: kdq/train/finish.py)

No duplicate picture is in two splits. A step copies nothing to the device and reads nothing back: the
epoch's order, views and fresh crops go over once. Every file of the run-folder contract
(kdq/runfolder.py) is written here; ``kdq.train.__main__`` adds done.json / error.json around it.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from kdq import runfolder, verify
from kdq.spec import ExperimentSpec
from kdq.train import augment, data, export, losses, students
from kdq.train.checkpoint import Saver, Stopped
from kdq.train.data import Split
from kdq.train.evaluate import predict
from kdq.train.finish import evaluate, export_best
from kdq.train.step import Step, ema, optimizer, steps_per_epoch

PARTS = ("loss", "ce", "kd", "tckd", "nckd", "inter", "intra", "embed")  # loss parts: history columns
HISTORY_FIELDS = ["epoch", "lr", *PARTS, "train_acc", "val_f1", "val_acc", "best_f1", "seconds"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pick_device(want: str) -> torch.device:
    if want == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    return torch.device("cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def write_history(run_dir: Path, rows: list[dict]) -> None:
    with runfolder.atomic_path(run_dir / runfolder.HISTORY) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, HISTORY_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def progress(
    run_dir: Path, spec: ExperimentSpec, state: dict | None, phase: str, val_f1=None, **extra
) -> None:
    """progress.json: the phase, and the epochs done so far (none before the first); ``extra``: what
    kdq status times the run by (``epoch_s``; the teacher's ``embedded`` of ``to_embed`` in ``teacher_s``)."""
    state = state or {"epoch": -1, "best_f1": None}
    best = state["best_f1"] if state["epoch"] >= 0 else None
    done = {"epoch": state["epoch"] + 1, "epochs": spec.train.epochs, "val_f1": val_f1, "best_f1": best}
    runfolder.write_progress(run_dir, **done, phase=phase, **extra)


def run(
    spec: ExperimentSpec,
    run_dir: Path,
    data_dir: Path,
    cache_dir: Path,
    on_epoch: Callable[[int], None] | None = None,
    saver: Saver | None = None,
) -> dict:
    """Train ``spec`` in ``run_dir``; ``saver``: where and when to checkpoint (default: the run
    folder's checkpoint.pt every ``train.checkpoint_every_s``), and whether a SIGTERM asked to stop."""
    run_dir, started = Path(run_dir), time.time()
    saver = saver or Saver(run_dir / runfolder.CHECKPOINT, spec.train.checkpoint_every_s)
    device = pick_device(spec.train.device)
    torch.manual_seed(spec.train.seed)
    progress(run_dir, spec, None, "data")
    split = load(spec, data_dir, cache_dir, device)
    targets = teacher_targets(spec, split, run_dir, data_dir, cache_dir)
    step, hook, pretrained_loaded = student(spec, split, targets)
    state = resume(saver, step, pretrained_loaded)
    epochs(spec, split, step, state, run_dir, on_epoch, saver)
    progress(run_dir, spec, state, "export", state["history"][-1]["val_f1"])
    hook.remove()  # the feature hook feeds embedding distillation only: the exported model has none
    best = export_best(spec, step, state, split, run_dir)
    metrics = evaluate(spec, best, state, split, targets)
    metrics.update(verify.score_in_run(best.file, data_dir, metrics))  # the file alone, as the grader
    metrics["seconds"] = round(time.time() - started, 2)
    runfolder.write_json(run_dir / runfolder.METRICS, metrics)
    progress(run_dir, spec, state, "done", state["history"][-1]["val_f1"])
    h = metrics["holdout_f1"]
    shown = "none" if h is None else f"{h:.4f} {metrics['holdout_f1_ci']}"
    log(
        f"best epoch {metrics['best_epoch']}: val macro-F1 {_shown(metrics['val_f1'])}, holdout {shown}, "
        f"model {metrics['model_mb']:.2f} MiB, grader_f1 {_shown(metrics.get('grader_f1'))}"
    )
    return {k: metrics[k] for k in ("val_f1", "holdout_f1", "best_epoch", "model_mb")}


# ---------------------------------------------------------------- data


def load(spec: ExperimentSpec, data_dir: Path, cache_dir: Path, device: torch.device) -> Split:
    d = spec.data
    ds = data.load(data_dir, cache_dir, d.decode_size, d.limit_per_class)
    gid = data.groups(ds.digests, ds.hashes, ds.thumbs)
    train, val, hold = data.split_for(d, ds.labels, gid)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    log(
        f"{len(ds.files)} images, {len(ds.classes)} classes, {len(train)} train / {len(val)} val / "
        f"{len(hold)} holdout, {len(ds.skipped)} skipped, device {device}"
    )
    return Split(ds, gid, train, val, hold, ds.images.to(device), ds.labels)


# ---------------------------------------------------------------- targets


def teacher_targets(spec: ExperimentSpec, split: Split, run_dir: Path, data_dir: Path, cache_dir: Path):
    """The teacher's targets for every training picture under its cached views, on the device; or None."""
    t = spec.teacher
    if t.kind == "none":
        return None
    from kdq.train import teacher

    progress(run_dir, spec, None, "teacher")
    ds, t0 = split.ds, time.time()

    def embedded(done: int, n: int) -> None:
        progress(run_dir, spec, None, "teacher", embedded=done, to_embed=n, teacher_s=time.time() - t0)

    targets = teacher.prepare(
        t,
        ds,
        split.train,
        split.val,
        cache_dir,
        split.device,
        seed=spec.data.split_seed,
        decode=lambda size, index: data.stream(  # not the cached root
            data.find_root(data_dir), [ds.files[i] for i in index], size
        ),
        groups=split.groups,
        on_progress=embedded,
    ).to(split.device)
    log(f"teacher {t.model} ({t.head}): val macro-F1 {targets.val_f1:.4f}")
    return targets


# ---------------------------------------------------------------- model


def student(spec: ExperimentSpec, split: Split, targets) -> tuple[Step, RemovableHandle, bool]:
    """The student (+ a projection head for embedding distillation, dropped at export), its optimizer,
    schedule and EMA, as one training step; the hook that hands the step the pooled features; and
    whether the student starts from pretrained weights."""
    tr, dist, device = spec.train, spec.distill, split.device
    torch.manual_seed(tr.seed)  # the student's initial weights depend on the seed alone
    model, pretrained_loaded = students.build_loaded(spec.student, split.nc)
    students.check_size(model, spec.student.name, spec.export.weights)
    model = model.to(device)
    model = model.to(memory_format=torch.channels_last) if device.type == "cuda" else model
    forward = torch.compile(model) if tr.compile else model  # trains; `model` itself is what is exported
    averaged = ema(model, tr.ema_decay)  # copied before the feature hook: the EMA's model has none
    feats: dict[str, torch.Tensor] = {}
    head = students.classifier(model)
    hook = head.register_forward_hook(lambda m, inp, out: feats.__setitem__("f", inp[0]))
    proj = None
    if dist.embed_weight > 0 and targets is not None:
        proj = nn.Linear(head.in_features, targets.embeddings.shape[-1]).to(device)
    params = list(model.parameters()) + (list(proj.parameters()) if proj else [])
    steps = steps_per_epoch(tr, len(split.train))
    opt, sched = optimizer(tr, params, steps)
    weight = (
        data.class_weights(split.labels[split.train], split.nc).to(device) if dist.class_weighted else None
    )
    labels = split.labels.to(device)
    step = Step(
        model,
        forward,
        opt,
        sched,
        averaged,
        proj,
        feats,
        params,
        split.images,
        labels,
        targets,
        dist,
        weight,
        tr.image_size,
        kd_warmup_steps=round(dist.kd_warmup_epochs * steps),
    )
    return step, hook, pretrained_loaded


# ---------------------------------------------------------------- epochs


def resume(saver: Saver, step: Step, pretrained_loaded: bool) -> dict:
    """The run's state: fresh, or the checkpoint's (weights, optimizer, schedule, EMA, history, and
    the steps of an epoch a SIGTERM cut short)."""
    ck = saver.restore(step)
    if ck is None:
        return {
            "pretrained_loaded": pretrained_loaded,  # how the first epoch started, whatever resumes it
            "epoch": -1,
            "best_f1": -1.0,
            "best_epoch": -1,
            "best_state": None,
            "best_val_logits": None,
            "bad_epochs": 0,
            "history": [],
        }
    partial = ck["state"].get("partial")
    steps = f", step {partial['steps']} of epoch {ck['state']['epoch'] + 2}" if partial else ""
    log(f"resumed from {saver.path} after epoch {ck['state']['epoch'] + 1}{steps}")  # counted from 1
    return {"pretrained_loaded": pretrained_loaded, **ck["state"]}


def epochs(
    spec: ExperimentSpec, split: Split, step: Step, state: dict, run_dir: Path, on_epoch, saver: Saver
) -> None:
    """Every epoch not yet run: train, validate, checkpoint when due; stops early after ``patience``
    bad epochs. The last epoch's checkpoint is always written: export and scoring resume from it."""
    from kdq.train.curves import Curves

    tr = spec.train
    with Curves(run_dir) as curves, saver.training():
        for epoch in range(state["epoch"] + 1, tr.epochs):
            if not one_epoch(spec, split, step, state, run_dir, epoch, curves, saver):
                break
            if on_epoch:
                on_epoch(epoch)
    saver.save(step, state)
    if saver.stopping:  # a SIGTERM after the last step
        raise Stopped(f"stopped by SIGTERM after the last epoch; checkpoint {saver.path}")


def one_epoch(
    spec: ExperimentSpec, split: Split, step: Step, state: dict, run_dir: Path, epoch: int, curves, saver
) -> bool:
    """Train, validate, record (history.csv, TensorBoard, checkpoint when due, progress); False: patience
    ran out. Raises ``Stopped`` after the checkpoint of the step a SIGTERM stopped at."""
    tr = spec.train
    if stop_early(tr, epoch, state["bad_epochs"]):
        return False
    t0 = time.time()
    start = state.pop("partial", None) or {"steps": 0, "sums": None}  # a SIGTERM's checkpoint resumed
    sums, done = train_epoch(spec, split, step, epoch, start["steps"], start["sums"], lambda: saver.stopping)
    if done < steps_per_epoch(tr, len(split.train)):
        state["partial"] = {"steps": done, "sums": {k: float(v) for k, v in sums.items()}}
        saver.save(step, state)
        raise Stopped(f"stopped by SIGTERM at step {done} of epoch {epoch + 1}; checkpoint {saver.path}")
    val_f1, val_acc = validate(spec, split, step, state, epoch)
    n = len(split.train)
    row = {
        "epoch": epoch + 1,  # counted from 1, like best_epoch and progress.json
        "lr": step.opt.param_groups[0]["lr"],
        **{k: round(float(sums[k]) / n, 6) for k in PARTS},
        "train_acc": round(float(sums["correct"]) / n, 6),
        "val_f1": _round(val_f1),
        "val_acc": _round(val_acc),
        "best_f1": _round(state["best_f1"] if val_f1 is not None else None),
        "seconds": round(time.time() - t0, 3),
    }
    state["history"].append(row)
    state["epoch"] = epoch
    write_history(run_dir, state["history"])
    curves.epoch(row)
    if saver.due():
        saver.save(step, state)
    epoch_s = sum(r["seconds"] for r in state["history"]) / len(state["history"])
    progress(run_dir, spec, state, "training", val_f1, epoch_s=round(epoch_s, 3))
    log(
        f"epoch {epoch + 1}/{tr.epochs} loss {row['loss']:.4f} train_acc {row['train_acc']:.3f} "
        f"val_f1 {_shown(val_f1)} ({row['seconds']:.1f}s)"
    )
    return True


def stop_early(tr, epoch: int, bad_epochs: int) -> bool:
    """``patience`` epochs without gain stop the run, but never in the cosine schedule's first two thirds:
    a high learning rate's plateau is no verdict."""
    return bool(tr.patience) and bad_epochs >= tr.patience and epoch >= tr.epochs - tr.epochs // 3


def train_epoch(
    spec: ExperimentSpec, split: Split, step: Step, epoch: int, start=0, sums=None, stop=lambda: False
) -> tuple[dict, int]:
    """One pass over the training pictures from step ``start`` (``sums``: those of the steps before);
    the loss parts and correct answers summed on the device, and the steps done: fewer than the epoch's
    when ``stop()`` said so after one (a Python flag: no synchronisation)."""
    tr, device, targets = spec.train, split.device, step.targets
    step.model.train()
    if step.proj:
        step.proj.train()
    gen = torch.Generator().manual_seed(tr.seed * 100_003 + epoch)  # replayable epoch: order, views
    n = len(split.train)
    order = torch.as_tensor(split.train)[torch.randperm(n, generator=gen)].to(device)
    view = torch.randint(targets.views, (n,), generator=gen).to(device) if targets else None
    fresh = augment.sample(n, gen, **augment.options(spec.teacher)).to(device)  # trained on labels alone
    sums = sums or dict.fromkeys((*PARTS, "correct"), 0.0)
    for b in range(start, steps_per_epoch(tr, n)):
        sl = slice(b * tr.batch_size, (b + 1) * tr.batch_size)
        parts, logits, y = step(order[sl], None if view is None else view[sl], fresh[sl])
        for key in parts:  # summed on the device: no synchronisation per step
            sums[key] = sums[key] + parts[key].detach() * len(y)
        sums["correct"] = sums["correct"] + (logits.argmax(1) == y).sum()
        if stop():
            return sums, b + 1
    return sums, steps_per_epoch(tr, n)


def validate(
    spec: ExperimentSpec, split: Split, step: Step, state: dict, epoch: int
) -> tuple[float | None, float | None]:
    """Macro-F1 and accuracy on validation of the weights that would be exported; keeps the best. With
    no validation pictures (``data.train_on = "all"``, a refit) the last epoch is the one kept."""
    tr, y = spec.train, split.labels[split.val]
    model = step.ema.module if step.ema else step.model
    if len(split.val) == 0:
        last = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
        state.update(best_epoch=epoch, best_state=last)
        return None, None
    idx = torch.as_tensor(split.val).to(split.device)
    logits = predict(model, split.images[idx], tr.image_size, split.device, export.TTA_VIEWS[spec.export.tta])
    f1, _, _ = losses.macro_f1(logits.argmax(1), y, split.nc)
    if f1 > state["best_f1"]:
        best = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
        state.update(best_f1=f1, best_epoch=epoch, bad_epochs=0, best_val_logits=logits, best_state=best)
    else:
        state["bad_epochs"] += 1
    return f1, float((logits.argmax(1) == y).float().mean())


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _shown(x: float | None) -> str:
    return "none" if x is None else f"{x:.4f}"
