"""``kdq export``: one experiment's model file out of the home, with its spec and metrics beside it.

    exp = choose(store, settings, exp_id=None, best=True, live=False)   # which one
    out = write(exp, settings, store, Path("model.pt"))                 # model.pt, model.spec.json, ...

The file copied is the one the worker verified (``artifacts/<run id>/model.pt``); its sha256 is compared
with the one recorded when it was uploaded, so "this is the file the server graded" is checked, not
assumed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from kdq import runfolder

if TYPE_CHECKING:
    from kdq.experiment import Experiment
    from kdq.store import Store


class ExportError(ValueError):
    """Nothing to export, or nowhere to write it: one line saying why and what to do."""


def choose(store: Store, settings, exp_id: int | None, best: bool, live: bool) -> Experiment:
    from kdq.course.ledger import Ledger
    from kdq.store import NotFound

    if sum([exp_id is not None, best, live]) != 1:
        raise ExportError("name one experiment: an ID, --best or --live")
    if live:
        row = Ledger(store).live_row()
        if row is None:
            raise ExportError("nothing is live on the server yet (no graded submission of ours)")
        exp_id = row["exp_id"]
    if best:
        from kdq.course.scoring import expected_all

        exps = [e for e in store.list() if model_path(e)]
        expected = expected_all(store, settings, exps)
        if not expected:
            raise ExportError("no verified model yet: an experiment has one once it is validated")
        exp_id = max(expected, key=lambda i: expected[i].score)
    try:
        return store.get(exp_id)
    except NotFound:
        raise ExportError(f"no experiment {exp_id}; `kdq status --all` lists them") from None


def model_path(exp: Experiment) -> Path | None:
    path = Path(exp.artifacts) / runfolder.MODEL if exp.artifacts else None
    return path if path and path.is_file() else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def destination(out: Path) -> Path:
    """``-o model.pt`` is the file; ``-o folder/`` (or an existing folder) gets ``model.pt`` in it."""
    if out.is_dir() or str(out).endswith(("/", "\\")):
        return out / runfolder.MODEL
    return out


def write(exp: Experiment, store: Store, out: Path) -> dict:
    """Copy the model, write ``<stem>.spec.json`` and ``<stem>.metrics.json`` beside it; what was done."""
    src = model_path(exp)
    if src is None:
        raise ExportError(f"experiment {exp.id} ({exp.stage}) has no verified model file yet")
    dest = destination(out)
    if not dest.parent.is_dir():
        raise ExportError(f"{dest.parent} is not a folder: create it, or pass -o FILE in an existing one")
    digest = sha256(src)
    with runfolder.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    if sha256(dest) != digest:
        raise ExportError(f"{dest} does not match {src} after the copy: the disk may be failing")
    spec_path, metrics_path = dest.with_suffix(".spec.json"), dest.with_suffix(".metrics.json")
    runfolder.write_json(spec_path, json.loads(exp.spec_json))
    runfolder.write_json(metrics_path, exp.metrics or {})
    uploads = [
        (r["attempt"], r["sha256"])
        for r in store.query(
            "select attempt, sha256 from submissions where exp_id = ? and sha256 is not null order by id",
            [exp.id],
        )
    ]
    return {
        "id": exp.id,
        "name": exp.name,
        "stage": str(exp.stage),
        "path": str(dest),
        "spec": str(spec_path),
        "metrics": str(metrics_path),
        "sha256": digest,
        "model_mb": round(dest.stat().st_size / 2**20, 4),
        "val_f1": exp.val_f1,
        "server_score": exp.server_score,
        "uploads": [{"attempt": a, "sha256": s, "same_file": s == digest} for a, s in uploads],
    }
