"""A synthetic stand-in for the course dataset: same layout, class names, formats and quirks.

    synth(out, per_class=30, seed=0)  ->  out/train_dataset/train_dataset/<class>/<image>
                                          out/__MACOSX/...              (junk, to be ignored)
                                          out/synth_manifest.json       (what was planted)

Each class has its own lesion colour, stripe texture and blob layout; every image draws its
statistics with noise, and one attribute in five comes from another class, so a model can learn
the task but not trivially. Counts follow the real dataset's imbalance, scaled so the mean per
class is ``per_class``. Every image is drawn from its own seeded generator: the same arguments
give the same bytes. Planting options (all off by default) add the troubles a real dataset has:
exact, near and cross-class duplicates, corrupt files and overlays (text, watermark, axes, frame).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASS_COUNTS: dict[str, int] = {
    "1. Eczema": 751,
    "2. Melanoma": 938,
    "3. Atopic Dermatitis": 563,
    "4. Basal Cell Carcinoma": 993,
    "5. Melanocytic Nevi": 2381,
    "6. Benign Keratosis-like Lesions": 931,
    "7. Psoriasis pictures Lichen Planus and related diseases": 921,
    "8. Seborrheic Keratoses and other Benign Tumors": 828,
    "9. Tinea Ringworm Candidiasis and other Fungal Infections": 763,
    "10. Warts Molluscum and other Viral Infections": 931,
}
CLASS_NAMES = list(CLASS_COUNTS)  # numbered order; the grader's order is sorted(CLASS_NAMES)
LAYOUT = ("train_dataset", "train_dataset")
MANIFEST = "synth_manifest.json"

# (extension, PIL format, weight): mostly JPEG like the real data, a few of every other kind.
FORMATS = [
    (".jpg", "JPEG", 10),
    (".jpeg", "JPEG", 2),
    (".png", "PNG", 2),
    (".bmp", "BMP", 1),
    (".tif", "TIFF", 1),
    (".tiff", "TIFF", 1),
    (".jfif", "JPEG", 1),
]
OVERLAYS = ("text", "watermark", "axes", "frame")
# pixel formats a real photo folder has beside 8-bit RGB: what each quirk file is written as
QUIRKS = ("grey16_png", "cmyk_jpeg", "rgba_png", "grey_jpeg", "exif_rotated_jpeg", "float_tiff")


@dataclass
class Manifest:
    root: str
    classes: dict[str, int]  # class -> number of (clean, generated) images
    images: list[str] = field(default_factory=list)  # every clean generated image, relative to root
    exact_duplicates: list[tuple[str, str]] = field(default_factory=list)  # (original, copy)
    near_duplicates: list[tuple[str, str]] = field(default_factory=list)  # (original, resized/recompressed)
    cross_class: list[tuple[str, str]] = field(default_factory=list)  # (original, same picture, other class)
    corrupt: list[str] = field(default_factory=list)
    overlays: dict[str, str] = field(default_factory=dict)  # image -> overlay kind
    quirks: dict[str, str] = field(default_factory=dict)  # image -> QUIRKS kind (also in ``images``)
    junk: list[str] = field(default_factory=list)  # __MACOSX and hidden files

    def to_dict(self) -> dict:
        return {
            k: (list(map(list, v)) if k in ("exact_duplicates", "near_duplicates", "cross_class") else v)
            for k, v in self.__dict__.items()
        }


def class_counts(per_class: int, balanced: bool = False) -> dict[str, int]:
    """Images per class: the real imbalance scaled to a mean of ``per_class`` (at least 2 each)."""
    if balanced:
        return {c: per_class for c in CLASS_NAMES}
    mean = sum(CLASS_COUNTS.values()) / len(CLASS_COUNTS)
    return {c: max(2, round(per_class * n / mean)) for c, n in CLASS_COUNTS.items()}


# ---------------------------------------------------------------- drawing (pure)

_PALETTE = np.array(
    [  # lesion colour per class (RGB 0..1), some deliberately close to each other
        [0.80, 0.35, 0.35],
        [0.25, 0.15, 0.15],
        [0.85, 0.45, 0.40],
        [0.70, 0.40, 0.55],
        [0.45, 0.28, 0.20],
        [0.60, 0.50, 0.30],
        [0.90, 0.55, 0.55],
        [0.50, 0.40, 0.25],
        [0.80, 0.60, 0.45],
        [0.75, 0.70, 0.60],
    ]
)
_FREQ = np.array([2, 9, 3, 6, 1, 5, 12, 4, 8, 14], dtype=float)  # stripe cycles per image
_ANGLE = np.linspace(0, np.pi, 10, endpoint=False)
_BLOBS = np.array([3, 1, 4, 1, 1, 2, 5, 2, 3, 6])  # number of lesion blobs
_RING = np.array([0, 0, 0, 1, 0, 0, 0, 0, 1, 0], dtype=bool)  # ring-shaped lesions


def draw_image(label: int, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 picture of class ``label``: skin background, textured blobs, noise."""
    w, h = size
    attr = [label] * 4  # colour, frequency, angle, blobs: one in five comes from another class
    for i in range(4):
        if rng.random() < 0.2:
            attr[i] = int(rng.integers(10))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w
    skin = np.array([0.87, 0.72, 0.62]) + rng.normal(0, 0.06, 3)
    img = np.broadcast_to(skin, (h, w, 3)).copy()
    img += (0.05 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2))))[..., None]

    angle = _ANGLE[attr[2]] + rng.normal(0, 0.25)
    freq = _FREQ[attr[1]] * rng.uniform(0.8, 1.25)
    stripes = 0.5 + 0.5 * np.sin(
        2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 6.3)
    )
    colour = np.clip(_PALETTE[attr[0]] + rng.normal(0, 0.07, 3), 0, 1)
    mask = np.zeros((h, w), np.float32)
    for _ in range(int(_BLOBS[attr[3]])):
        cx, cy = rng.uniform(0.2, 0.8, 2)
        rx, ry = rng.uniform(0.08, 0.3, 2)
        d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
        blob = np.clip(1.5 - d, 0, 1) if not _RING[label] else np.clip(1 - 4 * (d - 0.8) ** 2, 0, 1)
        mask = np.maximum(mask, blob)
    lesion = colour * (0.75 + 0.25 * stripes[..., None])
    img = img * (1 - mask[..., None]) + lesion * mask[..., None]
    img += rng.normal(0, 0.05, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def add_overlay(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """Draw a text label, a faint watermark, plot axes or a frame on top of ``img``."""
    img = img.convert("RGBA")
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = img.size
    if kind == "text":
        draw.text((2, 2), f"ID {int(rng.integers(1000, 9999))}", fill=(255, 255, 255, 255))
    elif kind == "watermark":
        for y in range(0, h, max(8, h // 4)):
            draw.text((int(rng.integers(0, max(1, w // 3))), y), "(c) dermatlas", fill=(255, 255, 255, 90))
    elif kind == "axes":
        draw.line([(4, h - 5), (w - 2, h - 5)], fill=(0, 0, 0, 255))
        draw.line([(4, 2), (4, h - 5)], fill=(0, 0, 0, 255))
        for t in range(4, w, max(4, w // 8)):
            draw.line([(t, h - 5), (t, h - 2)], fill=(0, 0, 0, 255))
    elif kind == "frame":
        width = max(2, min(w, h) // 20)
        draw.rectangle([0, 0, w - 1, h - 1], outline=(250, 250, 250, 255), width=width)
    else:
        raise ValueError(f"unknown overlay {kind!r}; choose one of {', '.join(OVERLAYS)}")
    return Image.alpha_composite(img, layer).convert("RGB")


def encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def encode_quirk(pic: Image.Image, kind: str) -> tuple[str, bytes]:
    """``(extension, bytes)`` of ``pic`` written in one of the ``QUIRKS`` pixel formats."""
    buf = io.BytesIO()
    if kind == "grey16_png":  # 16-bit greyscale: what `convert("RGB")` alone clips to white
        grey = np.asarray(pic.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey).save(buf, format="PNG")
        return ".png", buf.getvalue()
    if kind == "float_tiff":  # 32-bit float in [0, 1]: what `convert("RGB")` alone turns black
        Image.fromarray(np.asarray(pic.convert("L"), dtype=np.float32) / 255).save(buf, format="TIFF")
        return ".tif", buf.getvalue()
    if kind == "cmyk_jpeg":
        pic.convert("CMYK").save(buf, format="JPEG", quality=90)
        return ".jpg", buf.getvalue()
    if kind == "rgba_png":
        rgba = pic.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(buf, format="PNG")
        return ".png", buf.getvalue()
    if kind == "grey_jpeg":
        pic.convert("L").save(buf, format="JPEG", quality=90)
        return ".jpg", buf.getvalue()
    if kind == "exif_rotated_jpeg":  # pixels stored sideways, EXIF says "rotate 90 degrees to display"
        exif = Image.Exif()
        exif[0x0112] = 6
        pic.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=90, exif=exif.tobytes())
        return ".jfif", buf.getvalue()
    raise ValueError(f"unknown quirk {kind!r}; choose one of {', '.join(QUIRKS)}")


# ---------------------------------------------------------------- writing


_EXTS = [f for f in FORMATS for _ in range(f[2])]


def _picture(seed: int, size_range, height_range, overlays: float, label: int, i: int):
    """``(picture, overlay kind or None, rng)`` of clean image ``i`` of class ``label``: from its own seed."""
    rng = np.random.default_rng([seed, label, i])
    if height_range is None:
        w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
    else:
        w, h = int(rng.integers(*size_range, endpoint=True)), int(rng.integers(*height_range, endpoint=True))
    pic = Image.fromarray(draw_image(label, rng, (w, h)))
    kind = None
    if overlays > 0 and rng.random() < overlays:
        kind = OVERLAYS[int(rng.integers(len(OVERLAYS)))]
        pic = add_overlay(pic, kind, rng)
    return pic, kind, rng


def _clean_image(seed: int, size_range, height_range, overlays: float, job) -> tuple[str, bytes, str | None]:
    label, cls, i = job
    pic, kind, rng = _picture(seed, size_range, height_range, overlays, label, i)
    ext, fmt, _ = _EXTS[int(rng.integers(len(_EXTS)))]
    return str(Path(*LAYOUT, cls, f"img_{i:05d}{ext}")), encode(pic, fmt), kind


def synth(
    out: str | Path,
    per_class: int = 30,
    seed: int = 0,
    *,
    size_range: tuple[int, int] = (48, 128),
    balanced: bool = False,
    exact_duplicates: int = 0,
    near_duplicates: int = 0,
    cross_class: int = 0,
    corrupt: int = 0,
    overlays: float = 0.0,
    quirks: int = 0,
    height_range: tuple[int, int] | None = None,
    macosx: bool = True,
    workers: int = 1,
) -> Manifest:
    """Write a synthetic dataset under ``out`` and return (and save) the manifest of what it holds.

    ``quirks`` adds that many pictures of each ``QUIRKS`` pixel format; ``height_range`` draws heights
    from their own range (widths from ``size_range``); ``workers`` > 1 draws in that many processes
    (the same bytes)."""
    out = Path(out)
    root = out.joinpath(*LAYOUT)
    root.mkdir(parents=True, exist_ok=True)
    counts = class_counts(per_class, balanced)
    man = Manifest(root=str(out), classes=counts)
    jobs = [(label, cls, i) for label, cls in enumerate(CLASS_NAMES) for i in range(counts[cls])]
    for cls in CLASS_NAMES:
        (root / cls).mkdir(exist_ok=True)
    draw = functools.partial(_clean_image, seed, size_range, height_range, overlays)
    written = _write_clean(out, man, draw, jobs, workers)
    _write_quirks(out, man, seed, size_range, quirks)
    plant = np.random.default_rng([seed, 1_000_003])
    redraw = functools.partial(
        _picture, seed, size_range, height_range, overlays
    )  # (label, i) -> (pic, kind, rng)
    _plant_duplicates(out, man, written, plant, (exact_duplicates, near_duplicates, cross_class), redraw)
    _plant_corrupt(out, man, written, plant, corrupt)
    if macosx:
        _plant_junk(out, man, plant)
    saved = {k: v for k, v in man.to_dict().items() if k != "root"}  # paths are relative to its folder
    (out / MANIFEST).write_text(json.dumps(saved, indent=1))
    return man


def _write_clean(out: Path, man: Manifest, draw, jobs, workers: int) -> list[tuple[str, str]]:
    """The clean pictures, drawn in ``workers`` processes; returns (class, relpath) of each."""
    written: list[tuple[str, str]] = []  # pictures are drawn again from their seed when needed
    with ProcessPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        results = pool.map(draw, jobs, chunksize=32) if pool else map(draw, jobs)
        for (_, cls, _), (rel, data, kind) in zip(jobs, results):
            (out / rel).write_bytes(data)
            man.images.append(rel)
            if kind:
                man.overlays[rel] = kind
            written.append((cls, rel))
    return written


def _write_quirks(out: Path, man: Manifest, seed: int, size_range, quirks: int) -> None:
    """``quirks`` pictures of each ``QUIRKS`` pixel format."""
    for j in range(quirks * len(QUIRKS)):
        kind, label = QUIRKS[j % len(QUIRKS)], j % 10
        rng = np.random.default_rng([seed, 2_000_003, j])
        w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
        ext, data = encode_quirk(Image.fromarray(draw_image(label, rng, (w, h))), kind)
        rel = str(Path(*LAYOUT, CLASS_NAMES[label], f"quirk_{j:04d}_{kind}{ext}"))
        (out / rel).write_bytes(data)
        man.images.append(rel)
        man.quirks[rel] = kind


def _plant_duplicates(out: Path, man: Manifest, written, plant, counts, redraw) -> None:
    """Exact copies, smaller re-encodes and copies under another class, of pictures drawn by ``plant``."""
    exact, near, cross = counts

    def picks(k: int) -> list[tuple[str, str]]:
        return [written[j] for j in plant.choice(len(written), size=min(k, len(written)), replace=False)]

    for _, rel in picks(exact):
        copy = str(Path(rel).with_name(Path(rel).stem + "_copy" + Path(rel).suffix))
        (out / copy).write_bytes((out / rel).read_bytes())
        man.exact_duplicates.append((rel, copy))
    for cls, rel in picks(near):
        pic = redraw(CLASS_NAMES.index(cls), int(Path(rel).stem.split("_")[1]))[0]
        small = pic.resize((max(8, pic.width * 4 // 5), max(8, pic.height * 4 // 5)), Image.BILINEAR)
        dup = str(Path(rel).with_name(Path(rel).stem + "_near.jpg"))
        (out / dup).write_bytes(encode(small, "JPEG", quality=60))
        man.near_duplicates.append((rel, dup))
    for cls, rel in picks(cross):
        other = CLASS_NAMES[(CLASS_NAMES.index(cls) + 1 + int(plant.integers(9))) % 10]
        dup = str(Path(*LAYOUT, other, "x_" + Path(rel).name))
        (out / dup).write_bytes((out / rel).read_bytes())
        man.cross_class.append((rel, dup))


def _plant_corrupt(out: Path, man: Manifest, written, plant, corrupt: int) -> None:
    """Truncated JPEGs and files that are not pictures at all, alternately."""
    for j in range(corrupt):
        cls = CLASS_NAMES[j % 10]
        if j % 2 == 0:  # a truncated JPEG
            src = (out / next(r for c, r in written if c == cls)).read_bytes()
            rel, data = str(Path(*LAYOUT, cls, f"broken_{j}.jpg")), src[: max(20, len(src) // 3)]
        else:  # not an image at all
            rel, data = str(Path(*LAYOUT, cls, f"broken_{j}.png")), plant.bytes(200)
        (out / rel).write_bytes(data)
        man.corrupt.append(rel)


def _plant_junk(out: Path, man: Manifest, plant) -> None:
    """What a zip made on a Mac carries: __MACOSX resource forks and a .DS_Store."""
    for cls in CLASS_NAMES[:3]:
        junk = Path("__MACOSX", *LAYOUT, cls, "._img_00000.jpg")
        (out / junk).parent.mkdir(parents=True, exist_ok=True)
        (out / junk).write_bytes(b"\x00\x05\x16\x07" + plant.bytes(60))
        man.junk.append(str(junk))
    ds = Path(*LAYOUT, CLASS_NAMES[0], ".DS_Store")
    (out / ds).write_bytes(b"\x00\x00\x00\x01Bud1" + plant.bytes(40))
    man.junk.append(str(ds))
