"""What the course grader is: every rule about the file it loads and the input it feeds, in one place.

Training, export, verification, the course-server stand-in and the docs import these names; nothing
else in kdq writes one of these numbers down.

    from kdq import grader
    grader.INPUT_SIZE, grader.MEAN, grader.STD    # [B, 3, 224, 224], [0, 1] then ImageNet normalization
    grader.class_order(folder_names)              # sorted as strings: "1. Eczema", "10. Warts ...", "2. ..."
    grader.size_mib(path)                         # bytes / 1024 / 1024, the way the server measures it
    grader.fits(size_mib)                         # under the limit, with kdq's margin

The stated limit is 25 MB (MiB: bytes / 1024 / 1024). The staff's server for the previous homework
refused files over 23.0 MB, so kdq keeps every model under ``MAX_MIB`` = 23.0. A student's parameters
must leave a little more room still (``PARAM_HEADROOM``) for the TorchScript code and the zip container.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

NUM_CLASSES = 10
INPUT_SIZE = 224  # the starter's Resize((224, 224)), marked "do not change"
MEAN = (0.485, 0.456, 0.406)  # ImageNet mean, after ToTensor() scaled pixels to [0, 1]
STD = (0.229, 0.224, 0.225)  # ImageNet std
DTYPE = "float32"  # an fp16 model failed on the server before
BATCH = 64  # the previous homework's grader fed batches of 64
STATED_LIMIT_MIB = 25.0  # the homework's "under 25 MB"
MAX_MIB = 23.0  # what the previous homework's server enforced: kdq's limit
PARAM_HEADROOM = 0.98  # parameters may fill 98% of MAX_MIB; the rest is code and container
EXTENSIONS = (".pt", ".pth")  # the server checks the uploaded file name
SIZE_CAPS_MIB = (1.0, 23.0)  # the previous homework normalised size between these caps


def class_order(names: Iterable[str]) -> list[str]:
    """The grader's class indices: folder names sorted as strings (so "10. ..." comes before "2. ...")."""
    return sorted(names)


def size_mib(path: str | os.PathLike) -> float:
    """A file's size as the server reports it: bytes / 1024 / 1024."""
    return os.path.getsize(path) / 1024 / 1024


def fits(size: float, max_mib: float = MAX_MIB) -> bool:
    """Whether a file of ``size`` MiB is accepted, with kdq's margin: under the limit (a file of exactly
    the limit is refused). Verification and the upload's pre-check both ask this."""
    return size < max_mib


def render(path: str | os.PathLike):
    """One picture as the grader feeds it: PIL, RGB, resized to 224x224 bilinear from the original file,
    scaled to [0, 1], then ImageNet mean/std. A float32 numpy array [3, 224, 224]."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    x = np.asarray(rgb, dtype=np.float32) / 255.0
    return ((x - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)).transpose(2, 0, 1)
