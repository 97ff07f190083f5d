"""The database's tables, made by migrations: each is a function applied once, in order, in one transaction.

``kdq.store.Store`` runs the missing ones when it opens a database; ``meta.schema_version`` says how
many ran. A database written by a newer kdq (a higher version) is refused, not guessed at.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils


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


def _m4_resume_from(db: sqlite_utils.Database) -> None:
    """The earlier run whose last checkpoint a retried attempt starts from (``kdq retry`` without --fresh)."""
    db["experiments"].add_column("resume_from", str)


def _m5_best_epoch_from_one(db: sqlite_utils.Database) -> None:
    """``metrics.best_epoch`` counts from 1, as people do (training recorded it from 0 before)."""
    db.execute(
        "update experiments set metrics = json_set(metrics, '$.best_epoch', "
        "json_extract(metrics, '$.best_epoch') + 1) where json_valid(metrics) "
        "and json_type(metrics, '$.best_epoch') = 'integer'"
    )


def _m6_refit_of(db: sqlite_utils.Database) -> None:
    """The experiment a refit run retrains on every picture (``data.refit``, kdq.refit)."""
    if "refit_of" not in db["experiments"].columns_dict:
        db["experiments"].add_column("refit_of", int)


# Append only: a migration, once released, is never edited. The schema version is its index + 1.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m1_initial,
    _m2_submission_identity,
    _m3_search_trials,
    _m4_resume_from,
    _m5_best_epoch_from_one,
    _m6_refit_of,
]
SCHEMA_VERSION = len(MIGRATIONS)
