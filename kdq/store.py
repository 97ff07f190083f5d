"""The store: one SQLite file (``$KDQ_HOME/kdq.db``) that is the truth about every experiment.

Tables: ``experiments`` (spec, stage, backend handle, run id, metrics, artifacts, errors),
``events`` (append-only timeline per experiment), ``submissions``, ``leaderboard`` (snapshots)
and ``meta`` (schema version, instance id, worker heartbeat, server reachability); the tables are made
by the migrations in ``kdq.schema``, the user's requests (cancel, retry, submit) are ``kdq.requests``.

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
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from kdq import gate
from kdq.experiment import JSON_FIELDS, Experiment, Outline
from kdq.log import get_logger, stage_changed
from kdq.requests import UserRequests
from kdq.schema import MIGRATIONS, SCHEMA_VERSION
from kdq.stages import LIVE, Stage, check_move

if TYPE_CHECKING:
    import sqlite_utils

log = get_logger("kdq.store")
BUSY_TIMEOUT_S = 5  # SQLite's own wait for the write lock, each try
BUSY_WAIT_S = 900  # then tenacity tries again, saying so once, for up to this long (then ``Busy``)


class NotFound(KeyError):
    pass


class StoreError(ValueError):
    """The database cannot be used as it is: one line naming the file and what to do."""


class Busy(StoreError):
    """Another process held the write lock for longer than ``BUSY_WAIT_S``: transient, nothing written."""


def _locked(exc: BaseException) -> bool:
    from kdq.errors import database_locked

    return database_locked(exc)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _gate_open(db, exp_id: int, backend: str, limit: int, waiting: Collection[int]) -> bool:
    sql = "select id, priority, created_at, stage from experiments where backend = ? and stage in (?,?,?)"
    stages = [str(s) for s in (Stage.QUEUED, Stage.LAUNCHING, Stage.TRAINING)]  # kdq.gate's rule over these
    rows = [SimpleNamespace(**r) for r in db.query(sql, [backend, *stages])]
    queued = [r for r in rows if r.stage == Stage.QUEUED]
    me = next((r for r in queued if r.id == exp_id), None)
    return me is not None and gate.may_launch(me, queued, len(rows) - len(queued), limit, waiting)


# ---------------------------------------------------------------- the store


class Store(UserRequests):
    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists() and path.stat().st_size > 0
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        self.path = path
        self.conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            if existed and (verdict := conn.execute("PRAGMA quick_check(1)").fetchone()[0]) != "ok":
                raise sqlite3.DatabaseError(verdict)
            self._migrate()
        except sqlite3.OperationalError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:  # not a database, truncated, or malformed
            conn.close()
            raise StoreError(
                f"{path} is damaged ({exc}): move it aside and restore a copy, "
                "or start over with another KDQ_HOME (kdq repairs nothing by guessing)"
            ) from None

    @classmethod
    def open(cls, settings, *, force: bool = False) -> Store:
        """The store of this home. A home with runs or artifacts but no database lost its database:
        refused unless ``force`` (a new database gets a new instance id, so no old run id comes back)."""
        if not force:
            cls.refuse_a_lost_database(settings)
        return cls(settings.db_path)

    @staticmethod
    def refuse_a_lost_database(settings) -> None:
        """``StoreError`` if the home has runs or artifacts but its kdq.db is gone."""
        if settings.db_path.exists():
            return
        left = [
            d.name for d in (settings.runs_dir, settings.artifacts_dir) if d.is_dir() and any(d.iterdir())
        ]
        if left:
            raise StoreError(
                f"{settings.root} has {' and '.join(left)} but no kdq.db: it was moved or deleted; put it"
                " back, or run `kdq worker --force` to start an empty one beside the old runs"
            )

    @cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the same connection, for writes. Imported on the first write, so a command
        that only reads (``kdq status``) never pays for sqlite-utils and the numpy it imports."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def query(self, sql: str, params: Iterable[Any] = ()) -> Iterator[dict[str, Any]]:
        """Rows as dicts, like ``sqlite_utils.Database.query``, on the plain connection."""
        cursor = self.conn.execute(sql, list(params))
        keys = [d[0] for d in cursor.description]
        for row in cursor:
            yield dict(zip(keys, row))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction that holds the write lock from its first statement."""
        db = self.db  # made before BEGIN: sqlite-utils sets its pragmas as it opens
        self._begin()
        try:
            yield db
        except BaseException:
            self.conn.rollback()
            raise
        else:
            self.conn.execute("COMMIT")

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``, waiting while another process holds the write lock (a `sqlite3` shell, a
        backup): a busy database is transient, said once in the log, never a failure of its own."""
        from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

        def say(state) -> None:
            if state.attempt_number == 1:
                log.warning(
                    f"{self.path} is busy: another process holds its write lock; waiting (up to "
                    f"{BUSY_WAIT_S / 60:.0f} min)"
                )

        retrying = Retrying(
            retry=retry_if_exception(_locked),
            wait=wait_exponential(multiplier=0.5, max=10),
            stop=stop_after_delay(BUSY_WAIT_S),
            before_sleep=say,
            reraise=True,
        )
        try:
            retrying(self.conn.execute, "BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            raise Busy(
                f"{self.path} is busy: another process has held its write lock for over "
                f"{BUSY_WAIT_S / 60:.0f} min (a `sqlite3` shell or a backup? `fuser {self.path}` names it); "
                "nothing was written, try again once it is released"
            ) from None

    def _migrate(self) -> None:
        found = self.schema_version()
        if found > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer kdq (schema {found}); upgrade kdq")
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
        if not list(self.query("select 1 from sqlite_master where type = 'table' and name = 'meta'")):
            return 0
        return int(self.get_meta("schema_version") or 0)

    # ------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        rows = list(self.query("select value from meta where key = ?", [key]))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db["meta"].upsert(
                {"key": key, "value": value if isinstance(value, str) else json.dumps(value)}, pk="key"
            )

    def get_meta_json(self, key: str) -> Any:
        value = self.get_meta(key)
        return json.loads(value) if value else None

    @property
    def instance(self) -> str:
        return self.get_meta("instance") or "kdq"

    # ------------------------------------------------------------ experiments

    def get(self, exp_id: int) -> Experiment:
        rows = list(self.query("select * from experiments where id = ?", [exp_id]))
        if not rows:
            raise NotFound(f"no experiment {exp_id}")
        return Experiment.from_row(rows[0])

    def list(
        self, stages: set[Stage] | None = None, order: str = "id", ids: Iterable[int] | None = None
    ) -> list[Experiment]:
        """Experiments in ``stages`` (all if none given), and with these ``ids`` if given."""
        where, params = [], []
        if stages:
            where.append(f"stage in ({','.join('?' * len(stages))})")
            params += [str(s) for s in stages]
        if ids is not None:
            ids = [*ids]
            where.append(f"id in ({','.join('?' * len(ids))})")  # SQLite takes an empty list: no rows
            params += ids
        sql = f"select * from experiments {'where ' + ' and '.join(where) if where else ''} order by {order}"
        return [Experiment.from_row(r) for r in self.query(sql, params)]

    def outlines(self) -> list[Outline]:
        """Every experiment's ``Outline``, by id: a thousand in a millisecond (no spec, no JSON)."""
        sql = f"select {', '.join(Outline._fields)} from experiments order by id"
        return [Outline(i, Stage(st), p or 0, u, a) for i, st, p, u, a in self.conn.execute(sql)]

    def live(self) -> list[Experiment]:
        return self.list(set(LIVE))

    def count_by_stage(self) -> dict[str, int]:
        return {
            r["stage"]: r["n"] for r in self.query("select stage, count(*) n from experiments group by stage")
        }

    def move(self, exp_id: int, src: Stage, dst: Stage, message: str = "", **fields: Any) -> bool:
        """Move ``src → dst`` (and set ``fields``) only if the experiment is still in ``src``."""
        with self.transaction() as db:
            name = self._move(db, exp_id, src, dst, message, fields)
        if name is None:
            return False
        stage_changed(exp_id, name, src, dst, message, fields.get("progress"))
        return True

    def _move(self, db, exp_id: int, src: Stage, dst: Stage, message: str, fields: dict) -> str | None:
        """The one way a stage changes, inside the caller's transaction: the name, or ``None`` if the
        experiment is not in ``src`` any more."""
        check_move(src, dst)
        now = time.time()
        # A model whose cancel was requested is never submitted (`kdq cancel` during a put-back upload).
        uncancelled = " and cancel_requested = 0" if dst is Stage.SUBMITTING else ""
        cur = db.execute(
            f"update experiments set stage = ?, updated_at = ? where id = ? and stage = ?{uncancelled}",
            [str(dst), now, exp_id, str(src)],
        )
        if cur.rowcount != 1:
            return None
        if fields:
            self._set(db, exp_id, fields)
        event = {"exp_id": exp_id, "ts": now, "kind": "stage", "stage": str(dst)}
        db["events"].insert({**event, "message": message or f"{src} → {dst}"})
        return db.execute("select name from experiments where id = ?", [exp_id]).fetchone()[0]

    def start_launch(
        self,
        exp_id: int,
        backend: str,
        limit: int,
        message: str = "",
        waiting: Collection[int] = (),
        **fields: Any,
    ) -> bool:
        """``queued → launching`` only if the launch gate (kdq.gate) lets it through, checked in the same
        transaction as the move, so two workers never both take the last of ``limit`` slots; ``waiting``:
        queued ids that wait for a missing login (they hold no one back)."""
        with self.transaction() as db:
            if not _gate_open(db, exp_id, backend, limit, waiting):
                return False
            name = self._move(db, exp_id, Stage.QUEUED, Stage.LAUNCHING, message, fields)
        if name is None:
            return False
        stage_changed(exp_id, name, Stage.QUEUED, Stage.LAUNCHING, message)
        return True

    def gate_open(self, exp_id: int, backend: str, limit: int, waiting: Collection[int] = ()) -> bool:
        return _gate_open(self.db, exp_id, backend, limit, waiting)  # a look: ``start_launch`` decides

    def supersede_ranks(self, live_id: int) -> None:
        """``live_id`` is the live submission now: the leaderboard ranks it alone, so no other experiment
        keeps showing the rank it had while it was live."""
        with self.transaction() as db:
            sql = "update experiments set server_rank = null where id != ? and server_rank is not null"
            db.execute(sql, [live_id])

    def update(self, exp_id: int, **fields: Any) -> None:
        """Set fields without changing the stage."""
        with self.transaction() as db:
            self._set(db, exp_id, {**fields, "updated_at": time.time()})

    def record_handle(self, run_id: str, handle: dict[str, Any]) -> None:
        """A spawned call's handle, kept before any further network call (so ``kdq cancel`` finds it)."""
        with self.transaction() as db:
            db.execute("update experiments set handle = ? where run_id = ?", [_dumps(handle), run_id])

    def handle_of_run(self, run_id: str) -> dict[str, Any] | None:
        rows = list(self.query("select handle from experiments where run_id = ?", [run_id]))
        return json.loads(rows[0]["handle"]) if rows and rows[0]["handle"] else None

    @staticmethod
    def _set(db: sqlite_utils.Database, exp_id: int, values: dict[str, Any]) -> None:
        encoded = {k: _dumps(v) if k in JSON_FIELDS else v for k, v in values.items()}
        db["experiments"].update(exp_id, encoded)

    def event(self, exp_id: int, kind: str, message: str, **data: Any) -> None:
        row = {"exp_id": exp_id, "ts": time.time(), "kind": kind, "stage": None, "message": message}
        with self.transaction() as db:
            db["events"].insert({**row, "data": _dumps(data) if data else None})

    def events(self, exp_id: int) -> list[dict]:
        return list(self.query("select * from events where exp_id = ? order by id", [exp_id]))
