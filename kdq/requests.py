"""What a user may ask (``kdq enqueue``, ``cancel``, ``retry``, ``submit``), as store methods.

An enqueue is all or nothing and refuses a spec queued before (unless forced); the others read the
experiment, check the request against its stage, and change it compare-and-set, so a request that
loses a race with the worker says so instead of undoing the worker's move.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

    from kdq.spec import ExperimentSpec


from kdq.experiment import Experiment
from kdq.stages import LIVE, RETRYABLE, Stage

# Stages with nothing running elsewhere: a cancel there is immediate.
CANCEL_AT_ONCE = (Stage.QUEUED, Stage.READY, Stage.FETCHING, Stage.VALIDATING)
SUBMITTABLE = (Stage.READY, Stage.DONE, Stage.SKIPPED)


class DuplicateSpec(ValueError):
    """``dupes``: (name, the experiment id it repeats, or the name it repeats in this same batch)."""

    def __init__(self, dupes: list[tuple[str, int | str]]):
        self.dupes = dupes
        lines = [
            f"{name}: the same spec is already experiment {other} (use --force to queue it again)"
            if isinstance(other, int)
            else f"{name}: the same spec as {other} in this enqueue (use --force to queue both)"
            for name, other in dupes
        ]
        super().__init__("\n".join(lines))


def _duplicates(db: sqlite_utils.Database, specs: list[ExperimentSpec]) -> list[tuple[str, int | str]]:
    """Specs already queued (and not cancelled), and specs repeated within ``specs``."""
    dupes: list[tuple[str, int | str]] = []
    first: dict[str, str] = {}
    for spec in specs:
        h = spec.content_hash()
        rows = list(
            db.query("select id from experiments where spec_hash = ? and stage != 'cancelled' limit 1", [h])
        )
        if rows:
            dupes.append((spec.name, rows[0]["id"]))
        elif h in first:
            dupes.append((spec.name, first[h]))
        first.setdefault(h, spec.name)
    return dupes


class DuplicateSearch(DuplicateSpec):
    def __init__(self, name: str, exp_id: int):
        self.dupes = [(name, exp_id)]
        ValueError.__init__(
            self,
            f"{name}: a search of this name exists already (experiment {exp_id} is one of its trials); "
            "give this one another name (`name = ...` or `search.name = ...`)",
        )


def _trained_to_the_end(exp: Experiment) -> str | None:
    """Why resuming ``exp`` from its checkpoint is pointless, or None: it has a verified model, or its
    last run reached its last epoch."""
    if exp.stage is Stage.SKIPPED and exp.artifacts:
        return "has a trained, verified model"
    progress = exp.progress or {}
    if progress.get("epochs") and progress.get("epoch", 0) >= progress["epochs"]:
        return f"already trained to its last epoch ({progress['epoch']}/{progress['epochs']})"
    return None


class UserRequests:
    """Mixed into ``kdq.store.Store``: uses its ``get``, ``move``, ``update``, ``event``, ``transaction``."""

    def add(
        self,
        items: list[tuple[str | None, ExperimentSpec]],
        *,
        priority: int = 0,
        force: bool = False,
        columns: dict[str, Any] | None = None,
    ) -> list[int]:
        """Queue specs as new experiments, all or none. Raises ``DuplicateSpec`` unless ``force``.

        ``columns``: more columns for every row (a search trial's number, set by the worker)."""
        now = time.time()
        with self.transaction() as db:
            if (columns or {}).get("trial") is None:  # a new search (not a trial the worker adds): a new name
                for name in {s.search.name for _, s in items if s.search}:
                    rows = list(db.query("select id from experiments where search = ? limit 1", [name]))
                    if rows:
                        raise DuplicateSearch(name, rows[0]["id"])
            if not force and (dupes := _duplicates(db, [s for _, s in items])):
                raise DuplicateSpec(dupes)
            ids = []
            for source, spec in items:
                table = db["experiments"].insert(
                    {
                        "name": spec.name,
                        "spec": spec.model_dump_json(),
                        "spec_hash": spec.content_hash(),
                        "source": source,
                        "priority": priority,
                        "stage": str(Stage.QUEUED),
                        "backend": spec.backend.kind,
                        "attempt": 1,
                        "created_at": now,
                        "updated_at": now,
                        "next_check_at": now,
                        "search": spec.search.name if spec.search else None,
                        **(columns or {}),
                    }
                )
                ids.append(table.last_pk)
                db["events"].insert(
                    {
                        "exp_id": table.last_pk,
                        "ts": now,
                        "kind": "enqueued",
                        "stage": "queued",
                        "message": f"queued from {source}" if source else "queued",
                    }
                )
        return ids

    def discard(self, ids: list[int]) -> list[int]:
        """Take back experiments just added that are still queued (their nudge failed): returns those."""
        with self.transaction() as db:
            marks = ",".join("?" * len(ids))
            gone = [
                r["id"]
                for r in db.query(
                    f"select id from experiments where id in ({marks}) and stage = 'queued'", ids
                )
            ]
            if gone:
                marks = ",".join("?" * len(gone))
                db.execute(f"delete from events where exp_id in ({marks})", gone)
                db.execute(f"delete from experiments where id in ({marks})", gone)
        return gone

    def request_cancel(self, exp_id: int) -> Experiment:
        """Flag for the worker; stages with nothing running elsewhere are cancelled at once."""
        exp = self.get(exp_id)
        if exp.stage in CANCEL_AT_ONCE and self.move(
            exp_id, exp.stage, Stage.CANCELLED, "cancelled by the user"
        ):
            return self.get(exp_id)
        # Flag it only while it is still live: the worker may have finished or failed it since the read.
        live = sorted(str(s) for s in LIVE)
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "update experiments set cancel_requested = 1, updated_at = ? "
                f"where id = ? and stage in ({','.join('?' * len(live))})",
                [now, exp_id, *live],
            )
            if cur.rowcount == 1:
                db["events"].insert(
                    {
                        "exp_id": exp_id,
                        "ts": now,
                        "kind": "cancel",
                        "stage": None,
                        "message": "cancel requested",
                    }
                )
        return self.get(exp_id)

    def retry(self, exp_id: int, fresh: bool = False) -> Experiment:
        """Queue a failed, cancelled, skipped or pruned experiment again as a new attempt (a new run id). It
        starts from the last run's last checkpoint (the training checks the spec is the same) unless
        ``fresh``."""
        exp = self.get(exp_id)
        if exp.stage not in RETRYABLE:
            raise ValueError(
                f"experiment {exp_id} is {exp.stage}; only {', '.join(sorted(RETRYABLE))} can be retried"
            )
        if not fresh and (done := _trained_to_the_end(exp)):
            submit = f"`kdq submit {exp_id}` submits it, or " if exp.stage is Stage.SKIPPED else ""
            raise ValueError(
                f"experiment {exp_id} {done}, so a resumed run would train nothing: "
                f"{submit}`kdq retry {exp_id} --fresh` trains it again from epoch 1"
            )
        resume = None if fresh else exp.run_id or exp.resume_from
        how = f", from run {resume}'s last checkpoint" if resume else ", from epoch 1"
        moved = self.move(
            exp_id,
            exp.stage,
            Stage.QUEUED,
            f"retry (attempt {exp.attempt + 1}{how})",
            attempt=exp.attempt + 1,
            resume_from=resume,
            run_id=None,
            handle=None,
            progress=None,
            error=None,
            cancel_requested=0,
            next_check_at=time.time(),
        )
        if not moved:
            raise ValueError(f"experiment {exp_id} changed while retrying; look again")
        return self.get(exp_id)

    def request_submit(self, exp_id: int) -> Experiment:
        """``kdq submit ID``: submit this validated model next, whatever its policy (not the rate limit)."""
        exp = self.get(exp_id)
        if exp.stage not in SUBMITTABLE or not exp.artifacts:
            raise ValueError(
                f"experiment {exp_id} is {exp.stage}; "
                "only a validated model (ready, done or skipped) can be submitted"
            )
        if exp.stage is not Stage.READY and not self.move(
            exp_id, exp.stage, Stage.READY, "submission requested"
        ):
            raise ValueError(f"experiment {exp_id} changed while requesting a submission; look again")
        # a later `kdq submit` outranks a cancel that came during an earlier upload of it
        self.update(exp_id, submit_requested=1, cancel_requested=0, next_check_at=time.time())
        self.event(exp_id, "submit", "submission requested by the user")
        return self.get(exp_id)
