"""One training step of the student, the same in ``kdq.train.loop`` and in the GPU benchmark.

    step = Step(model, forward, opt, sched, ...)      # everything on the training device
    parts, logits, y = step(idx, view, fresh)          # device tensors in, nothing read back
    opt, sched = optimizer(spec.train, params, steps_per_epoch(spec.train, n_train))
    averaged = ema(model, spec.train.ema_decay)       # the EMA of the weights, on the model's device

A batch's distillation term is weighted by ``losses.kd_ramp`` over the first ``kd_warmup_steps`` steps.

A batch's first ``k`` pictures are rendered as the teacher saw them (view ``view`` of each, with its
logits and embedding); the rest are fresh random crops (``fresh``) trained on the label alone. Every
index is already on the device, so a step neither copies to it nor waits on it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn

from kdq.train import augment, losses


@dataclass
class Step:
    model: nn.Module  # what the EMA follows and export writes
    forward: nn.Module  # the module that trains: ``model`` or ``torch.compile(model)``
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: ModelEmaV3 | None
    proj: nn.Module | None  # the embedding-distillation head, dropped at export
    feats: dict  # filled by a forward hook on the classifier: its input, the pooled feature
    params: list  # every trained parameter (student and head), for gradient clipping
    images: torch.Tensor  # uint8 [N,3,S,S]
    labels: torch.Tensor  # int64 [N]
    targets: object | None  # kdq.train.teacher.Targets, on the device
    dist: object  # the spec's DistillSpec
    weight: torch.Tensor | None  # class weights
    image_size: int
    kd_warmup_steps: int = 0  # the distillation term ramps up over these steps

    def __call__(self, idx: torch.Tensor, view: torch.Tensor | None, fresh: torch.Tensor):
        """``(loss parts, logits, labels)`` of the batch of pictures ``idx`` after one update."""
        t, dist, device = self.targets, self.dist, self.images.device
        y = self.labels[idx]
        k = 0 if t is None else len(idx) - round(dist.fresh_fraction * len(idx))  # the teacher's share
        p, t_logits = fresh, None
        if k:  # the views the teacher saw, and its answers for them
            v = view[:k]
            p = torch.cat([t.params[idx[:k], v], fresh[k:]])
            t_logits = t.logits[idx[:k], v]
        x = augment.replay(self.images, idx, p, self.image_size, mixed=t is not None and t.mixed)
        y = augment.labels(self.labels, idx, p) if t is not None and t.mixed else y  # a mix: its main picture
        cuda = device.type == "cuda"
        x = x.contiguous(memory_format=torch.channels_last) if cuda else x
        with torch.autocast("cuda", torch.bfloat16) if cuda else contextlib.nullcontext():
            logits = self.forward(x).float()
            kd_scale = losses.kd_ramp(self.sched.last_epoch, self.kd_warmup_steps)  # a Python number
            parts = losses.batch_loss(dist, logits, t_logits, y, k, self.weight, kd_scale)
            if self.proj is not None and k:  # embedding distillation through the projection head
                e_t = F.normalize(t.embeddings[idx[:k], v].float(), dim=1)
                parts["embed"] = losses.embed(self.proj(self.feats["f"][:k].float()), e_t, dist.embed_loss)
                parts["loss"] = parts["loss"] + dist.embed_weight * parts["embed"] * k / len(idx)
        self.opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:  # its decay ramps with the step count, a Python number
            self.ema.update(self.model, step=self.sched.last_epoch)
        return parts, logits, y


def schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 1% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def steps_per_epoch(tr, n_train: int) -> int:
    """Steps in an epoch of ``n_train`` pictures under the spec's ``train`` section (the last one short)."""
    return max(1, math.ceil(n_train / tr.batch_size))


def optimizer(tr, params: list, steps: int):
    """The spec's optimizer (no weight decay on norms and biases) and its per-step schedule: a linear
    warm-up, then a cosine over every remaining step of ``tr.epochs`` epochs of ``steps`` steps."""
    groups = [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if tr.optimizer == "adamw":  # fused: one kernel for every parameter, where the device has it
        fused = all(p.is_cuda for p in params)
        opt = torch.optim.AdamW(groups, lr=tr.lr, weight_decay=tr.weight_decay, fused=fused or None)
    else:
        opt = torch.optim.SGD(groups, lr=tr.lr, momentum=0.9, weight_decay=tr.weight_decay, nesterov=True)
    total, warmup = tr.epochs * steps, round(tr.warmup_epochs * steps)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, total, warmup))


def ema(model: nn.Module, decay: float | None) -> ModelEmaV3 | None:
    """timm's EMA of the weights and buffers, kept on the model's device and updated there with no
    read-back (torch's ``AveragedModel`` reads its step counter back at every update). Its decay ramps
    up (1 - (1 + step)^-3/4, timm's warm-up) to ``decay``, so a short run averages over its own steps;
    the first update copies the weights. None when ``decay`` is None (off)."""
    if decay is None:
        return None
    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=3 / 4, stochastic_rounding=False)
