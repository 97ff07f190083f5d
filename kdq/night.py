"""The night in numbers, read from the database: each experiment's ETA and cost, the queue's end, the total.

    night = Night.read(store, settings)      # no network call, no run folder read
    night.etas[7].cell()                     # "3/10 4m+9m"
    night.line()                             # kdq status's line: queue empty at, GPU-hours, dollars
    night.as_json()                          # kdq status --json: {"eta": ..., "cost": ...}

The arithmetic is kdq.eta and kdq.cost (pure); this module only gathers their inputs: the stage events
(when each attempt launched and ended), progress.json as the worker last copied it, and each spec's
backend, GPU, caps and epochs.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from kdq import cost, eta
from kdq.stages import LIVE, Stage

if TYPE_CHECKING:
    from kdq.store import Store

TRAINING = frozenset({Stage.LAUNCHING, Stage.TRAINING})


def stage_events(store: Store) -> dict[int, list[tuple[float, str]]]:
    """Every experiment's ``(ts, stage)`` moves, in order."""
    out: dict[int, list[tuple[float, str]]] = defaultdict(list)
    sql = "select exp_id, ts, stage from events where kind = 'stage' order by id"
    for exp_id, ts, stage in store.conn.execute(sql):
        out[exp_id].append((ts, stage))
    return out


@dataclass(frozen=True)
class Plan:
    """What a spec says about its cost and length."""

    backend: str
    gpu: str
    max_gpu_hours: float
    timeout_min: float
    epochs: int


@lru_cache(maxsize=256)
def plan(kind: str, backend_json: str | None, epochs: int | None) -> Plan:
    """A spec's backend section (its JSON text: a night has few distinct ones) read through BackendSpec."""
    from kdq.spec import BackendSpec, TrainSpec

    raw = json.loads(backend_json) if backend_json else {}
    if "max_gpu_hours" in raw:  # a spec stored before the cap was counted in minutes
        raw = {"max_gpu_min": raw["max_gpu_hours"] * 60, **raw}
    known = {k: v for k, v in raw.items() if k in BackendSpec.model_fields}
    try:
        b = BackendSpec.model_validate(known)  # its defaults and rules, not copies of them
    except ValueError:  # a row no spec of this kdq would make: its cost still counts, by the defaults
        b = BackendSpec(kind="modal" if kind == "modal" else "local")
    epochs = epochs if epochs is not None else TrainSpec.model_fields["epochs"].default
    return Plan(kind or b.kind, b.gpu, b.max_gpu_min / 60, float(b.attempt_min), int(epochs))


class Row(NamedTuple):
    """The columns the night reads of each experiment (one query; no spec parsed whole)."""

    id: int
    stage: Stage
    priority: int
    created_at: float
    progress: str | None
    epochs_run: int | None
    plan: Plan


def rows(store: Store) -> list[Row]:
    sql = (
        "select id, stage, priority, created_at, progress, json_extract(metrics, '$.epochs_run'), backend,"
        " json_extract(spec, '$.backend'), json_extract(spec, '$.train.epochs') from experiments order by id"
    )
    return [
        Row(i, Stage(st), pr or 0, ca or 0.0, pg, er, plan(kind, b, ep))
        for i, st, pr, ca, pg, er, kind, b, ep in store.conn.execute(sql)
    ]


@dataclass(frozen=True)
class Night:
    now: float
    etas: dict[int, eta.Eta]
    costs: dict[int, cost.Cost]
    empty_at: float | None
    waiting: int  # live trainings and queued experiments the end time waits for
    totals: dict

    @classmethod
    def read(cls, store: Store, settings, now: float | None = None) -> Night:
        now = time.time() if now is None else now
        prices = cost.parse_prices(settings.gpu_price_per_hour)
        events = stage_events(store)
        exps = rows(store)
        spans = {e.id: cost.attempts(events.get(e.id, [])) for e in exps}
        costs = {}
        for e in exps:
            p, hours = e.plan, cost.gpu_hours(spans[e.id], now)
            live = e.stage in LIVE
            costs[e.id] = cost.Cost.of(p.backend, p.gpu, hours, prices, live, p.max_gpu_hours, p.timeout_min)
        typical = {
            backend: eta.typical_epoch_s(
                (3600 * cost.gpu_hours(spans[e.id][-1:], now), e.epochs_run or 0)
                for e in exps
                if e.plan.backend == backend and e.epochs_run and spans[e.id]
            )
            for backend in {e.plan.backend for e in exps}
        }
        etas = {}
        for e in exps:
            if e.stage in TRAINING:
                started = spans[e.id][-1][0] if spans[e.id] else None
                progress = json.loads(e.progress) if e.progress else None
                etas[e.id] = eta.Eta.of(progress, started, now, typical[e.plan.backend])
        empty_at, waiting = cls._empty_at(exps, etas, typical, settings, now)
        return cls(now, etas, costs, empty_at, waiting, cost.total(costs.values()))

    @staticmethod
    def _empty_at(exps, etas, typical, settings, now) -> tuple[float | None, int]:
        """The launch gate simulated per backend: the last backend to finish ends the night."""
        from kdq.gate import launch_order

        ends, waiting = [], 0
        for backend in sorted({e.plan.backend for e in exps}):
            mine = [e for e in exps if e.plan.backend == backend]
            running = [etas[e.id].remaining_s for e in mine if e.id in etas]
            queued = sorted((e for e in mine if e.stage is Stage.QUEUED), key=launch_order)
            per = typical[backend]
            todo = [None if per is None else per * e.plan.epochs for e in queued]
            waiting += len(running) + len(todo)
            ends.append(eta.queue_empty_at(running, todo, settings.max_running(backend), now))
        return (None if None in ends else max(ends, default=now)), waiting

    def line(self) -> str:
        """``night: queue empty ~04:10 (in 2h10m)  GPU 1.3 h $4.94, worst case $31.60  local 0.4 h``."""
        return "night: " + "  ".join(self.parts())

    def parts(self) -> list[str]:
        """The line's parts: when the queue should be empty, the GPU's cost, the local hours."""
        t = self.totals
        if not self.waiting:
            parts = ["queue empty"]
        elif self.empty_at is None:
            parts = ["queue end not known (no training timed yet)"]
        else:
            clock = datetime.fromtimestamp(self.empty_at).strftime("%H:%M")
            parts = [f"queue empty ~{clock} (in {eta.short(self.empty_at - self.now)})"]
        if t["gpu_hours"] or t["worst_case_dollars"]:
            parts.append(
                f"GPU {t['gpu_hours']:.1f} h ${t['dollars']:.2f}, worst case ${t['worst_case_dollars']:.2f}"
            )
        if t["local_hours"]:
            parts.append(f"local {t['local_hours']:.1f} h")
        if t["unpriced_gpus"]:
            parts.append(f"no price for {', '.join(t['unpriced_gpus'])}: KDQ_GPU_PRICE_PER_HOUR")
        return parts

    def as_json(self) -> dict:
        return {
            "eta": {
                "queue_empty_at": self.empty_at,
                "queue_empty_in_s": None if self.empty_at is None else round(self.empty_at - self.now, 1),
                "waiting_for": self.waiting,
            },
            "cost": self.totals,
        }
