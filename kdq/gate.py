"""The launch gate: how many trainings of one backend run at once, and which queued one goes next. Pure.

At most ``KDQ_LOCAL_MAX_RUNNING`` local and ``KDQ_MODAL_MAX_RUNNING`` Modal trainings (launching or
training) at once; the rest stay ``queued`` and go in ``--priority`` order (higher first), then oldest
first, then by id; one waiting for a missing login keeps its place but holds no one back. The store
applies this inside the transaction that moves ``queued → launching``, so
two worker threads can never both take the last slot.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any


def launch_order(exp: Any) -> tuple:
    """Sort key of queued experiments: the first one launches first."""
    return (-(exp.priority or 0), exp.created_at, exp.id)


def may_launch(
    exp: Any, queued: Sequence[Any], running: int, limit: int, waiting: Collection[int] = ()
) -> bool:
    """Whether ``exp`` (one of ``queued``, all of its backend) may launch while ``running`` already run.
    ``waiting``: the ids of queued experiments that wait for a missing login (kdq/pause.py): they are in
    no one's way."""
    ahead = sum(1 for o in queued if o.id not in waiting and launch_order(o) < launch_order(exp))
    return running + ahead < limit
