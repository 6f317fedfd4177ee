"""A toy image folder to try the custom-data path on: coloured circles, squares and triangles.

    python -m elt.data.shapes OUT [--per-class 300] [--size 64] [--seed 0]

writes ``OUT/circle/0000.png``, ``OUT/square/0000.png``, ``OUT/triangle/0000.png``, ... (RGB PNGs):
one filled shape per image, of a random saturated colour, size, small offset from the centre and
(squares, triangles) tilt of at most 10°, on a plain light background of a random tint. The same
seed gives the same bytes; image ``i`` of a class does not depend on ``--per-class`` (a bigger
folder extends a smaller one). The folder is built under a temporary name and renamed when
complete; a non-empty OUT is refused.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from elt.errors import UserError
from elt.fileio import atomic_dir

CLASSES = ("circle", "square", "triangle")
SUPERSAMPLE = 4  # shapes are drawn 4× larger, then box-downsampled: smooth (anti-aliased) edges
MAX_PER_CLASS = 100_000
MIN_SIZE, MAX_SIZE = 16, 1024


def _colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A saturated fill colour and a light background tint that always contrasts with it."""
    hue = rng.uniform(0.0, 1.0)
    fill = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.35, 0.85))
    background = rng.uniform(0.86, 1.0, size=3)
    return (
        tuple(int(round(255 * c)) for c in fill),
        tuple(int(round(255 * c)) for c in background),
    )


def _polygon(
    sides: int, cx: float, cy: float, radius: float, angle: float
) -> list[tuple[float, float]]:
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / sides),
            cy + radius * math.sin(angle + 2 * math.pi * k / sides),
        )
        for k in range(sides)
    ]


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One ``size``×``size`` RGB image of ``shape`` (one of :data:`CLASSES`) drawn from ``rng``."""
    if shape not in CLASSES:
        raise UserError(f"shape {shape!r} is not one of {', '.join(CLASSES)}")
    fill, background = _colours(rng)
    big = size * SUPERSAMPLE
    # circumradius 28-40 % of the side, the centre within ±8 % of the middle, squares and triangles
    # within ±10° of upright: what tells the classes apart is the outline, which a model the size
    # of the folder_* configs learns in minutes on a CPU (random placement and angle need far more)
    radius = rng.uniform(0.28, 0.40) * big
    cx = big / 2 + rng.uniform(-0.08, 0.08) * big
    cy = big / 2 + rng.uniform(-0.08, 0.08) * big
    upright = math.pi / 4 if shape == "square" else -math.pi / 2  # a flat side down / a tip up
    angle = upright + math.radians(rng.uniform(-10.0, 10.0))
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        r = radius * 0.85  # a circle looks bigger than a polygon of the same circumradius
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(4 if shape == "square" else 3, cx, cy, radius, angle), fill=fill)
    return image.resize((size, size), resample=Image.BOX)


def image_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` of class ``class_index``: independent of the folder size."""
    return np.random.default_rng(np.random.SeedSequence([seed, class_index, index]))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_shapes(out: str | Path, per_class: int = 300, size: int = 64, seed: int = 0) -> Path:
    """Write the folder (``per_class`` images of each of :data:`CLASSES`) to ``out``, atomically."""
    out = Path(out)
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise UserError(f"--per-class {per_class} must lie in 1..{MAX_PER_CLASS}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"--size {size} must lie in {MIN_SIZE}..{MAX_SIZE}")
    if out.exists() and not out.is_dir():
        raise UserError(f"output {str(out)!r} is an existing file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"output folder {str(out)!r} is not empty; give a new or empty folder")
    width = max(4, len(str(per_class - 1)))
    with atomic_dir(out) as tmp:
        for class_index, name in enumerate(CLASSES):
            (tmp / name).mkdir()
            for index in range(per_class):
                image = draw_shape(name, size, image_rng(seed, class_index, index))
                (tmp / name / f"{index:0{width}d}.png").write_bytes(png_bytes(image))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m elt.data.shapes",
        description="Write a toy folder OUT/{circle,square,triangle}/NNNN.png of coloured shapes.",
    )
    parser.add_argument("out", help="output folder (new or empty)")
    parser.add_argument("--per-class", type=int, default=300, help="images per class (300)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    args = parser.parse_args(argv)
    try:
        out = write_shapes(args.out, args.per_class, args.size, args.seed)
    except (UserError, OSError) as exc:
        print(f"elt: error: {exc}", file=sys.stderr)
        return 2
    total = args.per_class * len(CLASSES)
    print(f"wrote {total} images ({args.size}x{args.size} RGB, {', '.join(CLASSES)}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
