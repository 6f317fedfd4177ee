"""Preset registry: models named by width and shape, ``ELT-<width>-<N>x<L>``.

``ELT-S-4x3`` is width S (384) with 4 unique layers looped 3 times. The widths B/L/XL/H are the
paper's (768/1024/1152/1280); T and S are small widths for laptops and tests. Heads = width / 64 (at
least 2). A unique-stack baseline of equal FLOPs is the same preset trained with
``ilsd.mode=unique``; one of equal parameters is ``ELT-<w>-<N>x1``."""

from __future__ import annotations

import re

WIDTHS = {"T": 128, "S": 384, "B": 768, "L": 1024, "XL": 1152, "H": 1280}
_PATTERN = re.compile(r"^ELT-(?P<width>[A-Z]+)-(?P<n>\d+)x(?P<l>\d+)$")


def parse_preset(name: str) -> dict[str, int]:
    """``"ELT-S-4x3"`` → ``{"width": 384, "heads": 6, "unique_layers": 4, "loops": 3}``."""
    match = _PATTERN.match(name)
    if not match or match["width"] not in WIDTHS:
        raise ValueError(
            f"unknown model preset {name!r}; expected ELT-<{'|'.join(WIDTHS)}>-<N>x<L>, e.g. "
            "ELT-S-4x3"
        )
    width = WIDTHS[match["width"]]
    unique_layers, loops = int(match["n"]), int(match["l"])
    if unique_layers < 1 or loops < 1:
        raise ValueError(f"model preset {name!r} needs N >= 1 and L >= 1")
    return {
        "width": width,
        "heads": max(2, width // 64),
        "unique_layers": unique_layers,
        "loops": loops,
    }
