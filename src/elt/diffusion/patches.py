"""Patchify / unpatchify for images (C×H×W) and videos (C×T×H×W) alike.

A patch is a box of ``patch`` sizes over the trailing spatial (or spatio-temporal) axes; each
becomes one token of C·prod(patch) values, channel-major, ordered row-major over the token grid —
the order that :func:`elt.core.blocks.sincos_embedding` uses for its grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def token_grid(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """Token grid of a C×D1×…×Dk item (``shape`` without the batch axis) cut into ``patch``
    boxes."""
    spatial = tuple(shape[1:])
    if len(spatial) != len(patch):
        raise ValueError(
            f"patch {tuple(patch)} has {len(patch)} axes but the data has {len(spatial)} "
            f"spatial axes (shape {tuple(shape)})"
        )
    for size, p in zip(spatial, patch, strict=True):
        if p < 1 or size % p:
            raise ValueError(
                f"data size {spatial} is not divisible by the patch size {tuple(patch)}"
            )
    return tuple(size // p for size, p in zip(spatial, patch, strict=True))


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """N×C×D1×…×Dk → N×(prod grid)×(C·prod patch)."""
    n, c = x.shape[:2]
    grid = token_grid(x.shape[1:], patch)
    k = len(grid)
    split = [n, c]
    for g, p in zip(grid, patch, strict=True):
        split += [g, p]
    x = x.reshape(split)
    # axes: 0 batch, 1 channel, then (grid_i at 2+2i, patch_i at 3+2i)
    order = [0] + [2 + 2 * i for i in range(k)] + [1] + [3 + 2 * i for i in range(k)]
    return x.permute(order).reshape(n, math.prod(grid), c * math.prod(patch))


def unpatchify(
    tokens: torch.Tensor, patch: Sequence[int], grid: Sequence[int], channels: int
) -> torch.Tensor:
    """Inverse of :func:`patchify`: N×(prod grid)×(C·prod patch) → N×C×D1×…×Dk."""
    n = tokens.shape[0]
    k = len(grid)
    if tokens.shape[1] != math.prod(grid) or tokens.shape[2] != channels * math.prod(patch):
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not match grid {tuple(grid)}, "
            f"patch {tuple(patch)} and {channels} channels"
        )
    x = tokens.reshape(n, *grid, channels, *patch)
    # axes: 0 batch, 1..k grid, k+1 channel, k+2.. patch → batch, channel, (grid_i, patch_i)...
    order = [0, k + 1]
    for i in range(k):
        order += [1 + i, k + 2 + i]
    x = x.permute(order)
    return x.reshape(n, channels, *[g * p for g, p in zip(grid, patch, strict=True)])
