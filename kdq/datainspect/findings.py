"""From per-image facts to the dataset's findings. Pure: no files are read here.

Duplicates: identical bytes (SHA-1), or near pictures: ImageHash perceptual hashes within a few
bits *and* 16x16 colour thumbnails within a few grey levels (the same two-key test the trainer's
split uses, ``kdq.dedup``, with ImageHash's pHash for the hash). Class discovery and
class weights are the trainer's own functions.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import PurePath

import numpy as np

from kdq import dedup
from kdq.datainspect.scan import ImageInfo, colour_thumbs, phash_bits
from kdq.train import data

NEAR_BITS = (
    6  # of 64 phash bits; a resized + recompressed copy measured 0-4, distinct pictures 4+ with other colours
)
NEAR_COLOUR = (
    6.0  # grey levels; planted near-duplicates measured under 2, distinct pictures with close hashes over 9
)


@dataclass
class Findings:
    root: str
    classes: list[str]
    counts: dict[str, int]  # readable images per class
    files: int  # image files found (readable or not)
    imbalance_ratio: float  # largest class / smallest class
    class_weights: dict[str, float]  # what the trainer would weigh cross-entropy with
    formats: dict[str, int]
    modes: dict[str, int]
    extensions: dict[str, int]
    format_mismatch: list[dict]  # the extension says one thing, the content another
    size_summary: dict[str, dict[str, float]]  # width/height/aspect -> min, median, max
    problems: list[dict]  # unreadable or truncated files
    duplicate_groups: list[dict]  # {"kind": exact|near, "cross_class": bool, "members": [{file, class}]}
    overlays: list[dict]  # {"file", "class", "kinds", "signals"}
    seconds: float = 0.0
    widths: list[int] = field(default_factory=list, repr=False)
    heights: list[int] = field(default_factory=list, repr=False)

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    def counts_summary(self) -> dict[str, int]:
        groups = self.duplicate_groups
        return {
            "images": self.images,
            "files": self.files,
            "problems": len(self.problems),
            "truncated": sum(p["problem"].startswith("truncated") for p in self.problems),
            "unreadable": sum(p["problem"].startswith("unreadable") for p in self.problems),
            "exact_groups": sum(g["kind"] == "exact" for g in groups),
            "near_groups": sum(g["kind"] == "near" for g in groups),
            "cross_class_groups": sum(g["cross_class"] for g in groups),
            "redundant_images": sum(len(g["members"]) - 1 for g in groups),
            "overlays": len(self.overlays),
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("widths"), d.pop("heights")
        return {**d, "summary": self.counts_summary(), "images_per_s": self.images_per_s}

    @property
    def images_per_s(self) -> float | None:
        return round(self.files / self.seconds, 1) if self.seconds else None


_EXT_FORMAT = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jfif": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".gif": "GIF",
}


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def duplicate_groups(ok: list[ImageInfo], classes: list[str]) -> list[dict]:
    """Groups of two or more files that hold the same picture, cross-class and largest first."""
    if len(ok) < 2:
        return []
    gid = dedup.duplicate_groups(
        [i.sha1 for i in ok], phash_bits(ok), colour_thumbs(ok), NEAR_BITS, NEAR_COLOUR
    )
    members: dict[int, list[ImageInfo]] = {}
    for g, info in zip(gid, ok):
        members.setdefault(int(g), []).append(info)
    out = []
    for group in members.values():
        if len(group) < 2:
            continue
        out.append(
            {
                "kind": "exact" if len({i.sha1 for i in group}) == 1 else "near",
                "cross_class": len({i.label for i in group}) > 1,
                "members": [{"file": i.file, "class": classes[i.label]} for i in group],
            }
        )
    out.sort(key=lambda g: (not g["cross_class"], -len(g["members"]), g["members"][0]["file"]))
    return out


def summarize(root: str, classes: list[str], infos: list[ImageInfo], seconds: float = 0.0) -> Findings:
    ok = [i for i in infos if i.ok]
    labels = [i.label for i in ok]
    counts = Counter(labels)
    per_class = {c: counts.get(y, 0) for y, c in enumerate(classes)}
    nonzero = [n for n in per_class.values() if n]
    weights = data.class_weights(labels, len(classes)).tolist() if ok else [0.0] * len(classes)
    mismatch = [
        {"file": i.file, "extension": PurePath(i.file).suffix.lower(), "format": i.format}
        for i in ok
        if _EXT_FORMAT.get(PurePath(i.file).suffix.lower()) not in (None, i.format)
    ]
    overlays = [
        {"file": i.file, "class": classes[i.label], "kinds": i.overlays, "signals": i.signals}
        for i in ok
        if i.overlays
    ]
    return Findings(
        root=root,
        classes=classes,
        counts=per_class,
        files=len(infos),
        imbalance_ratio=round(max(nonzero) / min(nonzero), 3) if nonzero else 0.0,
        class_weights={c: round(w, 4) for c, w in zip(classes, weights)},
        formats=dict(Counter(i.format for i in ok).most_common()),
        modes=dict(Counter(i.mode for i in ok).most_common()),
        extensions=dict(Counter(PurePath(i.file).suffix.lower() for i in infos).most_common()),
        format_mismatch=mismatch,
        size_summary={
            "width": _spread([i.width for i in ok]),
            "height": _spread([i.height for i in ok]),
            "aspect": _spread([i.width / i.height for i in ok]),
        },
        problems=[
            {"file": i.file, "class": classes[i.label], "problem": i.problem} for i in infos if not i.ok
        ],
        duplicate_groups=duplicate_groups(ok, classes),
        overlays=overlays,
        seconds=round(seconds, 3),
        widths=[i.width for i in ok],
        heights=[i.height for i in ok],
    )


def sample_evenly(items: list, k: int) -> list:
    """At most ``k`` items spread evenly over the list (deterministic)."""
    if len(items) <= k:
        return list(items)
    return [items[int(j)] for j in np.linspace(0, len(items) - 1, k).round()]
