"""Datasets on the Modal Volume: one archive per dataset, its mark written last.

A dataset goes up as ``datasets/<name>/pictures.tar`` (``upload_dataset``), not as thousands of files:
the latency of a Volume's mount, reload and commit grows with its file count, and each container
unpacks the archive onto its own disk (jobs/packing.py). The mark (``.kdq-dataset.json``) names the
archive and the contents' fingerprint; it is written last, so an interrupted upload is redone.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kdq.backends.modal_gateway as vol
from kdq.backends.modal_gateway import Gateway
from kdq.errors import PermanentError

UPLOAD_BATCH = 200  # files archived between two moves of the progress bar


def dataset_files(folder: Path) -> list[Path]:
    """Every file of a dataset folder, without macOS junk and hidden files, in a stable order."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(s.startswith(".") or s == "__MACOSX" for s in p.relative_to(folder).parts)
    )


def dataset_fingerprint(folder: Path, files: list[Path] | None = None) -> str:
    h = hashlib.sha256()
    for path in files if files is not None else dataset_files(folder):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def upload_dataset(
    gateway: Gateway, folder: Path, name: str, progress: Callable[[int, int], None] = lambda done, total: None
) -> dict[str, Any]:
    """Upload ``folder`` as ``datasets/<name>/pictures.tar`` unless the same fingerprint is there.
    Returns the mark.

    One archive, not thousands of files: the latency of a Volume's mount, reload and commit grows with
    its file count, and a container unpacks it onto its own disk before training. The mark file is
    written last, so an interrupted upload is redone, never taken for complete.
    """
    files = dataset_files(folder)
    if not files:
        raise PermanentError(f"{folder} holds no files to upload")
    mark = {
        "name": name,
        "fingerprint": dataset_fingerprint(folder, files),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
    }
    base = vol.dataset_path(name)
    raw = gateway.read_file(f"{base}/{vol.DATASET_MARK}")
    there = json.loads(raw) if raw else {}
    if there.get("fingerprint") == mark["fingerprint"] and there.get("archive"):
        progress(len(files), len(files))
        return {**there, "uploaded": False}
    with tempfile.TemporaryDirectory(prefix="kdq-upload-") as tmp:
        archive = Path(tmp) / vol.DATASET_ARCHIVE
        with tarfile.open(archive, "w") as tar:
            for i, path in enumerate(files, 1):
                tar.add(path, arcname=path.relative_to(folder).as_posix())
                if i % UPLOAD_BATCH == 0 or i == len(files):
                    progress(i, len(files))
        gateway.upload([(archive, f"{base}/{vol.DATASET_ARCHIVE}")])
    mark["archive"], mark["uploaded_at"] = vol.DATASET_ARCHIVE, time.time()
    gateway.upload([(json.dumps(mark).encode(), f"{base}/{vol.DATASET_MARK}")])
    return {**mark, "uploaded": True}
