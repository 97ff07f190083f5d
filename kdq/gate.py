"""The launch gate: how many trainings of one backend run at once, and which queued one goes next. Pure.

At most ``KDQ_LOCAL_MAX_RUNNING`` local and ``KDQ_MODAL_MAX_RUNNING`` Modal trainings (launching or
training) at once; the rest stay ``queued`` and go in ``--priority`` order (higher first), then oldest
first, then by id. The store applies this inside the transaction that moves ``queued → launching``, so
two worker threads can never both take the last slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def launch_order(exp: Any) -> tuple:
    """Sort key of queued experiments: the first one launches first."""
    return (-(exp.priority or 0), exp.created_at, exp.id)


def may_launch(exp: Any, queued: Sequence[Any], running: int, limit: int) -> bool:
    """Whether ``exp`` (one of ``queued``, all of its backend) may launch while ``running`` already run."""
    ahead = sum(1 for other in queued if launch_order(other) < launch_order(exp))
    return running + ahead < limit
