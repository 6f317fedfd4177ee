"""MaskGIT's cosine masking schedule: how many tokens are masked, in training and at each decoding
step.

Training draws a ratio r = cos(π/2 · u), u ~ U[0, 1), per sample and masks ⌈r·T⌉ random positions
(at least one), so the model sees every stage of decoding from "almost everything masked" to "one
token left". Decoding with K steps keeps ⌊T · cos(π/2 · (k+1)/K)⌋ tokens masked after step k, so
early steps fix few tokens and late steps many. The sampler lives in :mod:`elt.masked.sampler`."""

from __future__ import annotations

import math

import torch

from elt.core import batch_random


def cosine_mask_ratio(progress: torch.Tensor | float) -> torch.Tensor | float:
    """Fraction of tokens still masked at ``progress`` ∈ [0, 1] of decoding (1 at the start, 0 at
    the end)."""
    if torch.is_tensor(progress):
        return torch.cos(progress * (math.pi / 2))
    return math.cos(progress * math.pi / 2)


def sample_training_mask(
    batch: int,
    seq_len: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    with_global_count: bool = False,
):
    """Boolean B×T mask (True = masked): per sample ⌈cos(π/2·u)·T⌉ positions, u ~ U[0, 1), chosen
    uniformly.

    Without ``generator``, inside a training step the draws are keyed by the global sample index
    (:mod:`elt.core.batch_random`); ``with_global_count`` then also returns the number of masked
    tokens of the whole global batch (every rank knows it without communicating)."""
    if generator is None:
        u, rows = batch_random.rand_global(batch, device=device)
        scores, _ = batch_random.rand_global(batch, seq_len, device=device)
        full = _mask(u, scores, seq_len)
        mask = full[rows]
        return (mask, int(full.sum())) if with_global_count else mask
    u = torch.rand(batch, generator=generator, device=device)
    scores = torch.rand(batch, seq_len, generator=generator, device=device)
    mask = _mask(u, scores, seq_len)
    return (mask, int(mask.sum())) if with_global_count else mask


def _mask(u: torch.Tensor, scores: torch.Tensor, seq_len: int) -> torch.Tensor:
    counts = torch.ceil(cosine_mask_ratio(u) * seq_len).long().clamp(1, seq_len)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < counts.unsqueeze(1)


def masked_counts(seq_len: int, steps: int) -> list[int]:
    """Tokens still masked after each of ``steps`` decoding steps: ⌊T·cos(π/2·(k+1)/K)⌋, made
    strictly decreasing so every step fixes at least one token, ending at 0."""
    if steps < 1:
        raise ValueError(f"decoding needs at least one step, got {steps}")
    if steps > seq_len:
        raise ValueError(
            f"{steps} decoding steps for {seq_len} tokens: each step must fix at least one token "
            f"(use at most {seq_len} steps)"
        )
    counts, previous = [], seq_len
    for k in range(steps):
        remaining = int(math.floor(seq_len * cosine_mask_ratio((k + 1) / steps) + 1e-9))
        remaining = min(remaining, previous - 1)
        counts.append(remaining)
        previous = remaining
    counts[-1] = 0
    return counts


def unmask_counts(seq_len: int, steps: int) -> list[int]:
    """Tokens fixed at each decoding step (sums to ``seq_len``)."""
    remaining = [seq_len, *masked_counts(seq_len, steps)]
    return [remaining[k] - remaining[k + 1] for k in range(steps)]
