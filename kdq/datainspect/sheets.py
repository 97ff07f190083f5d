"""Contact sheets: thumbnails in a grid, each with a one-line caption, saved as one PNG."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from kdq.datainspect.scan import THUMB_SIDE

CAPTION_H = 14


def contact_sheet(tiles: list[tuple[bytes, str]], path: Path, cols: int = 8) -> Path:
    """``tiles``: (JPEG thumbnail bytes, caption). Thumbnails are centred in ``THUMB_SIDE`` squares."""
    if not tiles:
        raise ValueError(f"{path}: a contact sheet needs at least one picture")
    cols = min(cols, len(tiles))
    rows = -(-len(tiles) // cols)
    cell_w, cell_h = THUMB_SIDE + 4, THUMB_SIDE + CAPTION_H + 4
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=10)
    for n, (thumb, caption) in enumerate(tiles):
        x, y = (n % cols) * cell_w, (n // cols) * cell_h
        with Image.open(io.BytesIO(thumb)) as im:
            im = im.convert("RGB")
            sheet.paste(im, (x + 2 + (THUMB_SIDE - im.width) // 2, y + 2 + (THUMB_SIDE - im.height) // 2))
        text = caption
        while text and draw.textlength(text, font=font) > THUMB_SIDE:
            text = text[:-2] + "…" if len(text) > 2 else ""
        draw.text((x + 2, y + THUMB_SIDE + 3), text, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, "PNG", compress_level=3)
    return path
