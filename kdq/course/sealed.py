"""The file an upload sends: a read-only copy of the validated ``model.pt``, named by its sha256.

Validation records the model's hash; the scheduler uploads only a file with that hash. A model
replaced after validation (by hand, by a stray copy) is refused with ``Changed`` and never sent.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kdq import runfolder


class Changed(Exception):
    """The model is not the file that was validated."""


def sha256_of(path: Path) -> str:
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def seal(model: Path, sha256: str | None, folder: Path) -> tuple[Path, str]:
    """``(copy, hash)``: ``folder/<sha256>.pt``, read-only, made once. ``sha256``: the validated hash
    (``None`` for a model validated before hashes were recorded: the file as it is now)."""
    if sha256 is not None:
        done = folder / f"{sha256}.pt"
        if done.is_file() and sha256_of(done) == sha256:
            return done, sha256
    now = sha256_of(model)
    if sha256 is not None and now != sha256:
        raise Changed(
            f"{model} changed after validation (sha256 {sha256[:12]}… was verified, the file now has "
            f"{now[:12]}…); nothing was uploaded. `kdq retry ID` trains and validates it again"
        )
    final = folder / f"{now}.pt"
    try:
        with runfolder.atomic_path(final) as tmp:
            with open(tmp, "wb") as out, Path(model).open("rb") as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            if sha256_of(tmp) != now:
                raise Changed(
                    f"{model} changed while it was being copied for the upload; nothing was uploaded"
                )
            os.chmod(tmp, 0o444)
    except OSError as exc:
        if exc.filename is None:  # a write that failed (a full disk): say where
            raise OSError(exc.errno, exc.strerror, str(final)) from exc
        raise
    return final, now
