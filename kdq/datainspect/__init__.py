"""``kdq data inspect``: look at a dataset before training on it.

    findings, infos = inspect_dataset(path, workers=None)   # read every image once
    write_report(findings, infos, out_dir)                  # index.html, findings.json, PNGs

Modules, in reading order: ``scan`` (one pass over the files: header facts, hashes, overlay
signals, thumbnails), ``overlay`` (the overlay heuristic, explained), ``findings`` (counts,
imbalance, class weights, duplicates, problems: pure), ``sheets`` (contact sheets), ``render``
(the report folder).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from kdq.datainspect.findings import Findings, summarize
from kdq.datainspect.render import write_report
from kdq.datainspect.scan import ImageInfo, scan_files
from kdq.train.layout import discover


def inspect_dataset(
    path: Path, workers: int | None = None, progress: Callable[[int, int], None] | None = None
) -> tuple[Findings, list[ImageInfo]]:
    """Find the class folders like the trainer does, read every image once, summarize.

    ``progress(done, total)`` is called as files are read.
    """
    started = time.perf_counter()
    ds = discover(Path(path))
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, len(ds.files))

    infos = scan_files(ds.root, [(str(f), y) for f, y in zip(ds.files, ds.labels)], workers, progress=step)
    return summarize(str(ds.root), ds.classes, infos, time.perf_counter() - started), infos


__all__ = ["Findings", "ImageInfo", "inspect_dataset", "write_report"]
