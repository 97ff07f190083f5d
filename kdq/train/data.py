"""The dataset: find the class folders, decode every picture once into one uint8 tensor, split without leaks.

    ds = load(data_dir, cache_dir, decode_size=256)     # Decoded: uint8 [N,3,S,S], labels, duplicate keys
    gid = groups(ds.digests, ds.hashes, ds.thumbs)      # duplicate groups (kdq.dedup)
    train, val, holdout = three_way(ds.labels, gid, val_fraction=0.15, holdout_fraction=0.08, seed=0)
    for start, chunk in stream(root, ds.files, 448):    # the same pictures at the teacher's size, in chunks

The class folders are found by ``kdq.train.layout`` (the grader's class order; the nested layout of the
course's archive). Pictures are decoded straight into a preallocated uint8 tensor (peak
memory about that tensor, whatever N), squashed to a square like the grader's ``Resize((224, 224))``.
16-bit and float pictures are scaled to 8 bits (``to_rgb8``); files that do not decode are skipped and
listed with the reason. EXIF orientation is *not* applied: the grader's loader (``Image.open`` then
``convert("RGB")``, as torchvision's ImageFolder does) ignores it, so kdq trains on the pixels the grader
will see. The decoded tensor is cached under ``cache_dir/decoded/`` keyed by a fingerprint of the file
list (relative paths, sizes, labels) and the decode size.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kdq import runfolder
from kdq.train.layout import DataError, discover, find_root  # noqa: F401 (find_root: data.find_root)

HASH_SIDE = 16  # average hash of 16x16 = 256 bits
NEAR_COLOUR = 8.0  # 16x16 colour thumbnails this close (mean |diff|, 0..255): the same picture, resized
NEAR_BITS = 32  # ... and average hashes at most this far apart (of 256 bits)
CHUNK = 64  # pictures per chunk when streaming to the teacher


@dataclass
class Decoded:
    classes: list[str]
    files: list[str]  # relative to root
    labels: torch.Tensor  # int64 [N]
    images: torch.Tensor  # uint8 [N,3,S,S]
    hashes: torch.Tensor  # bool [N, HASH_SIDE**2]
    thumbs: torch.Tensor  # uint8 [N,3,HASH_SIDE,HASH_SIDE]
    digests: list[str]  # sha1 of the file bytes
    fingerprint: str
    sizes: torch.Tensor  # int64 [N,2]: width, height of the file's picture (its aspect, for padding)
    root: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


# ---------------------------------------------------------------- decoding


def to_rgb8(im: Image.Image) -> Image.Image:
    """An 8-bit RGB picture of ``im``. ``convert("RGB")`` alone clips 16-bit greyscale (``I;16``, ``I``)
    to 255 and zeroes float (``F``) pictures: those are scaled from their range first. Raises
    ``ValueError`` (the reason the file is skipped) for pixel values no scaling can make sense of."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"{im.mode} picture with NaN or infinite pixels")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"{im.mode} picture with pixel values {lo:g}..{hi:g}, outside 0..65535")
        if im.mode == "F" and hi <= 1:
            scale = 255.0  # float pictures in [0, 1]
        elif im.mode.startswith("I;16") or hi > 255:
            scale = 255 / 65535  # 16-bit range
        else:
            scale = 1.0  # already 8-bit values in a wider type
        im = Image.fromarray(np.rint(a * scale).astype(np.uint8), mode="L")
    return im.convert("RGB")


def keys(picture: np.ndarray, side: int = HASH_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The duplicate keys of one uint8 [3,S,S] picture: ``(average hash bool [side*side], colour
    thumbnail uint8 [3,side,side])``. Computed per picture, so no float copy of the dataset is made."""
    small = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(picture).float(), side)
    grey = small.mean(0).flatten()
    return (grey > grey.mean()).numpy(), small.round().to(torch.uint8).numpy()


def decode_one(path: Path, size: int) -> tuple[np.ndarray, str, tuple[int, int]]:
    """``(uint8 [3,size,size], sha1 of the bytes, (width, height))``: squashed to a square like the
    grader's resize."""
    data = path.read_bytes()
    with Image.open(path) as im:
        im.load()
        wh = im.size
        rgb = to_rgb8(im).resize((size, size), Image.BILINEAR)
    return np.array(rgb).transpose(2, 0, 1), hashlib.sha1(data).hexdigest(), wh


def _decode_all(
    root: Path, files: list, size: int, workers: int | None, with_keys: bool = False
) -> Iterator[tuple[int, object]]:
    """``(index, result or reason)`` in file order; a few pictures in flight at a time."""

    def job(rel):
        try:
            picture, digest, wh = decode_one(root / rel, size)
            return (picture, digest, wh, *keys(picture)) if with_keys else (picture,)
        except Exception as exc:  # noqa: BLE001 — PIL raises many kinds for broken files
            return f"{type(exc).__name__}: {exc}"

    workers = workers or min(8, os.cpu_count() or 1)
    window = 4 * workers  # bounded read-ahead: never the whole dataset in flight
    with ThreadPoolExecutor(workers) as pool:
        pending = [pool.submit(job, rel) for rel in files[:window]]
        for i in range(len(files)):
            result = pending[i].result()
            pending[i] = None
            if i + window < len(files):
                pending.append(pool.submit(job, files[i + window]))
            yield i, result


def stream(
    root: Path, files: list, size: int, chunk: int = CHUNK, workers: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, uint8 [c,3,size,size])`` chunks of ``files`` in order: the same pictures at another size
    (the teacher's) without holding them all. A file that fails here decoded before: an error."""
    start, buf = 0, None
    for i, result in _decode_all(Path(root), files, size, workers):
        if isinstance(result, str):
            raise DataError(f"{Path(root) / files[i]}: decoded before, fails now ({result})")
        if buf is None:  # a fresh buffer per chunk: the caller may keep the chunks it was given
            buf = torch.empty(min(chunk, len(files) - i), 3, size, size, dtype=torch.uint8)
        buf[i - start] = torch.from_numpy(result[0])
        if i - start + 1 == len(buf):
            yield start, buf
            start, buf = i + 1, None


def load(
    data_dir: Path,
    cache_dir: Path | None,
    decode_size: int,
    limit_per_class: int | None = None,
    workers: int | None = None,
) -> Decoded:
    """Decode every picture once (or read the cache written the first time)."""
    ds = discover(data_dir, limit_per_class)
    fp = ds.fingerprint()
    cache = Path(cache_dir) / "decoded" / f"{fp}-{decode_size}.pt" if cache_dir else None
    if cache and cache.exists():
        return Decoded(**torch.load(cache, weights_only=True))
    n = len(ds.files)
    images = torch.empty(n, 3, decode_size, decode_size, dtype=torch.uint8)  # the only big allocation
    hashes = torch.empty(n, HASH_SIDE**2, dtype=torch.bool)
    thumbs = torch.empty(n, 3, HASH_SIDE, HASH_SIDE, dtype=torch.uint8)
    keep, digests, sizes, skipped = [], [], [], []
    for i, result in _decode_all(ds.root, ds.files, decode_size, workers, with_keys=True):
        if isinstance(result, str):
            skipped.append((str(ds.files[i]), result))
            continue
        k = len(keep)
        images[k], hashes[k], thumbs[k] = (torch.from_numpy(a) for a in (result[0], *result[3:]))
        keep.append(i)
        digests.append(result[1])
        sizes.append(result[2])
    for f, why in skipped:
        warnings.warn(f"skipping {ds.root / f}: cannot decode ({why})", stacklevel=2)
    if not keep:
        raise DataError(f"{ds.root}: none of the {n} images could be decoded")
    k = len(keep)
    out = Decoded(
        classes=ds.classes,
        files=[str(ds.files[i]) for i in keep],
        labels=torch.tensor([ds.labels[i] for i in keep]),
        images=images[:k],
        hashes=hashes[:k],
        thumbs=thumbs[:k],
        digests=digests,
        fingerprint=fp,
        sizes=torch.tensor(sizes, dtype=torch.int64),
        root=str(ds.root),
        skipped=skipped,
    )
    if cache:
        with runfolder.atomic_path(cache) as tmp:
            torch.save(out.__dict__, tmp)
    return out


# ---------------------------------------------------------------- split (pure)


def groups(
    digests: list[str],
    hashes: torch.Tensor,
    thumbs: torch.Tensor,
    near_bits: int = NEAR_BITS,
    near_colour: float = NEAR_COLOUR,
) -> np.ndarray:
    """Group id per image: identical bytes, or near pictures (resized, recompressed), share a group.

    Near: 16x16 colour thumbnails within ``near_colour`` mean absolute difference (0..255) and
    average hashes within ``near_bits`` of 256. The thumbnails separate planted near-duplicates
    (at most ~6) from distinct synthetic pictures (at least ~11) even at 24 px; the hash guards
    against two different photos that merely share a colour layout.
    """
    from kdq.dedup import duplicate_groups

    return duplicate_groups(digests, hashes.numpy(), thumbs.numpy(), near_bits, near_colour)


def split(labels, group_ids, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/val indices; a group (duplicates) is never split across the two sides."""
    labels = np.asarray(labels)
    group_ids = np.asarray(group_ids)
    rng = np.random.default_rng(seed)
    # a group goes with the class most of its members have (cross-class duplicates: the first such)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(int(g), []).append(i)
    by_class: dict[int, list[int]] = {}
    for g, idx in members.items():
        by_class.setdefault(int(np.bincount(labels[idx]).argmax()), []).append(g)
    val: list[int] = []
    for c in sorted(by_class):
        gs = by_class[c]
        rng.shuffle(gs)
        total = sum(len(members[g]) for g in gs)
        target = max(1, round(val_fraction * total)) if len(gs) > 1 else 0
        taken = 0
        for g in gs:
            if taken >= target:
                break
            val += members[g]
            taken += len(members[g])
    val_idx = np.array(sorted(val), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def three_way(
    labels, group_ids, val_fraction: float, holdout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, holdout)`` indices, stratified, no duplicate group across two of them. The holdout
    is drawn first and is never looked at while training (no early stopping, epoch choice, bias or
    probe): its F1 is an honest estimate. Both fractions are of the whole dataset."""
    labels, group_ids = np.asarray(labels), np.asarray(group_ids)
    if holdout_fraction <= 0:
        train, val = split(labels, group_ids, val_fraction, seed)
        return train, val, np.zeros(0, dtype=np.int64)
    rest, holdout = split(labels, group_ids, holdout_fraction, seed + 7919)
    tr, va = split(labels[rest], group_ids[rest], val_fraction / (1 - holdout_fraction), seed)
    return rest[tr], rest[va], holdout


def split_for(spec_data, labels, group_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run's ``(train, val, holdout)`` indices under ``spec.data``: ``three_way``; or, with
    ``train_on = "all"`` (a refit), every picture to train on and none to validate or hold out."""
    if spec_data.train_on == "all":
        none = np.zeros(0, dtype=np.int64)
        return np.arange(len(labels), dtype=np.int64), none, none
    d = spec_data
    return three_way(labels, group_ids, d.val_fraction, d.holdout_fraction, d.split_seed)


def class_weights(labels, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over classes (a class with no images gets 0)."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).float()
    w = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return w * num_classes / w.sum()


@dataclass
class Split:
    """Every picture, decoded once, and its three splits (no duplicate group across two)."""

    ds: Decoded
    groups: np.ndarray  # duplicate group per picture
    train: np.ndarray
    val: np.ndarray
    hold: np.ndarray
    images: torch.Tensor  # uint8 [N,3,S,S] on the training device
    labels: torch.Tensor  # int64 [N] on the CPU

    @property
    def nc(self) -> int:
        return len(self.ds.classes)

    @property
    def device(self) -> torch.device:
        return self.images.device
