"""Grade a TorchScript file the way the course server does (the rules are in ``kdq.grader``).

Each image: RGB, resized to 224x224, scaled to [0, 1], normalized with the ImageNet mean and std.
Class index = position of its folder name in the *string-sorted* list of class folders (so
``10. Warts...`` is index 1). The answer is the macro-F1 of the argmax of the logits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq import grader

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".jfif"}
JUNK = {"__MACOSX"}


# The course grades TorchScript; torch's notice that TorchScript is deprecated is noise here.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)


class BrokenModel(Exception):
    """The file is not a loadable TorchScript module."""


@dataclass(frozen=True)
class Dataset:
    root: Path
    classes: list[str]
    items: list[tuple[Path, int]]


def _subdirs(path: Path) -> list[Path]:
    return sorted(
        p for p in path.iterdir() if p.is_dir() and p.name not in JUNK and not p.name.startswith(".")
    )


def _images(path: Path) -> list[Path]:
    return sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
    )


def find_class_root(path: Path) -> Path:
    """The folder whose subfolders are the classes; descends through ``train_dataset/train_dataset/``."""
    here = Path(path)
    for _ in range(8):
        subdirs = _subdirs(here)
        if any(_images(d) for d in subdirs):
            return here
        if len(subdirs) != 1:
            break
        here = subdirs[0]
    raise FileNotFoundError(
        f"{path}: no class folders with images found "
        "(expected <class>/<image> or train_dataset/train_dataset/<class>/)"
    )


def load_dataset(path: Path) -> Dataset:
    root = find_class_root(path)
    classes = grader.class_order(d.name for d in _subdirs(root))
    items = [(img, label) for label, name in enumerate(classes) for img in _images(root / name)]
    return Dataset(root=root, classes=classes, items=items)


def preprocess(path: Path) -> np.ndarray:
    return grader.render(path)


def evaluate(model_path: Path, data: Dataset, batch_size: int = 32, threads: int = 1) -> float:
    """Macro-F1 of the model on ``data``. ``BrokenModel`` if it does not load; other errors propagate."""
    import torch
    from sklearn.metrics import f1_score

    torch.set_num_threads(threads)
    try:
        model = torch.jit.load(str(model_path), map_location="cpu")
    except Exception as exc:  # any load failure is what the server calls "broken file"
        raise BrokenModel(str(exc)) from exc
    model.eval()
    truth: list[int] = []
    predicted: list[int] = []
    readable = []
    for path, label in data.items:
        try:
            readable.append((preprocess(path), label))
        except (OSError, ValueError):
            continue  # an unreadable image is not the model's fault
    with torch.inference_mode():
        for start in range(0, len(readable), batch_size):
            chunk = readable[start : start + batch_size]
            batch = torch.from_numpy(np.stack([x for x, _ in chunk]))
            logits = model(batch)
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (len(chunk), len(data.classes)):
                shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"expected output of shape [{len(chunk)}, {len(data.classes)}], got {shape}")
            predicted.extend(logits.float().argmax(dim=1).tolist())
            truth.extend(label for _, label in chunk)
    if not truth:
        raise ValueError(f"no readable test images under {data.root}")
    return float(f1_score(truth, predicted, average="macro", zero_division=0))
