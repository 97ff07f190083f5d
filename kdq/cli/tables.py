"""The CLI's other tables: rows of dicts (results, leaderboard, server status), one experiment.

On a terminal a rich table that fits its width; anywhere else tab-separated rows (``views.tsv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kdq.cli.fit import GAP
from kdq.cli.views import num, tsv

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from kdq.experiment import Experiment


# ---------------------------------------------------------------- tables of dicts (results, leaderboard)


def dict_table(columns: Sequence[str], rows: Sequence[dict], left: Sequence[str] = ("name", "stage", "team")):
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for col in columns:
        table.add_column(
            col,
            justify="left" if col in left else "right",
            no_wrap=col not in ("name", "team"),
            overflow="fold" if col in ("name", "team") else "ellipsis",
        )
    for r in rows:
        table.add_row(*(Text(num(r.get(c))) for c in columns), style=r.get("_style"))
    return table


def print_rows(
    console: Console,
    columns: Sequence[str],
    rows: Sequence[dict],
    optional: Sequence[str] = (),
    labels: dict[str, str] | None = None,
) -> None:
    """A table on a terminal (columns with no value in any row left out, then the ``optional`` ones, in
    order, until it fits the width; headers from ``labels``), tab-separated full values anywhere else
    (every column under its own name, so scripts see the same ones each time)."""
    if not console.is_terminal:
        print(tsv(columns, [[r.get(c) for c in columns] for r in rows]))
        return
    labels = labels or {}
    used = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)] or list(columns)

    def width(c: str) -> int:  # the column's text, its padding and separator (fit.GAP); a name folds past 30
        w = max(len(labels.get(c, c)), *(len(num(r.get(c))) for r in rows))
        return GAP + (min(w, 30) if c in ("name", "team") else w)

    for c in optional:
        if sum(map(width, used)) - 1 <= console.width:
            break
        if c in used:
            used.remove(c)
    shown = [{labels.get(c, c): r.get(c) for c in used} | {"_style": r.get("_style")} for r in rows]
    console.print(dict_table([labels.get(c, c) for c in used], shown))


# ---------------------------------------------------------------- one experiment


def show_view(exp: Experiment, data: dict, events: list[dict], expected=None) -> list[RenderableType]:
    """``kdq show``'s parts; ``expected``: the experiment's ``Expected`` score (kdq.course.scoring), written
    from its own values, as status writes it (not from the JSON's, rounded to 4 places)."""
    from datetime import datetime

    from rich.table import Table
    from rich.text import Text

    from kdq.course import scoring

    parts: list[Any] = [
        Text(
            f"{exp.id}: {exp.name}  {exp.stage}  ({exp.backend}, attempt {exp.attempt}, run {exp.run_id})",
            style="bold",
        )
    ]
    if exp.error:
        parts.append(Text(f"error: {exp.error}", style="red"))
    if exp.from_scratch:
        parts.append(
            Text("trained from scratch: student.pretrained = true, but the weights did not load", style="red")
        )
    spec = Table(title="spec", show_header=False, title_justify="left")
    for section, values in data["spec"].items():
        if isinstance(values, dict):
            spec.add_row(section, Text(", ".join(f"{k}={v}" for k, v in values.items())))
        else:
            spec.add_row(section, Text(str(values)))
    parts.append(spec)
    if exp.metrics:
        m = Table(title="metrics", show_header=False, title_justify="left")
        for k in (
            "val_f1",
            "holdout_f1",
            "holdout_f1_ci",
            "grader_f1",
            "grader_scored",
            "val_acc",
            "teacher_probe_f1",
            "model_mb",
            "best_epoch",
            "torch_version",
        ):
            if k in exp.metrics:
                value = exp.metrics[k]
                if k == "holdout_f1_ci" and value:  # a 90% bootstrap interval: [lo, hi]
                    value = "[{:.4f}, {:.4f}]".format(*value)
                m.add_row(k, num(value, 4))
        parts.append(m)
        if not scoring.scored(exp.metrics):
            parts.append(
                Text(
                    "the file was never scored on the holdout pictures as the grader scores them "
                    f"(they were not here, nor scored in the run): if_better waits for `kdq submit {exp.id}`",
                    style="yellow",
                )
            )
    if x := expected:
        band = "" if x.low == x.high else f" [{x.low:.3f}, {x.high:.3f}]"
        source = "" if x.holdout else " (no holdout: from val_f1)"
        parts.append(
            Text(
                f"expected score {x.score:.3f}{band} = 10 x {x.f1:.4f} (expected server F1)"
                f" - {x.size_term:.3f} (size factor){source}"
            )
        )
    tl = Table(title="timeline", title_justify="left")
    for col in ("time", "event", "message"):
        tl.add_column(col)
    for ev in events:
        tl.add_row(
            datetime.fromtimestamp(ev["ts"]).strftime("%m-%d %H:%M:%S"), ev["kind"], Text(ev["message"] or "")
        )
    parts.append(tl)
    if exp.artifacts:
        parts.append(Text(f"artifacts: {exp.artifacts}"))
    return parts


# ---------------------------------------------------------------- the leaderboard


def leaderboard_rows(board, team: str | None, top: int = 20) -> list[dict]:
    """The first ``top`` rows of a Leaderboard, and ours wherever it is (marked with ``_style``)."""
    ours = board.find(team)
    return [
        {
            "rank": r.rank,
            "team": r.team,
            "score": r.score,
            "F1": r.f1,
            "size MB": r.size_mb,
            "_style": "bold cyan" if r is ours else None,
        }
        for i, r in enumerate(board.rows)
        if i < top or r is ours
    ]


LEADERBOARD_COLUMNS = ("rank", "team", "score", "F1", "size MB")


def leaderboard_table(board, team: str | None, top: int = 20):
    return dict_table(LEADERBOARD_COLUMNS, leaderboard_rows(board, team, top))
