"""Read every image once: header facts, hashes, overlay signals and a small thumbnail, in a process pool.

Each file is opened once. JPEGs are decoded at a reduced scale straight away (``Image.draft``: the
decoder skips the detail we would throw away), everything else is thumbnailed right after decoding;
all later measurements use that small picture.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

import kdq.datainspect.overlay as overlay

WORK_SIDE = overlay.ANALYSIS_SIDE  # decode no larger than this (JPEG draft picks the next scale up)
THUMB_SIDE = 96  # contact-sheet thumbnails
COLOUR_SIDE = 16  # colour thumbnail that confirms a near-duplicate


@dataclass
class ImageInfo:
    file: str  # relative to the dataset root (the folder that holds the class folders)
    label: int
    bytes: int
    sha1: str
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    phash: str | None = None  # hex, 64 bits (ImageHash DCT hash)
    colour: bytes | None = None  # COLOUR_SIDE² RGB bytes
    thumb: bytes | None = None  # JPEG bytes, at most THUMB_SIDE a side
    signals: dict = field(default_factory=dict)
    overlays: list[str] = field(default_factory=list)
    problem: str | None = None  # "truncated: ..." or "unreadable: ..."

    @property
    def ok(self) -> bool:
        return self.problem is None


def _classify_error(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, UnidentifiedImageError):
        return "unreadable: not an image format Pillow can identify (wrong content or extension)"
    if "truncated" in str(exc).lower() or isinstance(exc, (EOFError, SyntaxError)):
        return f"truncated: {text}"
    return f"unreadable: {text}"


def scan_file(root: str, rel: str, label: int) -> ImageInfo:
    """Everything the report needs from one file. Never raises for a broken image."""
    data = (Path(root) / rel).read_bytes()
    info = ImageInfo(file=rel, label=label, bytes=len(data), sha1=hashlib.sha1(data).hexdigest())
    try:
        with Image.open(io.BytesIO(data)) as im:
            info.format, info.mode, (info.width, info.height) = im.format, im.mode, im.size
            if im.format == "JPEG":
                im.draft("RGB", (WORK_SIDE, WORK_SIDE))
            im.load()
            rgb = im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 — Pillow raises many kinds for broken files
        info.problem = _classify_error(exc)
        return info
    rgb.thumbnail((WORK_SIDE, WORK_SIDE), Image.BILINEAR)
    info.phash = str(imagehash.phash(rgb))
    info.colour = rgb.resize((COLOUR_SIDE, COLOUR_SIDE), Image.BILINEAR).tobytes()
    info.signals = overlay.signals(rgb, original_side=max(info.width, info.height))
    info.overlays = overlay.flags(info.signals)
    small = rgb.copy()
    small.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=85)
    info.thumb = buf.getvalue()
    return info


def _scan_chunk(args: tuple[str, list[tuple[str, int]]]) -> list[ImageInfo]:
    root, items = args
    return [scan_file(root, rel, label) for rel, label in items]


def scan_files(
    root: Path,
    items: list[tuple[str, int]],
    workers: int | None = None,
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
) -> list[ImageInfo]:
    """``scan_file`` over ``(relative path, label)`` pairs, in order; ``workers=1`` stays in-process.

    ``progress(n)`` is called after every ``n`` files read.
    """
    workers = workers or os.cpu_count() or 1
    chunks = [(str(root), items[i : i + chunk]) for i in range(0, len(items), chunk)]
    out: list[ImageInfo] = []
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(chunks) > 1 else None
    try:
        for part in pool.map(_scan_chunk, chunks) if pool else map(_scan_chunk, chunks):
            out += part
            if progress:
                progress(len(part))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return out


def phash_bits(infos: list[ImageInfo]) -> np.ndarray:
    """bool [N, 64] of the perceptual hashes (readable images only, in order)."""
    return np.stack([imagehash.hex_to_hash(i.phash).hash.flatten() for i in infos])


def colour_thumbs(infos: list[ImageInfo]) -> np.ndarray:
    """uint8 [N, 3, COLOUR_SIDE, COLOUR_SIDE]."""
    arr = np.stack([np.frombuffer(i.colour, np.uint8).reshape(COLOUR_SIDE, COLOUR_SIDE, 3) for i in infos])
    return arr.transpose(0, 3, 1, 2).copy()
