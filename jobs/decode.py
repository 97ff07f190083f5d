"""What the app's CPU-only ``decode`` function runs: a dataset's pictures decoded once, for every run.

Every training reads its pictures as one uint8 tensor, decoded from the JPEGs at ``data.decode_size``
and cached under ``cache/decoded/`` (kdq/train/data.py). Decoding 10,000 pictures is CPU work of a
minute or more: done inside a GPU container, the GPU bills while it waits, and on the first night
every run that starts at once would do it again. So the worker spawns this function once per
(dataset, decode size) before any of their trainings (kdq/backends/modal_cache.py), and they wait in
``queued`` until the call has returned ``done``.

It unpacks the dataset's archive onto the container's own disk, decodes it with the training's own
code into the Volume's cache folder (a file name the training finds by itself: the fingerprint of the
file list and the size) and commits before it returns; or it returns a one-line reason when the
pictures cannot be decoded. Nothing here imports modal.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.packing import Pack
from kdq.backends.modal_gateway import CACHE, DATASET_MARK, dataset_path
from kdq.train import data
from kdq.train.layout import DataError


def decode_dataset(
    root: Path,
    dataset: str,
    decode_size: int,
    *,
    limit_per_class: int | None = None,
    commit: Callable[[], None] = lambda: None,
    reload: Callable[[], None] = lambda: None,
    local_dir: Path | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
) -> dict[str, Any]:
    """Decode ``datasets/<dataset>`` under ``root`` (the Volume) into ``cache/decoded/``. Returns
    ``{"outcome": "done" | "error", ...}``; anything it raises (out of memory, a Volume that fails)
    fails the call. The worker reads either (kdq/backends/modal_cache.py)."""
    started = time.time()
    reload()  # the dataset's upload, committed by kdq data upload or a launch
    data_dir = root / dataset_path(dataset)
    if not (data_dir / DATASET_MARK).exists():
        return {
            "outcome": "error",
            "error": f"dataset {dataset!r} is not on the Volume ({dataset_path(dataset)})",
        }
    pack = Pack(Path(local_dir or tempfile.mkdtemp(prefix="kdq-decode-")))
    staged = pack.stage(data_dir, dataset_path(dataset))  # named as the trainings stage it: same fingerprint
    log(f"decoding dataset {dataset!r} at {decode_size} px into {CACHE}/decoded/")
    try:
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always")
            decoded = data.load(staged, root / CACHE, decode_size, limit_per_class)
    except DataError as exc:  # named as on the Volume, not as unpacked on this container's disk
        return {"outcome": "error", "error": str(exc).replace(str(staged), dataset_path(dataset))}
    for warning in skipped:
        log(str(warning.message))
    commit()  # the tensor is on the Volume before anyone is told it is
    done = {
        "images": len(decoded.files),
        "skipped": len(decoded.skipped),
        "seconds": round(time.time() - started, 1),
    }
    log(f"decoded {done['images']} pictures ({done['skipped']} skipped) in {done['seconds']:g} s")
    return {"outcome": "done", **done}
