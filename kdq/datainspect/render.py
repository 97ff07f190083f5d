"""Write the inspection report folder: index.html, findings.json, figures and contact sheets."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kdq import plots
from kdq.datainspect import overlay
from kdq.datainspect.findings import Findings, sample_evenly
from kdq.datainspect.scan import ImageInfo
from kdq.datainspect.sheets import contact_sheet
from kdq.report import render, write_page

PER_CLASS_SHEET = 48
FLAGGED_SHEET = 64

PAGE = """{% extends "base.html" %}{% block body %}
<p>Folder <code>{{ f.root }}</code> · {{ s.images }} readable images in {{ f.classes|length }} classes
({{ s.files }} image files) · read in {{ f.seconds|num(1) }} s ({{ f.images_per_s|num(1) }} images/s)</p>
<table>
<tr><th>imbalance ratio (largest / smallest class)</th><td class="num">{{ f.imbalance_ratio|num(2) }}</td></tr>
<tr><th>unreadable or truncated files</th><td class="num {{ 'warn' if s.problems }}">{{ s.problems }}</td></tr>
<tr><th>groups of exact duplicates</th><td class="num">{{ s.exact_groups }}</td></tr>
<tr><th>groups of near-duplicates</th><td class="num">{{ s.near_groups }}</td></tr>
<tr><th>pictures filed under two or more classes (label conflicts)</th><td class="num {{ 'warn' if s.cross_class_groups }}">{{ s.cross_class_groups }}</td></tr>
<tr><th>images likely to carry an overlay</th><td class="num">{{ s.overlays }}</td></tr>
</table>

<h2>Classes</h2>
<img src="class_counts.png" alt="images per class">
<table><tr><th>#</th><th>class (grader order)</th><th>images</th><th>class weight</th></tr>
{% for c in f.classes %}<tr><td class="num">{{ loop.index0 }}</td><td>{{ c }}</td><td class="num">{{ f.counts[c] }}</td><td class="num">{{ f.class_weights[c]|num(3) }}</td></tr>{% endfor %}
</table>
<p class="muted">Class weights: inverse frequency with mean 1, the function the trainer uses
(<code>kdq.train.data.class_weights</code>), here over every readable image (the trainer counts its training split).</p>

<h2>Image sizes, formats, colour modes</h2>
<img src="sizes.png" alt="image sizes">
<table><tr><th></th><th>min</th><th>median</th><th>max</th></tr>
{% for k, v in f.size_summary.items() %}<tr><th>{{ k }}</th><td class="num">{{ v.min|num(2) }}</td><td class="num">{{ v.median|num(2) }}</td><td class="num">{{ v.max|num(2) }}</td></tr>{% endfor %}
</table>
<table><tr><th>format</th><th>images</th></tr>{% for k, v in f.formats.items() %}<tr><td>{{ k }}</td><td class="num">{{ v }}</td></tr>{% endfor %}</table>
<table><tr><th>colour mode</th><th>images</th></tr>{% for k, v in f.modes.items() %}<tr><td>{{ k }}</td><td class="num">{{ v }}</td></tr>{% endfor %}</table>
<table><tr><th>extension</th><th>files</th></tr>{% for k, v in f.extensions.items() %}<tr><td>{{ k }}</td><td class="num">{{ v }}</td></tr>{% endfor %}</table>
{% if f.format_mismatch %}<p>Files whose extension does not match their content:</p>
<table><tr><th>file</th><th>extension</th><th>content</th></tr>{% for m in f.format_mismatch %}<tr><td>{{ m.file }}</td><td>{{ m.extension }}</td><td>{{ m.format }}</td></tr>{% endfor %}</table>{% endif %}

<h2>Unreadable or truncated files</h2>
{% if f.problems %}<p>The trainer skips these (and warns); fix or delete them.</p>
<table><tr><th>file</th><th>class</th><th>problem</th></tr>
{% for p in f.problems %}<tr><td>{{ p.file }}</td><td>{{ p.class }}</td><td class="warn">{{ p.problem }}</td></tr>{% endfor %}</table>
{% else %}<p>None.</p>{% endif %}

<h2>Duplicates</h2>
<p>Exact: the same bytes (SHA-1). Near: perceptual hashes (ImageHash pHash, 64 bits) within {{ near_bits }} bits and
16×16 colour thumbnails within {{ near_colour }} grey levels (mean absolute difference), the same two-key test
the trainer's split uses to keep copies on one side (it hashes with its own 256-bit average hash). <b>A group spanning classes is a label conflict</b>: the same picture carries two labels.</p>
{% if f.duplicate_groups %}<table><tr><th>#</th><th>kind</th><th>classes</th><th>files</th></tr>
{% for g in f.duplicate_groups %}<tr><td class="num">{{ loop.index }}</td><td>{{ g.kind }}</td>
<td class="{{ 'warn' if g.cross_class }}">{{ g.members|map(attribute='class')|unique|join(' / ') }}</td>
<td>{% for m in g.members %}{{ m.file }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>{% endfor %}
</table>{% else %}<p>None.</p>{% endif %}

<h2>Overlays (text, watermarks, axes, frames)</h2>
<pre>{{ explanation }}</pre>
{% if f.overlays %}<table><tr><th>file</th><th>class</th><th>flags</th><th>lines</th><th>uniform sides</th><th>text density</th></tr>
{% for o in f.overlays %}<tr><td>{{ o.file }}</td><td>{{ o.class }}</td><td>{{ o.kinds|join(', ') }}</td>
<td class="num">{{ o.signals.lines }}</td><td class="num">{{ o.signals.border_sides }}</td><td class="num">{{ o.signals.text }}</td></tr>{% endfor %}
</table>{% else %}<p>None flagged.</p>{% endif %}

<h2>Flagged images</h2>
{% if flagged %}<p>Label conflicts first, then overlays, then other duplicates (at most {{ flagged_max }}).</p>
<img src="{{ flagged }}" alt="flagged images">{% else %}<p>Nothing flagged.</p>{% endif %}

<h2>Contact sheets</h2>
{% for c, sheet in sheets %}<h3>{{ c }}</h3><img src="{{ sheet }}" alt="{{ c }}">{% endfor %}
{% endblock %}"""


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
        PAGE,
        title=f"Dataset inspection: {f.root}",
        f=f,
        s=f.counts_summary(),
        sheets=sheets,
        flagged=flagged,
        flagged_max=FLAGGED_SHEET,
        explanation=overlay.explanation(),
        near_bits=NEAR_BITS,
        near_colour=NEAR_COLOUR,
    )
    return write_page(out_dir, html)
