"""The teacher: SigLIP image embeddings under V augmented views, computed once and cached; class logits
from a linear probe (out-of-fold for training images) or from zero-shot text prompts.

    targets = prepare(spec.teacher, decoded, train_idx, val_idx, cache_dir, device)
    targets.params[i, v]      the view (augment parameters) the teacher saw of image i
    targets.embeddings[i, v]  its image embedding
    targets.logits[i, v]      its class logits (out-of-fold probe for training images)
    targets.val_f1            the head's macro-F1 on the plain validation images: the student's ceiling

``model`` is a Hugging Face id (``google/medsiglip-448``: gated; huggingface_hub finds the user's
token), or a randomly initialised stand-in built from a SiglipConfig: ``tiny`` (tests, demo),
``random-b16-224`` (ViT-B/16 size, for benchmarks) or ``random-so400m-448`` (MedSigLIP's size).
The cache is keyed by teacher, dataset fingerprint, decode size, preprocessing and V; the split
and the head are not part of the key, so every experiment on the dataset reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdq.spec import TeacherSpec
from kdq.train import augment
from kdq.train.losses import macro_f1

RANDOM = {  # name -> (vision config, text config): randomly initialised stand-ins
    "tiny": (
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=1000,
            max_position_embeddings=16,
        ),
    ),
    "random-b16-224": (
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        ),
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=1000,
            max_position_embeddings=16,
        ),
    ),
    "random-so400m-448": (
        dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            image_size=448,
            patch_size=14,
        ),
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=1000,
            max_position_embeddings=16,
        ),
    ),
}
CACHE_VERSION = 1


@dataclass
class Teacher:
    model: torch.nn.Module  # a transformers SiglipModel
    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    dtype: torch.dtype

    @torch.no_grad()
    def embed(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Image embeddings (float32 [B, D]) of views of uint8 ``images``."""
        x = augment.render(
            images.to(self.device), params, self.image_size, self.mean, self.std, dtype=self.dtype
        )
        out = self.model.get_image_features(pixel_values=x)
        return (out if isinstance(out, torch.Tensor) else out.pooler_output).float()

    @torch.no_grad()
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        if self.name not in RANDOM:  # the tokenizer is only needed here, so it is loaded only here
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.name)
            tok = tokenizer(prompts, padding="max_length", truncation=True, return_tensors="pt")
            ids = tok["input_ids"].to(self.device)
        else:  # random stand-in: a deterministic byte-level "tokenizer" into its small vocabulary
            length = self.model.config.text_config.max_position_embeddings
            vocab = self.model.config.text_config.vocab_size
            ids = torch.tensor(
                [
                    [(b % (vocab - 2)) + 2 for b in p.encode()[:length]]
                    + [1] * (length - len(p.encode()[:length]))
                    for p in prompts
                ],
                device=self.device,
            )
        out = self.model.get_text_features(input_ids=ids)
        return (out if isinstance(out, torch.Tensor) else out.pooler_output).float()


def _unavailable(name: str, exc: OSError) -> RuntimeError:
    return RuntimeError(
        f"teacher.model = {name!r} could not be loaded ({str(exc).splitlines()[0][:200]}). It is gated: accept "
        "its terms on huggingface.co and log in with `hf auth login` (or set HF_TOKEN); offline, use "
        "teacher.model = 'tiny'"
    )


def load(name: str, device: torch.device) -> Teacher:
    from transformers import SiglipConfig, SiglipModel

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if name in RANDOM:
        vision, text = RANDOM[name]
        cfg = SiglipConfig(vision_config=vision, text_config=text)
        cfg._attn_implementation = "sdpa"
        with torch.random.fork_rng(devices=[]):  # the same random teacher every time (its cache stays
            torch.manual_seed(0)  # valid), without touching the caller's random stream
            model = SiglipModel(cfg)
        model = model.to(device=device, dtype=dtype).eval()
        return Teacher(model, name, vision["image_size"], (0.5,) * 3, (0.5,) * 3, device, dtype)
    if name.startswith("random-") or name == "tiny":
        raise ValueError(f"teacher.model = {name!r}: unknown stand-in; choose one of {', '.join(RANDOM)}")
    from transformers import AutoModel

    try:  # huggingface_hub finds the token (HF_TOKEN or `hf auth login`) by itself
        model = AutoModel.from_pretrained(name, dtype=dtype, attn_implementation="sdpa").to(device).eval()
        size, mean, std = preprocessing(name)
    except OSError as exc:
        raise _unavailable(name, exc) from None
    return Teacher(model, name, size, mean, std, device, dtype)


# ---------------------------------------------------------------- the embedding cache


def view_params(n: int, views: int, fingerprint: str) -> torch.Tensor:
    """The V views of every image: fixed per dataset, so any cache entry can be rendered again."""
    gen = torch.Generator().manual_seed(int(fingerprint[:8], 16))
    return augment.sample(n * views, gen).view(n, views, -1)


def cache_path(
    cache_dir: Path,
    name: str,
    fingerprint: str,
    decode_size: int,
    views: int,
    preprocessing: tuple[int, tuple, tuple],
) -> Path:
    size, mean, std = preprocessing
    body = json.dumps(
        {
            "v": CACHE_VERSION,
            "teacher": name,
            "data": fingerprint,
            "decode": decode_size,
            "size": size,
            "mean": list(mean),
            "std": list(std),
            "views": views,
            "augment": augment.FIELDS,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(body.encode()).hexdigest()[:20]
    return Path(cache_dir) / "teacher" / f"{name.replace('/', '--')}-{key}.pt"


def preprocessing(name: str) -> tuple[int, tuple, tuple]:
    """(input size, mean, std) of a teacher (its own image processor's), without loading its weights."""
    if name in RANDOM:
        return RANDOM[name][0]["image_size"], (0.5,) * 3, (0.5,) * 3
    from transformers import AutoImageProcessor

    try:
        proc = AutoImageProcessor.from_pretrained(name)
    except OSError as exc:
        raise _unavailable(name, exc) from None
    size = proc.size.get("height") or proc.size.get("shortest_edge")
    return int(size), tuple(proc.image_mean), tuple(proc.image_std)


def embeddings(
    teacher: Teacher,
    images: torch.Tensor,
    fingerprint: str,
    views: int,
    cache_dir: Path | None,
    batch: int = 64,
) -> dict:
    """``{"params": [N,V,9], "views": [N,V,D], "plain": [N,D]}``, from the cache or computed once."""
    path = None
    if cache_dir:
        path = cache_path(
            cache_dir,
            teacher.name,
            fingerprint,
            images.shape[-1],
            views,
            (teacher.image_size, teacher.mean, teacher.std),
        )
        if path.exists():
            return torch.load(path, weights_only=True)
    n = len(images)
    params = view_params(n, views, fingerprint)
    flat_params = torch.cat([augment.identity(n).unsqueeze(1), params], 1).view(n * (views + 1), -1)
    order = torch.arange(n).repeat_interleave(views + 1)
    out = []
    for i in range(0, len(order), batch):
        out.append(
            teacher.embed(images[order[i : i + batch].to(images.device)], flat_params[i : i + batch]).cpu()
        )
    emb = torch.cat(out).view(n, views + 1, -1)
    result = {"params": params, "views": emb[:, 1:].half(), "plain": emb[:, 0].half()}
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(result, tmp)
        os.replace(tmp, path)
    return result


# ---------------------------------------------------------------- heads (pure)


def features(e: torch.Tensor) -> torch.Tensor:
    """Probe input: L2-normalized embeddings scaled to unit variance per dimension on average."""
    return F.normalize(e.float(), dim=-1) * e.shape[-1] ** 0.5


def fit_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float = 1e-3,
    weight: torch.Tensor | None = None,
    iters: int = 100,
) -> torch.nn.Linear:
    """Multinomial logistic regression (full-batch L-BFGS, L2 on the weights): the linear probe."""
    x, y = x.float(), y.long().to(x.device)
    weight = weight.to(x.device) if weight is not None else None
    lin = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y, weight=weight) + l2 * lin.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin.requires_grad_(False)


def oof_logits(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    folds: int = 5,
    seed: int = 0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Out-of-fold probe logits for ``x`` [n,V,D] (all V views of an image in the same fold): [n,V,C]."""
    from sklearn.model_selection import StratifiedKFold

    n, v, d = x.shape
    y = y.cpu()
    counts = np.bincount(y.numpy())
    k = int(min(folds, counts.min()))
    if k < 2:
        raise ValueError(
            f"class {int(counts.argmin())} has {int(counts.min())} training image(s); out-of-fold "
            "teacher logits need 2 or more per class: add images, lower data.val_fraction or use "
            "teacher.head = 'zeroshot'"
        )
    out = torch.zeros(n, v, num_classes)
    for fit_idx, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y.numpy()):
        probe = fit_probe(
            x[fit_idx].reshape(-1, d), y[fit_idx].repeat_interleave(v), num_classes, weight=weight
        )
        out[held] = probe(x[held].reshape(-1, d)).view(len(held), v, -1).cpu()
    return out


def zero_shot_logits(teacher: Teacher, classes: list[str], emb: torch.Tensor) -> torch.Tensor:
    """SigLIP logits of every image embedding against one prompt per class."""
    names = [c.split(". ", 1)[-1] for c in classes]
    text = F.normalize(
        teacher.embed_text([f"a dermatology photo of {n.lower()}" for n in names]), dim=-1
    ).cpu()
    scale = float(teacher.model.logit_scale.float().exp())
    bias = float(teacher.model.logit_bias.float())
    return F.normalize(emb.float(), dim=-1) @ text.T * scale + bias


# ---------------------------------------------------------------- what the loop uses


@dataclass
class Targets:
    params: torch.Tensor  # [N,V,9]
    embeddings: torch.Tensor  # [N,V,D] float16
    logits: torch.Tensor  # [N,V,C]
    val_f1: float
    views: int


def prepare(
    spec: TeacherSpec,
    ds,
    train_idx,
    val_idx,
    cache_dir: Path | None,
    device: torch.device,
    seed: int = 0,
    decode: Callable[[int], object] | None = None,
) -> Targets:
    """Targets for every image of ``ds``. ``decode(size)`` gives the same dataset decoded at another
    size: when the teacher's input is larger than ``ds``'s pictures, its views are rendered from a
    decode at its own size (once, on a cache miss), so it never sees upsampled pictures."""
    prep = preprocessing(spec.model)
    size = max(prep[0], ds.images.shape[-1]) if decode else ds.images.shape[-1]
    path = cache_path(cache_dir, spec.model, ds.fingerprint, size, spec.views, prep) if cache_dir else None
    teacher = None  # loaded only when needed: the cache is missing, or text prompts must be embedded
    if path is None or not path.exists() or spec.head == "zeroshot":
        teacher = load(spec.model, device)
    if path and path.exists():
        cached = torch.load(path, weights_only=True)
    else:
        images = ds.images
        if size != images.shape[-1]:
            big = decode(size)
            if big.files != ds.files:
                raise RuntimeError(
                    f"decoding at {size} px gave another file list than at {images.shape[-1]} px"
                )
            images = big.images
        cached = embeddings(teacher, images, ds.fingerprint, spec.views, cache_dir)
    nc, y = len(ds.classes), ds.labels
    train_idx, val_idx = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    n, v = cached["views"].shape[:2]
    logits = torch.zeros(n, v, nc)
    if spec.head == "zeroshot":
        logits = zero_shot_logits(teacher, ds.classes, cached["views"].reshape(n * v, -1)).view(n, v, nc)
        val_pred = zero_shot_logits(teacher, ds.classes, cached["plain"][val_idx])
    else:
        x = features(cached["views"].to(device))  # the probe is fitted where the student trains
        counts = torch.bincount(y[train_idx], minlength=nc).float()
        weight = counts.sum() / (nc * counts.clamp(min=1))
        logits[train_idx] = oof_logits(x[train_idx], y[train_idx], nc, seed=seed, weight=weight)
        probe = fit_probe(
            x[train_idx].reshape(-1, x.shape[-1]), y[train_idx].repeat_interleave(v), nc, weight=weight
        )
        logits[val_idx] = probe(x[val_idx].reshape(-1, x.shape[-1])).view(len(val_idx), v, nc).cpu()
        val_pred = probe(features(cached["plain"][val_idx].to(device))).cpu()
    val_f1 = macro_f1(val_pred.argmax(1), y[val_idx], nc)[0] if len(val_idx) else float("nan")
    del teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Targets(cached["params"], cached["views"], logits, val_f1, v)
