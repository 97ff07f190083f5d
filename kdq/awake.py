"""A laptop that stays awake while the night needs it, and a worker that says when it slept anyway.

    awake = KeepAwake(allow_sleep=settings.allow_sleep)
    awake.update(live=3)          # at each heartbeat: hold wakepy's keep.running lock while anything is live
    awake.release()               # the worker stops
    gap = asleep(prev_ts, now, heartbeat_s)           # seconds the worker missed, or None (pure)
    slept_line(store, now)        # kdq status: "the worker was asleep 2h10m (01:20-03:30): 3 windows missed"

The lock is wakepy's ``keep.running`` mode (caffeinate on macOS, the desktop's inhibitor over D-Bus on
Linux, SetThreadExecutionState on Windows): the system stays up, the screen may lock. Where no method
works (a Linux box without a desktop session), it says so once and how to do it by hand. Closing a
laptop's lid sleeps it whatever any program asks; ``asleep`` then finds the gap in the worker's own
heartbeat when it wakes, and the worker logs and records it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

from kdq import gaps
from kdq.log import get_logger

if TYPE_CHECKING:
    from kdq.store import Store

log = get_logger("kdq.worker")
META = "worker.slept"
MIN_GAP_S = 60.0  # a beat this late (or six beats' worth, if more) is a sleep, not a slow disk
SHOWN_FOR_S = 12 * 3600.0  # kdq status tells of a sleep this long after it


class KeepAwake:
    def __init__(self, allow_sleep: bool = False):
        self.allow_sleep = allow_sleep
        self.mode = None
        self.refused = False  # no method worked: said once, not tried at every beat
        self.last: float | None = None  # the last heartbeat, by the wall clock (it runs on in a sleep)

    def beat(self, store: Store, settings, now: float | None = None) -> None:
        """At each heartbeat: say so if the worker slept since the last one, then hold the lock while
        anything is live (queued to evaluating) and let it go when nothing is."""
        from kdq.stages import LIVE

        now = time.time() if now is None else now
        if asleep(self.last, now, settings.heartbeat_s) is not None:
            note_sleep(store, self.last, now, settings.submit_interval_s)
        self.last = now
        counts = store.count_by_stage()
        self.update(sum(n for stage, n in counts.items() if stage in LIVE))

    @property
    def held(self) -> bool:
        return self.mode is not None

    def update(self, live: int) -> None:
        if self.allow_sleep:
            return
        if live and self.mode is None and not self.refused:
            from wakepy import keep

            mode = keep.running(on_fail="pass")
            mode.__enter__()
            if mode.active:
                self.mode = mode
                how = mode.active_method.name
                log.info(f"keeping this machine awake while {live} experiments are live ({how})")
            else:
                mode.__exit__(None, None, None)
                self.refused = True
                log.warning(
                    "cannot keep this machine awake (no wakepy method works here): start the worker as "
                    "`systemd-inhibit kdq worker` (Linux) or `caffeinate -i kdq worker` (macOS), or keep it "
                    "awake yourself; see docs/overnight.md"
                )
        elif not live and self.mode is not None:
            self.release()
            log.info("the queue is empty: this machine may sleep again")

    def release(self) -> None:
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.mode = None


def asleep(prev_ts: float | None, now: float, heartbeat_s: float) -> float | None:
    """The seconds between two beats beyond the beat itself when they are too many to be a slow beat:
    the process was suspended (a sleeping laptop, a stopped process). ``None``: no gap."""
    if prev_ts is None:
        return None
    gap = now - prev_ts
    return gap - heartbeat_s if gap > max(MIN_GAP_S, 6 * heartbeat_s) else None


def windows_missed(seconds: float, interval_s: float) -> int:
    """Submission windows (one per ``interval_s``) that went by while the worker slept."""
    return int(seconds // interval_s) if interval_s > 0 else 0


def short(seconds: float) -> str:
    h, m = divmod(round(seconds / 60), 60)
    return f"{h}h{m:02d}m" if h else f"{m}m"


def note_sleep(store: Store, since: float, now: float, interval_s: float) -> str:
    """Log and record a sleep found at ``now`` (the last beat at ``since``); the sentence said."""
    seconds, missed = now - since, windows_missed(now - since, interval_s)
    said = f"the worker was asleep {short(seconds)}: {missed} submission window{'s' * (missed != 1)} missed"
    log.warning(said, since=datetime.fromtimestamp(since).isoformat(timespec="minutes"))
    store.set_meta(META, {"from": since, "to": now, "seconds": seconds, "windows": missed})
    gaps.add(store, "asleep", since, now, said)
    return said


def slept_line(store: Store, now: float | None = None) -> str | None:
    """kdq status's line about the worker's last sleep, for ``SHOWN_FOR_S`` after it ended."""
    now = time.time() if now is None else now
    s = store.get_meta_json(META)
    if not s or now - s["to"] > SHOWN_FOR_S:
        return None
    span = f"{datetime.fromtimestamp(s['from']):%H:%M}-{datetime.fromtimestamp(s['to']):%H:%M}"
    w = s["windows"]
    return (
        f"the worker was asleep {short(s['seconds'])} ({span}): {w} submission window{'s' * (w != 1)} missed"
    )
