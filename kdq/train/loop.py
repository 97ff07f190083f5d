"""The training loop: ``run(spec, run_dir, data_dir, cache_dir) -> summary``.

Read top to bottom: data (decoded once; train / val / holdout, no duplicate across two) -> teacher
targets (cached once per dataset, on the device) -> student -> optimizer -> resume? -> epochs (train,
validate, checkpoint, progress) -> export the best epoch -> holdout score -> metrics. A step copies
nothing to the device and reads nothing back: the epoch's order, views and fresh crops go over once.
Every file of the run-folder contract (kdq/runfolder.py) is written here; ``kdq.train.__main__`` adds
done.json / error.json around it.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kdq import runfolder
from kdq.spec import ExperimentSpec
from kdq.train import augment, data, export, losses, students
from kdq.train.bias import crossfit_f1, tune_bias
from kdq.train.evaluate import holdout_scores, predict
from kdq.train.step import Step

PARTS = ("loss", "ce", "kd", "tckd", "nckd", "embed")  # loss components, each its own history column
HISTORY_FIELDS = ["epoch", "lr", *PARTS, "train_acc", "val_f1", "val_acc", "best_f1", "seconds"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pick_device(want: str) -> torch.device:
    if want == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    return torch.device("cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 1% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def write_history(run_dir: Path, rows: list[dict]) -> None:
    with runfolder.atomic_path(run_dir / runfolder.HISTORY) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, HISTORY_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def run(
    spec: ExperimentSpec,
    run_dir: Path,
    data_dir: Path,
    cache_dir: Path,
    on_epoch: Callable[[int], None] | None = None,
) -> dict:
    run_dir, started = Path(run_dir), time.time()
    tr, ds_spec, dist, t_spec = spec.train, spec.data, spec.distill, spec.teacher
    device = pick_device(tr.device)
    torch.manual_seed(tr.seed)
    runfolder.write_progress(run_dir, epoch=0, epochs=tr.epochs, val_f1=None, best_f1=None, phase="data")

    # ---- data: decoded once, split by duplicate groups
    ds = data.load(data_dir, cache_dir, ds_spec.decode_size, ds_spec.limit_per_class)
    nc = len(ds.classes)
    gid = data.groups(ds.digests, ds.hashes, ds.thumbs)
    train_idx, val_idx, hold_idx = data.three_way(
        ds.labels, gid, ds_spec.val_fraction, ds_spec.holdout_fraction, ds_spec.split_seed
    )
    labels, labels_dev = ds.labels, ds.labels.to(device)
    weight = data.class_weights(labels[train_idx], nc).to(device) if dist.class_weighted else None
    images = ds.images.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    log(
        f"{len(ds.files)} images, {nc} classes, {len(train_idx)} train / {len(val_idx)} val / "
        f"{len(hold_idx)} holdout, {len(ds.skipped)} skipped, device {device}"
    )

    # ---- teacher: targets for every training image under V cached views
    targets = None
    if spec.teacher.kind != "none":
        from kdq.train import teacher

        runfolder.write_progress(
            run_dir, epoch=0, epochs=tr.epochs, val_f1=None, best_f1=None, phase="teacher"
        )
        targets = teacher.prepare(
            spec.teacher,
            ds,
            train_idx,
            val_idx,
            cache_dir,
            device,
            seed=ds_spec.split_seed,
            decode=lambda size: data.stream(data.find_root(data_dir), ds.files, size),  # not the cached root
            groups=gid,
        ).to(device)
        log(f"teacher {spec.teacher.model} ({spec.teacher.head}): val macro-F1 {targets.val_f1:.4f}")

    # ---- student (+ projection head for embedding distillation, dropped at export)
    torch.manual_seed(tr.seed)  # the student's initial weights depend on the seed alone
    model = students.build(spec.student, nc)
    students.check_size(model, spec.student.name)
    model = (
        model.to(device).to(memory_format=torch.channels_last) if device.type == "cuda" else model.to(device)
    )
    forward = torch.compile(model) if tr.compile else model  # trains; `model` itself is what is exported
    feats: dict[str, torch.Tensor] = {}
    head = students.classifier(model)
    hook = head.register_forward_hook(lambda m, inp, out: feats.__setitem__("f", inp[0]))
    proj = None
    if dist.embed_weight > 0 and targets is not None:
        proj = nn.Linear(head.in_features, targets.embeddings.shape[-1]).to(device)
    params = list(model.parameters()) + (list(proj.parameters()) if proj else [])
    groups = [
        {"params": [p for p in params if p.ndim > 1]},  # no weight decay on norms and biases
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if tr.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=tr.lr, weight_decay=tr.weight_decay)
    else:
        opt = torch.optim.SGD(groups, lr=tr.lr, momentum=0.9, weight_decay=tr.weight_decay, nesterov=True)
    steps = max(1, math.ceil(len(train_idx) / tr.batch_size))
    total, warmup = tr.epochs * steps, round(tr.warmup_epochs * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, total, warmup))
    ema = (
        torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(tr.ema_decay), use_buffers=True
        )
        if tr.ema_decay
        else None
    )

    step = Step(
        model,
        forward,
        opt,
        sched,
        ema,
        proj,
        feats,
        params,
        images,
        labels_dev,
        targets,
        dist,
        weight,
        tr.image_size,
    )

    # ---- resume
    state = {
        "epoch": -1,
        "best_f1": -1.0,
        "best_epoch": -1,
        "best_state": None,
        "best_val_logits": None,
        "bad_epochs": 0,
        "history": [],
    }
    ckpt_path = run_dir / runfolder.CHECKPOINT
    if ckpt_path.exists():
        ck = torch.load(
            ckpt_path, map_location="cpu", weights_only=False
        )  # load_state_dict moves to the device
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if ema and ck.get("ema"):
            ema.load_state_dict(ck["ema"])
        if proj and ck.get("proj"):
            proj.load_state_dict(ck["proj"])
        state = ck["state"]
        log(f"resumed from {ckpt_path} after epoch {state['epoch'] + 1}")  # counted from 1

    # ---- epochs
    for epoch in range(state["epoch"] + 1, tr.epochs):
        if tr.patience and state["bad_epochs"] >= tr.patience:
            break
        t0 = time.time()
        model.train()
        if proj:
            proj.train()
        gen = torch.Generator().manual_seed(tr.seed * 100_003 + epoch)  # replayable epoch: order, views
        n_tr = len(train_idx)
        order = torch.as_tensor(train_idx)[torch.randperm(n_tr, generator=gen)].to(device)
        view = torch.randint(targets.views, (n_tr,), generator=gen).to(device) if targets else None
        fresh_p = augment.sample(n_tr, gen).to(device)  # fresh random crops, trained on the label alone
        sums = dict.fromkeys((*PARTS, "correct"), 0.0)
        for b in range(steps):
            sl = slice(b * tr.batch_size, (b + 1) * tr.batch_size)
            parts, logits, y = step(order[sl], None if view is None else view[sl], fresh_p[sl])
            for key in parts:  # summed on the device: no synchronisation per step
                sums[key] = sums[key] + parts[key].detach() * len(y)
            sums["correct"] = sums["correct"] + (logits.argmax(1) == y).sum()

        eval_model = ema.module if ema else model
        val_logits = predict(
            eval_model, images[torch.as_tensor(val_idx).to(device)], tr.image_size, device, tr.tta_flip
        )
        val_f1, _, _ = losses.macro_f1(val_logits.argmax(1), labels[val_idx], nc)
        val_acc = float((val_logits.argmax(1) == labels[val_idx]).float().mean())
        if val_f1 > state["best_f1"]:
            state.update(
                best_f1=val_f1,
                best_epoch=epoch,
                bad_epochs=0,
                best_val_logits=val_logits,
                best_state={k: t.detach().cpu().clone() for k, t in eval_model.state_dict().items()},
            )
        else:
            state["bad_epochs"] += 1
        n = len(train_idx)
        row = {
            "epoch": epoch + 1,  # counted from 1, like best_epoch and progress.json
            "lr": opt.param_groups[0]["lr"],
            **{k: round(float(sums[k]) / n, 6) for k in PARTS},
            "train_acc": round(float(sums["correct"]) / n, 6),
            "val_f1": round(val_f1, 6),
            "val_acc": round(val_acc, 6),
            "best_f1": round(state["best_f1"], 6),
            "seconds": round(time.time() - t0, 3),
        }
        state["history"].append(row)
        state["epoch"] = epoch
        write_history(run_dir, state["history"])
        ck = {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "ema": ema.state_dict() if ema else None,
            "proj": proj.state_dict() if proj else None,
            "state": state,
        }
        with runfolder.atomic_path(ckpt_path) as tmp:
            torch.save(ck, tmp)
        runfolder.write_progress(
            run_dir,
            epoch=epoch + 1,
            epochs=tr.epochs,
            val_f1=val_f1,
            best_f1=state["best_f1"],
            phase="training",
        )
        log(
            f"epoch {epoch + 1}/{tr.epochs} loss {row['loss']:.4f} train_acc {row['train_acc']:.3f} "
            f"val_f1 {val_f1:.4f} ({row['seconds']:.1f}s)"
        )
        if on_epoch:
            on_epoch(epoch)

    # ---- export the best epoch
    def finished(phase: str) -> None:
        last = state["history"][-1]["val_f1"]
        runfolder.write_progress(
            run_dir,
            epoch=state["epoch"] + 1,
            epochs=tr.epochs,
            val_f1=last,
            best_f1=state["best_f1"],
            phase=phase,
        )

    finished("export")
    hook.remove()
    best = copy.deepcopy(ema.module if ema else model).cpu()
    best.load_state_dict(state["best_state"])
    y_val = labels[val_idx]
    bias, honest = None, None
    if tr.tune_bias:
        bias, _, _ = tune_bias(state["best_val_logits"], y_val)
        honest = crossfit_f1(state["best_val_logits"], y_val, seed=tr.seed)
    model_mb = export.save(
        best, run_dir / runfolder.MODEL, bias=bias, tta_flip=tr.tta_flip, train_size=tr.image_size
    )
    # ---- the holdout, scored once, on the CPU like the grader: nothing above has seen it
    hold_logits = predict(best, ds.images[hold_idx], tr.image_size, torch.device("cpu"), tr.tta_flip)
    holdout = holdout_scores(hold_logits, bias, labels[hold_idx], nc, seed=tr.seed)
    final_logits = state["best_val_logits"] + (bias if bias is not None else 0)
    in_sample, per_class, confusion = losses.macro_f1(final_logits.argmax(1), y_val, nc)
    # A bias tuned on validation and scored on it overstates its gain: then val_f1 is the cross-fitted
    # estimate (tuned on one half, scored on the other); per_class_f1 and confusion are the exported
    # model's own predictions on validation.
    val_f1 = honest if honest is not None else in_sample
    metrics = {
        "val_f1": val_f1,
        **holdout,
        # the holdout pictures, so verification can score the exported file on them as the grader would
        "holdout_files": [str(ds.files[int(i)]) for i in hold_idx],
        "holdout_labels": [int(y) for y in labels[hold_idx]],
        "val_acc": float((final_logits.argmax(1) == y_val).float().mean()),
        "per_class_f1": dict(zip(ds.classes, per_class)),
        "confusion": confusion,
        "classes": ds.classes,
        "best_epoch": state["best_epoch"] + 1,  # people count epochs from 1: every view shows it as is
        "epochs_run": state["epoch"] + 1,
        "model_mb": round(model_mb, 4),
        "params": sum(p.numel() for p in best.parameters()),
        "torch_version": torch.__version__,
        "device": str(device),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "skipped_files": ds.skipped,
        "dataset_fingerprint": ds.fingerprint,
        "val_f1_before_bias": state["best_f1"],
        "val_f1_bias_in_sample": in_sample if tr.tune_bias else None,
        "bias": bias.tolist() if bias is not None else None,
        "teacher_probe_f1": targets.val_f1 if targets is not None else None,  # the head's F1: the ceiling
        "teacher": None
        if targets is None
        else f"{t_spec.model} ({t_spec.head}, {t_spec.resize}, {t_spec.views} views)",
        "seconds": round(time.time() - started, 2),
    }
    runfolder.write_json(run_dir / runfolder.METRICS, metrics)
    finished("done")
    shown = (
        "none" if holdout["holdout_f1"] is None else f"{holdout['holdout_f1']:.4f} {holdout['holdout_f1_ci']}"
    )
    log(
        f"best epoch {metrics['best_epoch']}: val macro-F1 {val_f1:.4f}, holdout {shown}, "
        f"model {model_mb:.2f} MiB"
    )
    return {
        "val_f1": val_f1,
        "holdout_f1": holdout["holdout_f1"],
        "best_epoch": metrics["best_epoch"],
        "model_mb": round(model_mb, 4),
    }
