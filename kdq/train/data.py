"""The dataset: find the class folders, decode every image once, split without leaks.

    ds = load(data_dir, cache_dir, decode_size=256)     # Decoded: uint8 [N,3,S,S] + labels + hashes
    train_idx, val_idx = split(ds.labels, groups(ds), val_fraction=0.15, seed=0)

Class order is the grader's: ``sorted(class folder names)`` as strings. The layout may be
``data_dir/<class>/`` or the archive's nested ``data_dir/train_dataset/train_dataset/<class>/``;
``__MACOSX/``, hidden files and files with other extensions are ignored; files that do not decode
are skipped and listed. The decoded tensor is cached under ``cache_dir/decoded/`` keyed by a
fingerprint of the file list (relative paths and sizes) and the decode size.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kdq import grader

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".jfif", ".webp", ".gif"})
HASH_SIDE = 16  # average hash of 16x16 = 256 bits
NEAR_COLOUR = 8.0  # 16x16 colour thumbnails this close (mean |diff|, 0..255): the same picture, resized
NEAR_BITS = 32  # ... and average hashes at most this far apart (of 256 bits)
CACHE_VERSION = 2


class DataError(ValueError):
    pass


@dataclass
class Dataset:
    root: Path  # the folder that holds the class folders
    classes: list[str]  # grader order
    files: list[Path]  # relative to root
    labels: list[int]

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
        for f, y in zip(self.files, self.labels):
            h.update(f"{f}\0{y}\0{(self.root / f).stat().st_size}\n".encode())
        return h.hexdigest()[:16]


@dataclass
class Decoded:
    classes: list[str]
    files: list[str]
    labels: torch.Tensor  # int64 [N]
    images: torch.Tensor  # uint8 [N,3,S,S]
    hashes: torch.Tensor  # bool [N, HASH_SIDE**2]
    thumbs: torch.Tensor  # uint8 [N,3,HASH_SIDE,HASH_SIDE]
    digests: list[str]  # sha1 of the file bytes
    fingerprint: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def _visible(p: Path | str) -> bool:
    name = Path(p).name
    return not name.startswith(".") and name != "__MACOSX"


def find_root(data_dir: Path) -> Path:
    """The folder whose sub-folders are the classes (follows single-folder nesting like the zip's)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"dataset folder {data_dir} does not exist: create it with `kdq data synth {data_dir}` "
            "or unzip the course's train_dataset.zip there"
        )
    node = data_dir
    for _ in range(4):
        subdirs = [d for d in sorted(node.iterdir()) if d.is_dir() and _visible(d)]
        has_images = any(f.suffix.lower() in EXTENSIONS for d in subdirs for f in d.iterdir() if _visible(f))
        if len(subdirs) == 1 and not has_images:
            node = subdirs[0]
            continue
        if subdirs and has_images:
            return node
        break
    raise DataError(
        f"{data_dir}: found no class folders with images (expected <class>/<image> or "
        f"train_dataset/train_dataset/<class>/<image>; extensions {', '.join(sorted(EXTENSIONS))})"
    )


def discover(data_dir: Path, limit_per_class: int | None = None) -> Dataset:
    root = find_root(data_dir)
    classes = grader.class_order(d.name for d in root.iterdir() if d.is_dir() and _visible(d))
    files, labels = [], []
    for y, cls in enumerate(classes):
        found = sorted(
            p.relative_to(root)
            for p in (root / cls).rglob("*")
            if p.is_file()
            and p.suffix.lower() in EXTENSIONS
            and all(_visible(part) for part in p.relative_to(root).parts)
        )
        if not found:
            raise DataError(f"{root / cls}: class folder has no images; remove it or add images")
        found = found[:limit_per_class] if limit_per_class else found
        files += found
        labels += [y] * len(found)
    return Dataset(root, classes, files, labels)


# ---------------------------------------------------------------- decoding


def decode_one(path: Path, size: int) -> tuple[np.ndarray, str]:
    """``(uint8 [3,size,size], sha1)``: the picture squashed to a square like the grader's resize."""
    data = path.read_bytes()
    with Image.open(path) as im:
        im.load()
        rgb = im.convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1).copy(), hashlib.sha1(data).hexdigest()


def average_hash(images: torch.Tensor, side: int = HASH_SIDE) -> torch.Tensor:
    """bool [N, side*side]: each pixel of the small grey picture above the picture's mean."""
    grey = images.float().mean(1, keepdim=True)
    small = torch.nn.functional.adaptive_avg_pool2d(grey, side).flatten(1)
    return small > small.mean(1, keepdim=True)


def thumbnails(images: torch.Tensor, side: int = HASH_SIDE) -> torch.Tensor:
    return torch.nn.functional.adaptive_avg_pool2d(images.float(), side).round().to(torch.uint8)


def load(
    data_dir: Path,
    cache_dir: Path | None,
    decode_size: int,
    limit_per_class: int | None = None,
    workers: int | None = None,
) -> Decoded:
    """Decode every image once (or read the cache written the first time)."""
    ds = discover(data_dir, limit_per_class)
    fp = ds.fingerprint()
    cache = Path(cache_dir) / "decoded" / f"{fp}-{decode_size}.pt" if cache_dir else None
    if cache and cache.exists():
        return Decoded(**torch.load(cache, weights_only=False))

    def job(rel: Path):
        try:
            return decode_one(ds.root / rel, decode_size)
        except Exception as exc:  # noqa: BLE001 — PIL raises many kinds for broken files
            return f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(job, ds.files))
    keep = [i for i, r in enumerate(results) if not isinstance(r, str)]
    skipped = [(str(ds.files[i]), r) for i, r in enumerate(results) if isinstance(r, str)]
    for f, why in skipped:
        warnings.warn(f"skipping {ds.root / f}: cannot decode ({why})", stacklevel=2)
    if not keep:
        raise DataError(f"{ds.root}: none of the {len(ds.files)} images could be decoded")
    images = torch.from_numpy(np.stack([results[i][0] for i in keep]))
    out = Decoded(
        classes=ds.classes,
        files=[str(ds.files[i]) for i in keep],
        labels=torch.tensor([ds.labels[i] for i in keep]),
        images=images,
        hashes=average_hash(images),
        thumbs=thumbnails(images),
        digests=[results[i][1] for i in keep],
        fingerprint=fp,
        skipped=skipped,
    )
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        os.close(fd)
        torch.save(out.__dict__, tmp)
        os.replace(tmp, cache)
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


def class_weights(labels, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over classes (a class with no images gets 0)."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).float()
    w = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return w * num_classes / w.sum()
