"""The teacher: SigLIP image embeddings of the plain picture, V augmented views and M mixed views,
computed once and cached; class logits from a head on them (``kdq.train.probe``: probe, MLP or
ensemble, out-of-fold for training images, calibrated) or from zero-shot prompts.

    targets = prepare(spec.teacher, decoded, train_idx, val_idx, cache_dir, device, groups=gid)
    targets.params[i, v]      the view (augment parameters) the teacher saw of image i; v = 0 is the
                              plain picture, 1..V the augmented views, then the mixed views
    targets.embeddings[i, v]  its pooled image embedding
    targets.logits[i, v]      its class logits (out-of-fold for training images)
    targets.val_f1            the head's macro-F1 on the plain validation images: the student's ceiling
    targets.probe             the head's record: {head, l2, cv_f1, temperature}

``model`` is a Hugging Face id (``google/medsiglip-448``: gated; huggingface_hub finds the user's
token), or a randomly initialised stand-in built from a SiglipConfig (``RANDOM``); only the vision
tower is loaded unless zero-shot needs the text tower. Pictures reach the teacher decoded at its own
input size, streamed in chunks (never all at once), padded to a square (``teacher.resize = "pad"``,
MedSigLIP's own preprocessing) or squashed. The cache is keyed by teacher, dataset fingerprint, decode
size, preprocessing, resize, features, V, the view ranges and the mixed views; the split and the head
are not part of the key (the logits are computed per run), so every experiment on the dataset reuses it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kdq import runfolder
from kdq.spec import TeacherSpec
from kdq.train import augment, mixing, probe
from kdq.train.losses import macro_f1
from kdq.train.siglip import (  # noqa: F401 (the model's names stay importable from here)
    RANDOM,
    TEXT_LENGTH,
    Teacher,
    _unavailable,
    load,
    preprocessing,
    zero_shot_logits,
)

CACHE_VERSION = 4  # 4: dihedral views, the augmentation ranges and the mixed views in the key
FOLDS = 5  # folds of the out-of-fold head, fixed per dataset (the mixed views' partners share one)
BATCH = mixing.BATCH  # views per teacher forward


def view_params(n: int, views: int, fingerprint: str, options: dict | None = None) -> torch.Tensor:
    """The V views of every image: fixed per dataset, so any cache entry can be rendered again;
    ``options``: ``augment.sample``'s ranges (``augment.options(spec)``)."""
    gen = torch.Generator().manual_seed(int(fingerprint[:8], 16))
    return augment.sample(n * views, gen, **(options or {})).view(n, views, len(augment.FIELDS))


def cache_path(
    cache_dir: Path,
    name: str,
    fingerprint: str,
    decode_size: int,
    views: int,
    preprocessing: tuple[int, tuple, tuple],
    resize: str = "squash",
    features: str = "pooled",
    extra: dict | None = None,
) -> Path:
    """The cache entry of these embeddings; ``extra``: what else they depend on (the view ranges, the
    mixed views and their folds)."""
    size, mean, std = preprocessing
    body = {
        "v": CACHE_VERSION,
        "teacher": name,
        "data": fingerprint,
        "decode": decode_size,
        "size": size,
        "mean": list(mean),
        "std": list(std),
        "views": views,
        "resize": resize,
        "features": features,
        "augment": augment.FIELDS,
        **(extra or {}),
    }
    key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / "teacher" / f"{name.replace('/', '--')}-{key}.pt"


def embed_stream(
    teacher: Teacher,
    chunks: Iterable[tuple[int, torch.Tensor]],
    n: int,
    fingerprint: str,
    views: int,
    aspect: torch.Tensor | None = None,
    batch: int = BATCH,
    on_progress: Callable[[int, int], None] | None = None,
    options: dict | None = None,
) -> dict:
    """``{"params": [N,V,F], "views": [N,V,D] fp16, "plain": [N,D] fp16}`` from ``(start, uint8 chunk)``
    pairs covering the N pictures in order: only one chunk of pictures is in memory at a time, and its
    embeddings stay on the device until the chunk is done (one copy back per chunk).
    ``on_progress(done, N)`` after each chunk: the pictures embedded so far (kdq status shows them).
    ``options``: the views' ranges (``augment.options``)."""
    params = view_params(n, views, fingerprint, options)
    plain_out, views_out = None, None
    for start, imgs in chunks:
        c = len(imgs)
        flat = torch.cat([augment.identity(c).unsqueeze(1), params[start : start + c]], 1).flatten(0, 1)
        order = torch.arange(c).repeat_interleave(views + 1)
        asp = aspect[start : start + c][order] if aspect is not None else None
        emb = torch.cat(
            [
                teacher.embed(
                    imgs[order[i : i + batch]],
                    flat[i : i + batch],
                    None if asp is None else asp[i : i + batch],
                ).half()
                for i in range(0, len(order), batch)
            ]
        )
        emb = emb.cpu().view(c, views + 1, -1)
        if plain_out is None:
            plain_out = torch.empty(n, emb.shape[-1], dtype=torch.float16)
            views_out = torch.empty(n, views, emb.shape[-1], dtype=torch.float16)
        plain_out[start : start + c], views_out[start : start + c] = emb[:, 0], emb[:, 1:]
        if on_progress:
            on_progress(start + c, n)
    return {"params": params, "views": views_out, "plain": plain_out}


def _save(result: dict, path: Path) -> None:
    with runfolder.atomic_path(path) as tmp:
        torch.save(result, tmp)


def embeddings(
    teacher: Teacher,
    images: torch.Tensor,
    fingerprint: str,
    views: int,
    cache_dir: Path | None,
    batch: int = BATCH,
) -> dict:
    """``embed_stream`` of an in-memory uint8 tensor, from the cache or computed once (squashed)."""
    prep = (teacher.image_size, teacher.mean, teacher.std)
    path = (
        cache_path(cache_dir, teacher.name, fingerprint, images.shape[-1], views, prep) if cache_dir else None
    )
    if path and path.exists():
        return torch.load(path, weights_only=True)
    result = embed_stream(teacher, [(0, images)], len(images), fingerprint, views, batch=batch)
    if path:
        _save(result, path)
    return result


@dataclass
class Targets:
    params: torch.Tensor  # [N,V+1,F]: view 0 is the plain picture
    embeddings: torch.Tensor  # [N,V+1,D] float16: the pooled embedding (what embedding distillation fits)
    logits: torch.Tensor  # [N,V+1,C], temperature-calibrated
    val_f1: float
    views: int  # V+1
    probe: dict | None = None  # the head: {head, l2, cv_f1, temperature} (None for zero-shot)
    per_class_f1: list[float] | None = None  # the head's F1 per class on the plain validation pictures
    mixed: bool = False  # views after the first V+1 are mixed pictures: the student renders partners

    def to(self, device: torch.device) -> Targets:
        """The same targets on ``device``: a training step then indexes them there, no copy per step."""
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731 — three uses in one line
        return replace(
            self, params=move(self.params), embeddings=move(self.embeddings), logits=move(self.logits)
        )


def _cached(spec: TeacherSpec, ds, cache_dir, device, decode, fold, on_progress=None):
    """``(cached embeddings of ds, the teacher if it was loaded)``, computed once on a cache miss (the
    vision tower is loaded then; zero-shot prompts need the text tower anyway). ``decode(size, index)``
    streams pictures ``index`` at the teacher's size; ``fold`` (dataset folds) pairs the mixed views."""
    prep = preprocessing(spec.model)
    size = max(prep[0], ds.images.shape[-1]) if decode else ds.images.shape[-1]
    if size == ds.images.shape[-1]:  # the decoded pictures are the teacher's
        decode = lambda _, index: _from_memory(ds.images, index)  # noqa: E731
    extra = {"options": augment.options(spec)}
    if spec.mix_views:
        digest = hashlib.sha256(np.ascontiguousarray(fold, dtype=np.int64).tobytes()).hexdigest()[:12]
        extra["mix"] = [spec.mix_views, spec.mix_alpha, spec.mix_cutmix, digest, mixing.BLOCK]
    path = None
    if cache_dir:
        path = cache_path(
            cache_dir, spec.model, ds.fingerprint, size, spec.views, prep, spec.resize, spec.features, extra
        )
    teacher = None  # loaded only when needed
    if path is None or not path.exists() or spec.head == "zeroshot":
        teacher = load(spec.model, device, text=spec.head == "zeroshot", features=spec.features)
    if path and path.exists():
        return torch.load(path, weights_only=True), teacher
    n = len(ds.files)
    aspect = ds.sizes[:, 0] / ds.sizes[:, 1] if spec.resize == "pad" else None
    chunks = decode(size, np.arange(n))
    cached = embed_stream(
        teacher,
        chunks,
        n,
        ds.fingerprint,
        spec.views,
        aspect,
        on_progress=on_progress,
        options=extra["options"],
    )
    if spec.mix_views:
        cached["mix_params"], blocks = mixing.plan(spec, fold, ds.fingerprint)
        cached["mix"] = mixing.embed(teacher, decode, size, cached["mix_params"], blocks, aspect)
    if path:
        _save(cached, path)
    return cached, teacher


def _from_memory(images: torch.Tensor, index, chunk: int = 64):
    """``(start, uint8 chunk)`` of in-memory pictures ``images[index]``, as ``data.stream`` gives them."""
    index = torch.as_tensor(np.asarray(index))
    return ((k, images[index[k : k + chunk]]) for k in range(0, len(index), chunk))


def _head(spec: TeacherSpec, emb, y, train_idx, val_idx, nc, device, seed, fold, v):
    """Calibrated logits [N,V+1+M,C] of every picture from the head fitted on the first ``v`` views of
    the training pictures (out-of-fold for them, mixed views too), and the head's record."""
    probe.check_counts(y[train_idx])
    parts = 2 if spec.features == "pooled+patch" else 1
    x = probe.features(emb[train_idx].to(device), parts)  # fitted where the student trains
    counts = torch.bincount(y[train_idx], minlength=nc).float()
    weight = counts.sum() / (nc * counts.clamp(min=1))
    extra = x[:, v:] if emb.shape[1] > v else None
    fitted = probe.fit_head(
        spec.head, x[:, :v], y[train_idx], nc, fold[train_idx], spec.l2, weight, seed, spec.members, extra
    )
    del x, extra
    logits = torch.zeros(len(y), emb.shape[1], nc)
    logits[train_idx] = fitted.oof
    x_val = probe.features(emb[val_idx].to(device), parts)
    logits[val_idx] = fitted.predict(x_val.flatten(0, 1)).view(len(val_idx), emb.shape[1], nc)
    return logits, fitted.info


def prepare(
    spec: TeacherSpec,
    ds,
    train_idx,
    val_idx,
    cache_dir: Path | None,
    device: torch.device,
    seed: int = 0,
    decode: Callable[[int, np.ndarray], Iterable[tuple[int, torch.Tensor]]] | None = None,
    groups=None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Targets:
    """Targets for every image of ``ds``. ``decode(size, index)`` streams pictures ``index`` of ``ds``
    decoded at another size, as ``(start, uint8 chunk)``: when the teacher's input is larger than
    ``ds``'s pictures, its views are rendered from that (once, on a cache miss), so it never sees
    upsampled pictures. ``groups`` (duplicate group per image) keeps near-copies in one fold of the
    out-of-fold head. ``on_progress(done, N)``: the pictures embedded so far, on a cache miss."""
    n, nc, y = len(ds.files), len(ds.classes), ds.labels
    fold = None
    if spec.head != "zeroshot" or spec.mix_views:  # per dataset: the mixed views' partners share it
        fold = probe.assign_folds(y, groups, FOLDS, seed=0)
    cached, teacher = _cached(spec, ds, cache_dir, device, decode, fold, on_progress)
    params = torch.cat([augment.identity(n).unsqueeze(1), cached["params"]], 1)
    emb = torch.cat([cached["plain"].unsqueeze(1), cached["views"]], 1)
    v = emb.shape[1]  # the plain picture and its augmented views; the mixed views after them
    if spec.mix_views:
        params, emb = torch.cat([params, cached["mix_params"]], 1), torch.cat([emb, cached["mix"]], 1)
    train_idx, val_idx = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    info = None
    pooled = emb[..., : emb.shape[-1] // 2] if spec.features == "pooled+patch" else emb
    if spec.head == "zeroshot":
        logits = zero_shot_logits(teacher, ds.classes, pooled.flatten(0, 1)).view(n, emb.shape[1], nc)
    else:
        logits, info = _head(spec, emb, y, train_idx, val_idx, nc, device, seed, fold, v)
    pooled = pooled.contiguous()
    mixing.partners_in_training(train_idx, v, params, pooled, logits)
    val_f1, per_class = float("nan"), None
    if len(val_idx):
        val_f1, per_class, _ = macro_f1(logits[val_idx, 0].argmax(1), y[val_idx], nc)  # plain pictures
    del teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Targets(params, pooled, logits, val_f1, emb.shape[1], info, per_class, spec.mix_views > 0)
