"""How the CLI draws the status view (tables of dicts, one experiment, the leaderboard: kdq/cli/tables.py).

On a terminal: rich tables that fit its width (the name column takes what is left, idle columns are
dropped, long errors go under the table). Anywhere else (a pipe, a file): full-width tab-separated
rows with a header line, like ``gh``, so ``grep`` and ``cut`` see every value whole.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rich.console import RenderableType

    from kdq.experiment import Experiment
    from kdq.store import Store

STAGE_STYLE = {
    "done": "green",
    "failed": "red",
    "cancelled": "dim",
    "skipped": "dim",
    "pruned": "dim",
    "ready": "cyan",
    "training": "yellow",
    "submitting": "magenta",
    "evaluating": "magenta",
}
PHASES = {"data": "data", "teacher": "teacher", "export": "export", "done": "done"}  # in the epoch column
QUEUED_SHOWN = 10
RECENT_SHOWN = 10
E = TypeVar("E")  # an Experiment, or its Outline


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return ""
    s = max(0.0, (time.time() if now is None else now) - ts)
    return f"{s:.0f}s" if s < 90 else f"{s / 60:.0f}m" if s < 5400 else f"{s / 3600:.1f}h"


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def progress(exp: Experiment) -> str:
    """``31/60`` while training; the phase (data, teacher cache, export) around it."""
    p = exp.progress or {}
    phase = p.get("phase")
    if phase in PHASES and not (phase == "done" and "epoch" in p):
        return PHASES[phase]
    return f"{p['epoch']}/{p.get('epochs', '?')}" if "epoch" in p else ""


def tsv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Tab-separated lines, header first; tabs and newlines inside values become spaces."""

    def cell(v: Any) -> str:
        return "" if v is None else " ".join(str(v).split())

    return "\n".join("\t".join(cell(v) for v in row) for row in [columns, *rows])


def plain(markup_line: str) -> str:
    from rich.text import Text

    return Text.from_markup(markup_line).plain


# ---------------------------------------------------------------- status


def status_header(store: Store, settings, interval_s: float | None = None, night=None) -> list[str]:
    """The lines above the table (rich markup): the worker, the counts, the course server, the night's
    end and cost (``night``: kdq.night.Night)."""
    from rich.markup import escape

    from kdq.course.status import header_lines
    from kdq.homelock import heartbeat_age, silent_worker
    from kdq.stages import Stage

    age = heartbeat_age(store)
    silent = None if settings.worker_alive(age) else silent_worker(store)  # SIGSTOP, hung
    lines = [
        f"home: {_home(settings.root)}",
        "worker: [green]alive[/green]"
        if settings.worker_alive(age)
        else f"worker: [red]{escape(silent)}[/red]"
        if silent
        else "worker: [red]not running[/red] — start it with `kdq worker`",
    ]
    from kdq.awake import slept_line

    if slept := slept_line(store):  # a gap in the worker's own heartbeat: the machine slept
        lines.append(f"[yellow]{slept}[/yellow]")
    from kdq import pause

    lines += [f"[red]{escape(line)}[/red]" for line in pause.lines(store)]
    counts = store.count_by_stage()
    if counts:
        lines.append("  ".join(f"{stage} {counts[stage]}" for stage in Stage if stage in counts))
    from kdq.course.scoring import header_lines as score_lines

    lines += header_lines(store, interval_s=interval_s)
    lines += [night.line()] if night is not None else []
    return lines + score_lines(store, settings, time.time())


def _home(root) -> str:
    """The home a command shows, ``~`` for the user's own folder: a shell left on another home is seen."""
    from pathlib import Path

    mine = Path.home()
    return f"~/{root.relative_to(mine)}" if root.is_relative_to(mine) else str(root)


def glance(store: Store, show_all: bool) -> tuple[list[Experiment], int, int]:
    """``pick`` over every experiment's outline, then only the rows it shows are read whole."""
    if show_all:
        return store.list(order="id"), 0, 0
    shown, hidden_queued, hidden_older = pick(store.outlines(), show_all)
    return store.list(ids=[e.id for e in shown]), hidden_queued, hidden_older


def pick(exps: Sequence[E], show_all: bool) -> tuple[list[E], int, int]:
    """What the status table shows, and how many queued and how many older finished ones it leaves out.

    At a glance: everything in flight, the live submission, the next few queued, the last few finished.
    ``exps``: experiments, or their outlines (``kdq.experiment.Outline``: the fields this reads).
    """
    from kdq.stages import LIVE, Stage

    if show_all:
        return exps, 0, 0
    queued = sorted((e for e in exps if e.stage is Stage.QUEUED), key=lambda e: (-e.priority, e.id))
    active = [e for e in exps if e.stage in LIVE and e.stage is not Stage.QUEUED]
    finished = sorted((e for e in exps if e.stage not in LIVE), key=lambda e: (e.updated_at or 0, e.id))
    recent = finished[-RECENT_SHOWN:]
    live_submission = max((e for e in exps if e.server_attempt), key=lambda e: e.server_attempt, default=None)
    if live_submission is not None and live_submission.id not in {e.id for e in recent + active}:
        recent.append(live_submission)
    shown = sorted({e.id: e for e in active + queued[:QUEUED_SHOWN] + recent}.values(), key=lambda e: e.id)
    done_ids = {e.id for e in finished}  # ids, not dataclass equality: 1,000 rows compare in no time
    return shown, max(0, len(queued) - QUEUED_SHOWN), len(finished) - sum(e.id in done_ids for e in recent)


def _status_columns(exps: list[Experiment], expected: dict | None = None) -> list[str]:
    cols = ["id", "name", "stage"]
    if len({e.backend for e in exps}) > 1:
        cols.append("backend")
    cols += ["epoch", "val F1"]
    if expected:
        cols.append("expected")
    if any(e.teacher_f1 is not None for e in exps):
        cols.append("teacher F1")
    if any(e.server_score is not None or e.server_rank is not None for e in exps):
        cols.append("server")
    return [*cols, "updated"]


def _status_cells(
    e: Experiment, now: float, expected: dict | None = None, full: bool = False, night=None
) -> dict[str, str]:
    """One row's cells; ``full``: the expected score with its whole interval (piped rows); ``night``:
    a training's epoch cell with its elapsed and remaining time (``3/10 4m+9m``, ``teacher 3,200/10,000``)."""
    x = (expected or {}).get(e.id)
    eta = night.etas.get(e.id) if night is not None else None
    return {
        "expected": "" if x is None else (x.text() if full else x.short()),
        "id": str(e.id),
        "name": e.name,
        "stage": str(e.stage),
        "backend": e.backend or "",
        "epoch": eta.cell() if eta is not None else progress(e),
        "val F1": num(e.val_f1 if e.val_f1 is not None else (e.progress or {}).get("best_f1")),
        "teacher F1": num(e.teacher_f1),
        "server": " ".join(filter(None, [num(e.server_score), e.server_rank and f"#{e.server_rank}"])),
        "score": num(e.server_score),
        "rank": num(e.server_rank),
        "updated": ago(e.updated_at, now),
    }


def experiments_table(
    exps: list[Experiment], expected: dict | None = None, night=None, width: int | None = None
):
    """The rich table, one line per experiment within ``width`` (default: the terminal's): names shorten
    to the part that differs and optional columns go first (kdq/cli/fit.py)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from kdq.cli import fit
    from kdq.cli.common import console

    now = time.time()
    rows = [_status_cells(e, now, expected, night=night) for e in exps]
    labels = {c: "teacher" if c == "teacher F1" else c for c in _status_columns(exps, expected)}
    widths = {c: max(len(labels[c]), *(len(r[c]) for r in rows)) for c in labels}
    longest = max(
        (len(fit.split(r["name"])[0] + fit.compact(fit.split(r["name"])[1])) for r in rows), default=4
    )
    cols, name_w = fit.columns(list(labels), widths, longest, width or console().width)
    for r in rows:
        r["name"] = fit.short_name(r["name"], name_w)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for col in cols:
        table.add_column(
            labels[col],
            justify="right" if col in ("id", "val F1", "teacher F1", "server") else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=min(name_w, max(4, *(len(r["name"]) for r in rows))) if col == "name" and rows else None,
        )
    for r in rows:
        table.add_row(*(Text(r[c], style=STAGE_STYLE.get(r[c], "") if c == "stage" else "") for c in cols))
    return table


def scratch_notes(exps: list[Experiment]) -> list[str]:
    """A run that asked for pretrained weights and trained from scratch is another experiment: say so."""
    return [
        f"{e.id} trained from scratch: its pretrained weights did not load (see its log.txt)"
        for e in exps
        if e.from_scratch
    ]


def _notes(exps: list[Experiment], hidden_queued: int, hidden_older: int, hidden_live: int = 0) -> list[str]:
    from kdq.stages import Stage

    notes = [
        f"{e.id} failed: {e.error.strip().splitlines()[0]}"
        for e in exps
        if e.stage is Stage.FAILED and e.error
    ]
    notes += scratch_notes(exps)
    if hidden_queued:
        notes.append(f"… {hidden_queued} more queued (kdq status --all)")
    if hidden_live:
        notes.append(f"… {hidden_live} more in flight, the oldest (kdq status --all)")
    if hidden_older:
        notes.append(f"… {hidden_older} older (kdq status --all)")
    return notes


def status_view(
    store: Store, s, show_all: bool = False, height: int | None = None, interval_s: float | None = None
) -> RenderableType:
    """Header, table, notes; with ``height`` (``--watch``) only as many rows as fit, newest kept.
    ``s``: the settings, read once by the command (pydantic-settings reads the environment and .env)."""
    from rich.console import Group
    from rich.text import Text

    from kdq.course.scoring import expected_all
    from kdq.night import Night

    shown, hidden_queued, hidden_older = glance(store, show_all)
    night = Night.read(store, s)
    header = status_header(store, s, interval_s, night)
    notes = _notes(shown, hidden_queued, hidden_older)
    if height is not None:
        from kdq.cli import fit

        live = max((e for e in shown if e.server_attempt), key=lambda e: e.server_attempt, default=None)
        every = shown
        for room in range(height - len(header) - len(notes) - 4, 0, -1):  # the notes grow as rows hide
            shown, cut = fit.keep_rows(every, room, live and live.id)
            notes = _notes(
                shown, hidden_queued + cut["queued"], hidden_older + cut["older"], cut["in flight"]
            )
            if len(header) + len(notes) + len(shown) + 4 <= height:
                break
    parts: list[Any] = [*(Text.from_markup(h) for h in header)]
    if shown:
        parts.append(experiments_table(shown, expected_all(store, s, shown), night))
    parts += [Text(n, style="red" if " failed: " in n else "dim") for n in notes]
    return Group(*parts)


def status_plain(store: Store, s, show_all: bool = False, interval_s: float | None = None) -> str:
    """The same, for pipes: the header lines, then every shown row tab-separated, full width."""
    from kdq.course.scoring import expected_all
    from kdq.night import Night

    shown, hidden_queued, hidden_older = glance(store, show_all)
    now = time.time()
    night = Night.read(store, s, now)
    cols = ["id", "name", "stage", "backend", "epoch", "val F1", "expected", "teacher F1", "score", "rank"]
    cols.append("updated")
    expected = expected_all(store, s, shown)
    rows = [
        [*(_status_cells(e, now, expected, full=True, night=night)[c] for c in cols), e.error or ""]
        for e in shown
    ]
    lines = [plain(h) for h in status_header(store, s, interval_s, night)]
    lines.append(tsv([c.replace(" ", "_") for c in cols] + ["error"], rows))
    lines += [*scratch_notes(shown), *_notes([], hidden_queued, hidden_older)]
    return "\n".join(lines)
