"""``kdq report --night``: the whole night on one HTML page, the one to open in the morning.

    write_night_report(store, settings, out)  ->  out/index.html (plus each experiment's own report)

A timeline (Gantt) of every experiment's stages from its stage events, the submission windows used
and left unused with the policy's skips, the gaps (course server unreachable, scheduler failing, the
worker asleep: kdq.gaps), the live score over time, the cost (kdq.night) and a link to each
experiment's report. The charts are inline SVG drawn here: no script, no network, any browser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from markupsafe import Markup

from kdq import gaps, report
from kdq.night import Night, stage_events
from kdq.stages import TERMINAL

if TYPE_CHECKING:
    from kdq.store import Store

COLORS = {
    "queued": "#dddddd",
    "launching": "#c39bd3",
    "training": "#f0b429",
    "fetching": "#76b7b2",
    "validating": "#76b7b2",
    "ready": "#5bc0de",
    "submitting": "#9467bd",
    "evaluating": "#9467bd",
    "done": "#2ca02c",
    "failed": "#d62728",
    "cancelled": "#999999",
    "skipped": "#999999",
    "pruned": "#999999",
}
GAP_COLORS = {"vpn": "#ff7f0e", "credentials": "#e377c2", "scheduler": "#8c564b", "asleep": "#444444"}
LABEL_W, CHART_W, ROW_H = 230, 750, 18
TICKS_S = (60, 300, 900, 1800, 3600, 7200, 10800, 21600)


@dataclass(frozen=True)
class Axis:
    start: float
    end: float

    def x(self, ts: float) -> float:
        span = max(1.0, self.end - self.start)
        return LABEL_W + (min(max(ts, self.start), self.end) - self.start) / span * CHART_W

    def ticks(self) -> list[float]:
        step = next((s for s in TICKS_S if (self.end - self.start) / s <= 12), TICKS_S[-1])
        first = (int(self.start) // step + 1) * step
        return [float(t) for t in range(first, int(self.end) + 1, step)]


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M")


def _rect(x0: float, x1: float, y: float, h: float, color: str, tip: str) -> str:
    w = max(2.0, x1 - x0)
    return (
        f'<rect x="{x0:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{color}">'
        f"<title>{escape(tip)}</title></rect>"
    )


def _grid(axis: Axis, height: float) -> list[str]:
    out = []
    for t in axis.ticks():
        x = axis.x(t)
        out.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 14}" stroke="#eee"/>')
        out.append(
            f'<text x="{x:.1f}" y="{height - 2}" font-size="11" text-anchor="middle">{_clock(t)}</text>'
        )
    return out


def gantt(exps, events, subs, night_gaps, axis: Axis, interval_s: float, now: float) -> Markup:
    """One row per experiment (its stages in colour), then the submission windows, then the gaps."""
    rows = len(exps) + 2
    height = rows * ROW_H + 20
    out = _grid(axis, height)
    for i, e in enumerate(exps):
        y = i * ROW_H + 2
        label = f"{e.id} {e.name}"[:34]
        out.append(f'<text x="4" y="{y + 12}" font-size="12">{escape(label)}</text>')
        moves = events.get(e.id, [])
        for (ts, stage), nxt in zip(moves, [*moves[1:], (None, None)]):
            end = nxt[0] if nxt[0] is not None else (ts if stage in TERMINAL else now)
            tip = f"{e.id} {e.name}: {stage} {_clock(ts)}-{_clock(end)}"
            out.append(_rect(axis.x(ts), axis.x(end), y, ROW_H - 5, COLORS.get(stage, "#ccc"), tip))
    y = len(exps) * ROW_H + 2
    out.append(f'<text x="4" y="{y + 12}" font-size="12">submission windows</text>')
    posted = sorted(s["posted_at"] or s["created_at"] for s in subs)
    if interval_s > 0:
        t = axis.start
        while t < axis.end:
            used = any(t <= p < t + interval_s for p in posted)
            tip = f"window {_clock(t)}: {'a submission' if used else 'unused'}"
            color = "#2ca02c" if used else "#eeeeee"
            out.append(_rect(axis.x(t) + 1, axis.x(t + interval_s) - 1, y, ROW_H - 5, color, tip))
            t += interval_s
    for e in exps:
        for ts, stage in events.get(e.id, []):
            if stage == "skipped":
                x = axis.x(ts)
                out.append(
                    f'<path d="M{x - 4:.1f},{y + 14} L{x + 4:.1f},{y + 14} L{x:.1f},{y + 6} Z" fill="red">'
                    f"<title>{escape(f'{e.id} {e.name} skipped at {_clock(ts)}')}</title></path>"
                )
    y += ROW_H
    out.append(f'<text x="4" y="{y + 12}" font-size="12">gaps (VPN, login, asleep)</text>')
    for g in night_gaps:
        end = g["to"] if g["to"] is not None else now
        tip = f"{g['kind']} {_clock(g['from'])}-{_clock(end)}: {g['detail']}"
        out.append(
            _rect(axis.x(g["from"]), axis.x(end), y, ROW_H - 5, GAP_COLORS.get(g["kind"], "#000"), tip)
        )
    width = LABEL_W + CHART_W + 10
    return Markup(f'<svg width="{width}" height="{height}" role="img">{"".join(out)}</svg>')


def live_score(graded: list[dict], axis: Axis, now: float) -> Markup:
    """The live submission's score over time: a step from each graded submission to the next."""
    if not graded:
        return Markup('<p class="muted">No graded submission yet.</p>')
    height, top, bottom = 200, 10, 170
    lo = min(g["score"] for g in graded)
    hi = max(g["score"] for g in graded)
    lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))

    def y(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    out = _grid(axis, height)
    for v in (lo + (hi - lo) * k / 4 for k in range(5)):
        out.append(
            f'<text x="{LABEL_W - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{v:.2f}</text>'
        )
    points = []
    for g, nxt in zip(graded, [*graded[1:], None]):
        x0, x1 = axis.x(g["at"]), axis.x(nxt["at"] if nxt else now)
        points += [f"{x0:.1f},{y(g['score']):.1f}", f"{x1:.1f},{y(g['score']):.1f}"]
        tip = (
            f"attempt #{g['attempt']}: {g['exp_id']} {g['name']} scored {g['score']:.3f} at {_clock(g['at'])}"
        )
        out.append(
            f'<circle cx="{x0:.1f}" cy="{y(g["score"]):.1f}" r="4" fill="#1f77b4">'
            f"<title>{escape(tip)} at {_clock(g['at'])}</title></circle>"
        )
    out.insert(0, f'<polyline points="{" ".join(points)}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    width = LABEL_W + CHART_W + 10
    return Markup(f'<svg width="{width}" height="{height}" role="img">{"".join(out)}</svg>')


def graded_submissions(store: Store) -> list[dict]:
    sql = (
        "select s.attempt, s.exp_id, s.score, coalesce(s.updated_at, s.posted_at, s.created_at) at, e.name"
        " from submissions s join experiments e on e.id = s.exp_id"
        " where s.state = 'successful' and s.score is not null order by at"
    )
    return list(store.query(sql))


def write_night_report(store: Store, settings, out: Path, now: float | None = None) -> Path:
    """The page at ``out`` (a folder: ``out/index.html``; or a ``.html`` file), each report linked."""
    from kdq.course.scoring import expected_all

    now = datetime.now().timestamp() if now is None else now
    page = out if out.suffix == ".html" else out / "index.html"
    exps, events = store.list(), stage_events(store)
    subs = list(store.query("select * from submissions order by id"))
    night_gaps, graded = gaps.read(store), graded_submissions(store)
    stamps = [ts for moves in events.values() for ts, _ in moves] + [g["from"] for g in night_gaps]
    axis = Axis(min(stamps, default=now - 3600), max(now, *stamps) if stamps else now)
    n = Night.read(store, settings, now)
    expected = expected_all(store, settings, exps)
    links = _experiment_reports(store, settings, exps, page.parent, expected)
    rows = [
        {
            "e": e,
            "cost": n.costs[e.id],
            "expected": expected[e.id].short() if e.id in expected else "",
            "link": links.get(e.id),
        }
        for e in exps
    ]
    html = report.render(
        "night.html",
        title=f"The night of {datetime.fromtimestamp(axis.start):%Y-%m-%d} ({settings.root})",
        span=f"{_clock(axis.start)} to {_clock(axis.end)}",
        counts=store.count_by_stage(),
        night=n,
        night_line="; ".join(n.parts()),
        rows=rows,
        best=max(graded, key=lambda g: g["score"], default=None),
        live=graded[-1] if graded else None,
        gantt=gantt(exps, events, subs, night_gaps, axis, settings.submit_interval_s, now),
        score=live_score(graded, axis, now),
        gaps=night_gaps,
        used=sum(1 for s in subs if s["posted_at"]),
        skipped=sum(1 for moves in events.values() for _, st in moves if st == "skipped"),
        colors=COLORS,
        gap_colors=GAP_COLORS,
    )
    return report.write_page(page.parent, html, page.name)


def _experiment_reports(store: Store, settings, exps, here: Path, expected) -> dict[int, str]:
    """Each experiment with results gets its report (``$KDQ_HOME/reports/<id>``), linked from ``here``."""
    from kdq.course.scoring import calibration_points

    links, points = {}, calibration_points(store, settings)
    for e in exps:
        if e.val_f1 is None:
            continue
        folder = settings.root / "reports" / str(e.id)
        subs, events = report.submissions_for(store, e.id), store.events(e.id)
        x = expected[e.id].as_json() if e.id in expected else None
        path = report.write_experiment_report(e, folder, subs, settings, events, x, points)
        links[e.id] = os.path.relpath(path, here)
    return links
