"""A training's log, wherever it runs: the local run folder, or the Modal Volume's copy (``kdq logs``).

    read = reader(exp, settings)        # () -> the whole log.txt so far, or None when there is none yet
    tail(text, 50)                      # its last 50 lines
    follow(read, running, write)        # print what is new until the training ends (like `modal app logs -f`)

A Modal run's log.txt is on the Volume; the training commits it as it goes, so a followed Modal log
arrives in steps of the Volume's commits rather than line by line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kdq import runfolder

if TYPE_CHECKING:
    from kdq.experiment import Experiment

POLL_S = 1.0


def reader(exp: Experiment, settings) -> Callable[[], str | None]:
    """The log of ``exp``'s current run, read whole at each call."""
    run_id = exp.run_id
    if exp.backend == "modal":
        from kdq.backends.modal import ModalBackend
        from kdq.backends.modal_errors import guarded
        from kdq.backends.modal_gateway import run_path

        gateway = ModalBackend(settings).gateway

        def read_modal() -> str | None:
            with guarded(live_run=True):
                raw = gateway.read_file(f"{run_path(run_id)}/{runfolder.LOG}")
            return None if raw is None else raw.decode(errors="replace")

        return read_modal
    path = Path((exp.handle or {}).get("run_dir") or settings.runs_dir / run_id) / runfolder.LOG

    def read_local() -> str | None:
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return None

    return read_local


def tail(text: str, lines: int | None) -> str:
    if lines is None:
        return text
    kept = text.splitlines(keepends=True)[-lines:] if lines > 0 else []
    return "".join(kept)


def follow(
    read: Callable[[], str | None],
    running: Callable[[], bool],
    write: Callable[[str], None],
    shown: str = "",
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write what ``read`` returns beyond ``shown`` until ``running()`` is false, then the rest once more.
    A log that got shorter (a new attempt started over) is written again from its start."""
    while True:
        still = running()
        text = read() or ""
        if not text.startswith(shown):
            shown = ""
        if len(text) > len(shown):
            write(text[len(shown) :])
            shown = text
        if not still:
            return
        sleep(poll_s)
