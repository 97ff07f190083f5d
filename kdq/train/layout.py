"""Where a dataset's pictures are: the class folders and their files, found without decoding anything
(and without torch, so ``kdq enqueue`` can check a local spec's dataset quickly).

    root = find_root(data_dir)      # the folder whose sub-folders are the classes (DataError if none)
    ds = discover(data_dir)         # classes in the grader's order, files, labels

The layout may be ``data_dir/<class>/`` or the archive's nested
``data_dir/train_dataset/train_dataset/<class>/``; ``__MACOSX/``, hidden files and other extensions are
ignored. Class order is the grader's (``kdq.grader.class_order``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from kdq import grader

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".jfif", ".webp", ".gif"})
CACHE_VERSION = 3  # of the decoded cache (kdq.train.data), part of every dataset's fingerprint


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
