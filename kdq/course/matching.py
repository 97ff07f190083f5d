"""Which attempt on the server's status list is which upload of ours: pure functions, no I/O.

An attempt number alone proves nothing (a server that restarts without its state numbers again from
#1), so an attempt is ours only when its number and size agree with what kdq wrote down, and its
time with the one first seen for it (the server's own clock, whatever its offset from ours). An
upload never seen on a list yet is matched by number while the list has grown as expected, and by
the time of the upload once the list restarted. Two uploads of one team are at least one submission
interval apart (the server refuses the second otherwise), so half an interval is a safe tolerance.

Times the server shows in the future (a server not on Eastern time) are clamped to the local clock
when an attempt is first seen, and that first-seen time is kept for it from then on.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from kdq.course.models import Attempt

MIN_TOLERANCE_S = 1.0


def tolerance_s(interval_s: float) -> float:
    return max(MIN_TOLERANCE_S, interval_s / 2)


def same_size(size_mb: float | None, size_bytes: int | None) -> bool:
    """Could an attempt of ``size_mb`` be our file? To the precision the server shows it (half a unit of
    its last decimal: ``0.1434`` is 0.14335 to 0.14345), in MiB or MB. Unknown sizes count as yes."""
    if size_mb is None or size_bytes is None:
        return True
    slack = _half_unit(size_mb) + 1e-9 * size_mb
    return any(abs(size_mb - size_bytes / unit) <= slack for unit in (1024 * 1024, 1e6))


def _half_unit(value: float) -> float:
    text = repr(float(value))
    if "e" in text or "." not in text:
        return max(0.005, 1e-6 * abs(value))  # no decimals to go by: the 2 decimals a page shows
    return 0.5 * 10 ** -len(text.split(".")[1])


@dataclass(frozen=True)
class Seen:
    """A status list read against the previous one."""

    attempts: list[Attempt]
    ahead_s: float = 0.0  # how far in the future the server's newest unclamped time was
    restarted: str = ""  # why the list cannot be the previous one grown, if it cannot


def _key(a: Attempt) -> tuple[int, str | None]:
    return a.attempt, a.submitted_at_text


def read_list(new: list[Attempt], previous: list[Attempt], now: float) -> Seen:
    """Clamp future times (keeping the clamped time of an attempt seen before) and notice a restart."""
    kept = {_key(a): a.submitted_at for a in previous}
    out, ahead = [], 0.0
    for a in new:
        if _key(a) in kept and kept[_key(a)] is not None:
            out.append(a.model_copy(update={"submitted_at": kept[_key(a)]}))
            continue
        if a.submitted_at is not None and a.submitted_at.timestamp() > now:
            ahead = max(ahead, a.submitted_at.timestamp() - now)
            out.append(a.model_copy(update={"submitted_at": _at(now)}))
            continue
        out.append(a)
    return Seen(out, ahead, _restart(previous, new))


def _restart(previous: list[Attempt], new: list[Attempt]) -> str:
    if not previous:
        return ""
    old = {a.attempt: a for a in previous}
    if max(old) > max((a.attempt for a in new), default=0):
        return f"the server's list went from {len(previous)} attempts (up to #{max(old)}) to {len(new)}"
    for a in new:
        before = old.get(a.attempt)
        if before is not None and before.submitted_at_text != a.submitted_at_text:
            return (
                f"attempt #{a.attempt} was submitted {before.submitted_at_text!r} and is now "
                f"{a.submitted_at_text!r}"
            )
    return ""


def _at(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


def find_upload(
    attempts: list[Attempt],
    *,
    since: float,
    size_bytes: int | None,
    baseline: int,
    tol_s: float,
    restarted: bool = False,
    outside: frozenset[int] | set[int] = frozenset(),
) -> list[Attempt]:
    """The attempts that can be the upload started at ``since``: our size, a number after the ones
    listed before it and not an upload kdq made outside the queue (``outside``); when the list
    restarted since, the first recorded after ``since`` instead. More than one: kdq cannot tell."""

    def fits(a: Attempt) -> bool:
        if not same_size(a.size_mb, size_bytes):
            return False
        if restarted:  # numbers say nothing any more: only the time the server recorded it
            return a.submitted_at is not None and a.submitted_at.timestamp() >= since - tol_s
        return a.attempt > baseline and a.attempt not in outside

    found = sorted((a for a in attempts if fits(a)), key=lambda a: a.attempt)
    return found[:1] if restarted else found


def is_ours(
    a: Attempt,
    *,
    number: int,
    size_bytes: int | None,
    recorded_at: float | None,
    since: float | None,
    tol_s: float,
    restarted: bool = False,
) -> bool:
    """Whether ``a`` is our attempt ``number``: its size, and its time: the one first seen for it, or,
    when the list restarted since the upload and the attempt was never seen, the upload's own time."""
    if a.attempt != number or not same_size(a.size_mb, size_bytes):
        return False
    if a.submitted_at is None:
        return True
    t = a.submitted_at.timestamp()
    if recorded_at is not None:
        return abs(t - recorded_at) <= tol_s
    return not restarted or since is None or abs(t - since) <= tol_s


def shown_times(
    attempts: list[Attempt], sent: dict[int, float], now: float
) -> tuple[dict[int, float], str | None]:
    """Attempt number → when it was made on this machine's clock (``kdq server status``): kdq's own
    uploads when kdq sent them (``sent``), another's server time, a time in the future as now; and a
    note when the server's times run an hour or more off ours (its clock, or a zone other than Eastern)."""
    shown, offsets = {}, []
    for a in attempts:
        server = a.submitted_at.timestamp() if a.submitted_at else None
        if a.attempt in sent:
            shown[a.attempt] = sent[a.attempt]
            offsets += [] if server is None else [server - sent[a.attempt]]
        elif server is not None:
            shown[a.attempt] = min(server, now)
            offsets += [server - now] if server > now else []
    off = statistics.median(offsets) if offsets else 0.0
    if abs(off) < 3600:
        return shown, None
    return shown, (
        f"the server's times run {abs(off) / 3600:.1f} h {'ahead of' if off > 0 else 'behind'} this "
        "machine's (its clock, or not Eastern time); shown: when kdq sent its uploads, a future time as now"
    )
