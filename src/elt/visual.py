"""Pictures for people: image grids with one labelled row per loop count."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def grid_image(rows: Sequence[np.ndarray], row_labels: Sequence[str] | None = None, scale: int = 0,
               pad: int = 2, title: str | None = None) -> Image.Image:
    """Tile uint8 batches (each n×H×W×C) into one picture, one batch per row, labels on the left.

    ``scale`` upsamples small images (nearest) so 28-px samples stay legible; 0 picks it automatically.
    """
    if not rows:
        raise ValueError("grid_image needs at least one row")
    h, w, c = rows[0].shape[1:4]
    if scale <= 0:
        scale = max(1, 64 // max(h, w))
    cols = max(len(r) for r in rows)
    font = ImageFont.load_default()
    label_w = 0
    if row_labels:
        label_w = max(int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(t, font=font)) for t in row_labels)
        label_w += 8
    title_h = 14 if title else 0
    cell_h, cell_w = h * scale + pad, w * scale + pad
    canvas = Image.new("RGB", (label_w + cols * cell_w + pad, title_h + len(rows) * cell_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 1), title, fill="black", font=font)
    for i, row in enumerate(rows):
        y = title_h + pad + i * cell_h
        if row_labels:
            draw.text((2, y + cell_h // 2 - 6), row_labels[i], fill="black", font=font)
        for j, img in enumerate(row):
            tile = Image.fromarray(img[..., 0] if c == 1 else img, mode="L" if c == 1 else "RGB").convert("RGB")
            if scale > 1:
                tile = tile.resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + pad + j * cell_w, y))
    return canvas


def save_grid(path: str | Path, rows: Sequence[np.ndarray], row_labels: Sequence[str] | None = None,
              title: str | None = None, scale: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(rows, row_labels, scale=scale, title=title).save(path)
    return path
