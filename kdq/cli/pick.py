"""Which experiments a bulk command (``cancel``, ``retry``, ``submit``) means: ids, ranges such as
``1-6``, and every experiment in a stage (``--failed`` is ``--stage failed``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kdq.cli.common import USAGE, fail, get_or_exit

if TYPE_CHECKING:
    from kdq.experiment import Experiment
    from kdq.store import Store

IDS = Annotated[
    list[str] | None,
    typer.Argument(metavar="ID...", help="Experiment ids or ranges: 7, 1-6.", show_default=False),
]
STAGES = Annotated[
    list[str] | None,
    typer.Option(
        "--stage", metavar="STAGE", help="Every experiment in this stage (repeatable).", show_default=False
    ),
]
FAILED = Annotated[bool, typer.Option("--failed", help="Every failed experiment (--stage failed).")]


def parse_ids(words: list[str]) -> list[int]:
    """``["7", "1-3"]`` → ``[7, 1, 2, 3]``: in the order given, each id once; a usage error names the bad
    word."""
    ids: list[int] = []
    for word in words:
        first, _, last = word.partition("-")
        if not (first.isdigit() and (not last or last.isdigit())) or (last and int(last) < int(first)):
            raise fail(f"{word!r} is not an experiment id or a range such as 1-6", USAGE)
        ids += range(int(first), int(last or first) + 1)
    return list(dict.fromkeys(ids))


def pick(
    store: Store, words: list[str] | None, stages: list[str] | None, failed: bool = False
) -> list[Experiment]:
    """The experiments named by ids and ranges (each must exist), then those in ``stages``, by id."""
    from kdq.stages import Stage

    stages = [*(stages or []), *(["failed"] if failed else [])]
    known = ", ".join(str(s) for s in Stage)
    if bad := [s for s in stages if s not in {str(x) for x in Stage}]:
        raise fail(f"--stage {bad[0]}: no such stage; the stages are {known}", USAGE)
    if not words and not stages:
        raise fail("name experiments: ids or ranges (7, 1-6), --failed or --stage STAGE", USAGE)
    chosen = [get_or_exit(store, i) for i in parse_ids(words or [])]
    seen = {e.id for e in chosen}
    if stages:
        chosen += [e for e in store.list({Stage(s) for s in stages}) if e.id not in seen]
    return chosen
