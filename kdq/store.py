"""The store: one SQLite file (``$KDQ_HOME/kdq.db``) that is the truth about every experiment.

Tables: ``experiments`` (spec, stage, backend handle, run id, metrics, artifacts, errors),
``events`` (append-only timeline per experiment), ``submissions``, ``leaderboard`` (snapshots)
and ``meta`` (schema version, instance id, worker heartbeat, server reachability).

Two processes write (the CLI and the worker), so every connection runs in WAL mode with a long busy
timeout, and every read-then-write happens inside ``BEGIN IMMEDIATE`` (a short transaction that takes
the write lock up front, so it waits its turn instead of failing with ``database is locked``).
Stage changes are compare-and-set: they only happen from the stage the caller saw.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlite_utils

from kdq import gate
from kdq import gate
from kdq.experiment import JSON_FIELDS, Experiment
from kdq.spec import ExperimentSpec
from kdq.stages import LIVE, RETRYABLE, Stage, check_move

BUSY_TIMEOUT_S = 60


# ---------------------------------------------------------------- schema and migrations


def _m1_initial(db: sqlite_utils.Database) -> None:
    db["experiments"].create(
        {
            "id": int,
            "name": str,
            "spec": str,
            "spec_hash": str,
            "source": str,
            "priority": int,
            "stage": str,
            "backend": str,
            "attempt": int,
            "run_id": str,
            "handle": str,
            "progress": str,
            "metrics": str,
            "val_f1": float,
            "teacher_f1": float,
            "artifacts": str,
            "error": str,
            "cancel_requested": int,
            "submit_requested": int,
            "server_attempt": int,
            "server_score": float,
            "server_rank": int,
            "created_at": float,
            "updated_at": float,
            "next_check_at": float,
        },
        pk="id",
        not_null={"name", "spec", "spec_hash", "stage", "backend"},
        defaults={"priority": 0, "attempt": 1, "cancel_requested": 0, "submit_requested": 0},
    )
    db["experiments"].create_index(["stage"])
    db["experiments"].create_index(["spec_hash"])
    db["events"].create(
        {"id": int, "exp_id": int, "ts": float, "kind": str, "stage": str, "message": str, "data": str},
        pk="id",
        foreign_keys=[("exp_id", "experiments", "id")],
    )
    db["events"].create_index(["exp_id", "ts"])
    db["submissions"].create(
        {
            "id": int,
            "exp_id": int,
            "state": str,
            "attempt": int,
            "server_status": str,
            "score": float,
            "model_size": float,
            "rank": int,
            "leaderboard_score": float,
            "message": str,
            "created_at": float,
            "posted_at": float,
            "updated_at": float,
        },
        pk="id",
        foreign_keys=[("exp_id", "experiments", "id")],
    )
    db["submissions"].create_index(["exp_id"])
    db["leaderboard"].create(
        {"id": int, "ts": float, "rows": str, "own_rank": int, "own_score": float}, pk="id"
    )
    db["meta"].create({"key": str, "value": str}, pk="key")


def _m2_submission_identity(db: sqlite_utils.Database) -> None:
    """Which file an upload sent (sha256) and when the server recorded it (kdq.course.ledger)."""
    db["submissions"].add_column("sha256", str)
    db["submissions"].add_column("recorded_at", float)


def _m3_search_trials(db: sqlite_utils.Database) -> None:
    """Which search an experiment is a trial of, and its trial number in the study (kdq.search)."""
    db["experiments"].add_column("search", str)
    db["experiments"].add_column("trial", int)
    db["experiments"].create_index(["search", "trial"], unique=True)


# Append only: a migration, once released, is never edited. The schema version is its index + 1.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m1_initial,
    _m2_submission_identity,
    _m3_search_trials,
]
SCHEMA_VERSION = len(MIGRATIONS)


class DuplicateSpec(ValueError):
    def __init__(self, dupes: list[tuple[str, int]]):
        self.dupes = dupes
        lines = [
            f"{name}: the same spec is already experiment {eid} (use --force to queue it again)"
            for name, eid in dupes
        ]
        super().__init__("\n".join(lines))


class DuplicateSearch(DuplicateSpec):
    def __init__(self, name: str, exp_id: int):
        self.dupes = [(name, exp_id)]
        ValueError.__init__(
            self,
            f"{name}: a search of this name exists already (experiment {exp_id} is one of its trials); "
            "give this one another name (`name = ...` or `search.name = ...`)",
        )


class NotFound(KeyError):
    pass


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


# ---------------------------------------------------------------- the store


class Store:
    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        self.path = path
        self.db = sqlite_utils.Database(conn)
        self._migrate()

    @classmethod
    def open(cls, settings) -> Store:
        return cls(settings.db_path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction that holds the write lock from its first statement."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.rollback()
            raise
        else:
            self.db.conn.execute("COMMIT")

    def _migrate(self) -> None:
        found = self.schema_version()
        if found > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} was written by a newer kdq (schema {found}); upgrade kdq")
        if found == SCHEMA_VERSION:
            return
        with self.transaction() as db:
            version = self.schema_version()  # another process may have migrated meanwhile
            for migration in MIGRATIONS[version:]:
                migration(db)
            db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
            if not self.get_meta("instance"):
                db["meta"].upsert({"key": "instance", "value": uuid.uuid4().hex[:8]}, pk="key")

    def schema_version(self) -> int:
        if "meta" not in self.db.table_names():
            return 0
        return int(self.get_meta("schema_version") or 0)

    # ------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        rows = list(self.db.query("select value from meta where key = ?", [key]))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: Any) -> None:
        self.db["meta"].upsert(
            {"key": key, "value": value if isinstance(value, str) else json.dumps(value)}, pk="key"
        )

    def get_meta_json(self, key: str) -> Any:
        value = self.get_meta(key)
        return json.loads(value) if value else None

    @property
    def instance(self) -> str:
        return self.get_meta("instance") or "kdq"

    # ------------------------------------------------------------ experiments

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
            if not force:
                dupes = []
                for _, spec in items:
                    rows = list(
                        db.query(
                            "select id from experiments where spec_hash = ? and stage not in ('cancelled') limit 1",
                            [spec.content_hash()],
                        )
                    )
                    if rows:
                        dupes.append((spec.name, rows[0]["id"]))
                hashes = [s.content_hash() for _, s in items]
                dupes += [(s.name, -1) for i, (_, s) in enumerate(items) if s.content_hash() in hashes[:i]]
                if dupes:
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

    def get(self, exp_id: int) -> Experiment:
        rows = list(self.db.query("select * from experiments where id = ?", [exp_id]))
        if not rows:
            raise NotFound(f"no experiment {exp_id}")
        return Experiment.from_row(rows[0])

    def list(self, stages: set[Stage] | None = None, order: str = "id") -> list[Experiment]:
        where, params = "", []
        if stages:
            where = f"where stage in ({','.join('?' * len(stages))})"
            params = [str(s) for s in stages]
        return [
            Experiment.from_row(r)
            for r in self.db.query(f"select * from experiments {where} order by {order}", params)
        ]

    def live(self) -> list[Experiment]:
        return self.list(set(LIVE))

    def count_by_stage(self) -> dict[str, int]:
        return {
            r["stage"]: r["n"]
            for r in self.db.query("select stage, count(*) n from experiments group by stage")
        }

    def move(self, exp_id: int, src: Stage, dst: Stage, message: str = "", **fields: Any) -> bool:
        """Move ``src → dst`` (and set ``fields``) only if the experiment is still in ``src``."""
        check_move(src, dst)
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "update experiments set stage = ?, updated_at = ? where id = ? and stage = ?",
                [str(dst), now, exp_id, str(src)],
            )
            if cur.rowcount != 1:
                return False
            if fields:
                self._set(db, exp_id, fields)
            db["events"].insert(
                {
                    "exp_id": exp_id,
                    "ts": now,
                    "kind": "stage",
                    "stage": str(dst),
                    "message": message or f"{src} → {dst}",
                }
            )
        return True

    def start_launch(self, exp_id: int, limit: int, message: str = "", **fields: Any) -> bool:
        """``queued → launching`` only if the launch gate (kdq.gate) lets it through, checked in the same
        transaction as the move, so two workers never both take the last of ``limit`` slots."""
        now = time.time()
        with self.transaction() as db:
            rows = list(db.query("select backend from experiments where id = ?", [exp_id]))
            if not rows:
                return False
            row = rows[0]
            queued = [
                SimpleNamespace(**r)
                for r in db.query(
                    "select id, priority, created_at from experiments where backend = ? and stage = ?",
                    [row["backend"], str(Stage.QUEUED)],
                )
            ]
            [running] = db.query(
                "select count(*) n from experiments where backend = ? and stage in (?, ?)",
                [row["backend"], str(Stage.LAUNCHING), str(Stage.TRAINING)],
            )
            me = next((q for q in queued if q.id == exp_id), None)
            if me is None or not gate.may_launch(me, queued, running["n"], limit):
                return False
            db.execute(
                "update experiments set stage = ?, updated_at = ? where id = ? and stage = ?",
                [str(Stage.LAUNCHING), now, exp_id, str(Stage.QUEUED)],
            )
            self._set(db, exp_id, fields)
            event = {"exp_id": exp_id, "ts": now, "kind": "stage", "stage": str(Stage.LAUNCHING)}
            db["events"].insert({**event, "message": message})
        return True

    def start_launch(self, exp_id: int, limit: int, message: str = "", **fields: Any) -> bool:
        """``queued → launching`` only if the launch gate (kdq.gate) lets it through, checked in the same
        transaction as the move, so two workers never both take the last of ``limit`` slots."""
        now = time.time()
        with self.transaction() as db:
            rows = list(db.query("select backend from experiments where id = ?", [exp_id]))
            if not rows:
                return False
            row = rows[0]
            queued = [
                SimpleNamespace(**r)
                for r in db.query(
                    "select id, priority, created_at from experiments where backend = ? and stage = ?",
                    [row["backend"], str(Stage.QUEUED)],
                )
            ]
            [running] = db.query(
                "select count(*) n from experiments where backend = ? and stage in (?, ?)",
                [row["backend"], str(Stage.LAUNCHING), str(Stage.TRAINING)],
            )
            me = next((q for q in queued if q.id == exp_id), None)
            if me is None or not gate.may_launch(me, queued, running["n"], limit):
                return False
            db.execute(
                "update experiments set stage = ?, updated_at = ? where id = ? and stage = ?",
                [str(Stage.LAUNCHING), now, exp_id, str(Stage.QUEUED)],
            )
            self._set(db, exp_id, fields)
            event = {"exp_id": exp_id, "ts": now, "kind": "stage", "stage": str(Stage.LAUNCHING)}
            db["events"].insert({**event, "message": message})
        return True

    def update(self, exp_id: int, **fields: Any) -> None:
        """Set fields without changing the stage."""
        with self.transaction() as db:
            self._set(db, exp_id, {**fields, "updated_at": time.time()})

    def record_handle(self, run_id: str, handle: dict[str, Any]) -> None:
        """Keep a backend's handle the moment it exists (a spawned Modal call), before any further network
        call can fail: ``kdq cancel`` then finds the call even if the launch step never completes."""
        with self.transaction() as db:
            db.execute(
                "update experiments set handle = ?, updated_at = ? where run_id = ?",
                [_dumps(handle), time.time(), run_id],
            )

    def handle_of_run(self, run_id: str) -> dict[str, Any] | None:
        rows = list(self.db.query("select handle from experiments where run_id = ?", [run_id]))
        return json.loads(rows[0]["handle"]) if rows and rows[0]["handle"] else None

    @staticmethod
    def _set(db: sqlite_utils.Database, exp_id: int, values: dict[str, Any]) -> None:
        encoded = {k: _dumps(v) if k in JSON_FIELDS else v for k, v in values.items()}
        db["experiments"].update(exp_id, encoded)

    def event(self, exp_id: int, kind: str, message: str, **data: Any) -> None:
        self.db["events"].insert(
            {
                "exp_id": exp_id,
                "ts": time.time(),
                "kind": kind,
                "stage": None,
                "message": message,
                "data": _dumps(data) if data else None,
            }
        )

    def events(self, exp_id: int) -> list[dict]:
        return list(self.db.query("select * from events where exp_id = ? order by id", [exp_id]))

    # ------------------------------------------------------------ user requests

    def request_cancel(self, exp_id: int) -> Experiment:
        """Flag for the worker; stages with nothing running elsewhere are cancelled at once."""
        exp = self.get(exp_id)
        if exp.stage in (Stage.QUEUED, Stage.READY, Stage.FETCHING, Stage.VALIDATING):
            if self.move(exp_id, exp.stage, Stage.CANCELLED, "cancelled by the user"):
                return self.get(exp_id)
        # Flag it only while it is still live: the worker may have finished or failed it since the read above.
        live = sorted(str(s) for s in LIVE)
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                f"update experiments set cancel_requested = 1, updated_at = ? where id = ? and stage in ({','.join('?' * len(live))})",
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
                        "data": None,
                    }
                )
        return self.get(exp_id)

    def retry(self, exp_id: int) -> Experiment:
        """Queue a failed, cancelled or skipped experiment again as a new attempt (a new run id)."""
        exp = self.get(exp_id)
        if exp.stage not in RETRYABLE:
            raise ValueError(
                f"experiment {exp_id} is {exp.stage}; only {', '.join(sorted(RETRYABLE))} can be retried"
            )
        moved = self.move(
            exp_id,
            exp.stage,
            Stage.QUEUED,
            f"retry (attempt {exp.attempt + 1})",
            attempt=exp.attempt + 1,
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
        """``kdq submit ID``: submit this validated model next, whatever its policy (not whatever the rate limit)."""
        exp = self.get(exp_id)
        if exp.stage not in (Stage.READY, Stage.DONE, Stage.SKIPPED) or not exp.artifacts:
            raise ValueError(
                f"experiment {exp_id} is {exp.stage}; only a validated model (ready, done or skipped) can be submitted"
            )
        if exp.stage is not Stage.READY and not self.move(
            exp_id, exp.stage, Stage.READY, "submission requested"
        ):
            raise ValueError(f"experiment {exp_id} changed while requesting a submission; look again")
        self.update(exp_id, submit_requested=1, next_check_at=time.time())
        self.event(exp_id, "submit", "submission requested by the user")
        return self.get(exp_id)
