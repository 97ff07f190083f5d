"""Write the inspection report folder: index.html, findings.json, figures and contact sheets."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kdq import plots
from kdq.datainspect.findings import Findings, sample_evenly
from kdq.datainspect.overlay import explanation
from kdq.datainspect.scan import ImageInfo
from kdq.datainspect.sheets import contact_sheet
from kdq.report import render, write_page

PER_CLASS_SHEET = 48
FLAGGED_SHEET = 64


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "class"


def _flagged_tiles(f: Findings, by_file: dict[str, ImageInfo]) -> list[tuple[bytes, str]]:
    tiles, seen = [], set()

    def add(file: str, caption: str) -> None:
        if file not in seen and file in by_file and by_file[file].thumb:
            seen.add(file)
            tiles.append((by_file[file].thumb, caption))

    for n, g in enumerate(f.duplicate_groups, 1):
        if g["cross_class"]:
            for m in g["members"]:
                add(m["file"], f"conflict {n}: {m['class']}")
    for o in f.overlays:
        add(o["file"], "+".join(o["kinds"]) + ": " + o["class"])
    for n, g in enumerate(f.duplicate_groups, 1):
        for m in g["members"]:
            add(m["file"], f"{g['kind']} dup {n}")
    return tiles[:FLAGGED_SHEET]


def write_report(f: Findings, infos: list[ImageInfo], out_dir: Path) -> Path:
    """Write everything under ``out_dir``; returns the path of index.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots.class_counts(f.counts, f.class_weights, out_dir / "class_counts.png")
    plots.image_sizes(f.widths, f.heights, out_dir / "sizes.png")
    by_file = {i.file: i for i in infos if i.ok}
    sheets = []
    for label, cls in enumerate(f.classes):
        members = [i for i in infos if i.ok and i.label == label]
        if not members:
            continue
        tiles = [(i.thumb, Path(i.file).name) for i in sample_evenly(members, PER_CLASS_SHEET)]
        name = f"sheets/{label:02d}-{_slug(cls)}.png"
        contact_sheet(tiles, out_dir / name)
        sheets.append((cls, name))
    flagged = None
    if tiles := _flagged_tiles(f, by_file):
        contact_sheet(tiles, out_dir / "flagged.png")
        flagged = "flagged.png"
    (out_dir / "findings.json").write_text(json.dumps(f.to_dict(), indent=1))
    from kdq.datainspect.findings import NEAR_BITS, NEAR_COLOUR

    html = render(
        "inspect.html",
        title=f"Dataset inspection: {f.root}",
        f=f,
        s=f.counts_summary(),
        sheets=sheets,
        flagged=flagged,
        flagged_max=FLAGGED_SHEET,
        explanation=explanation(),
        near_bits=NEAR_BITS,
        near_colour=NEAR_COLOUR,
    )
    return write_page(out_dir, html)
