"""MaskGIT iterative decoding: start fully masked, fix the most confident tokens step by step.

At step k of K every still-masked position draws a token from the model's distribution; the draws
are ranked by confidence (log-probability of the drawn token plus Gumbel noise at temperature ``base
+ range · (1 − (k+1)/K)``, so ordering is exploratory early and greedy late), and all but the
``masked_counts(T, K)[k]`` least confident become fixed. Fixed tokens are never masked again. The
model call is a callback, so loop schedules and classifier-free guidance stay in the model; the
schedule lives in :mod:`elt.masked.masking`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from elt.core import rng
from elt.masked.masking import masked_counts

LogitsFn = Callable[[torch.Tensor, int], torch.Tensor]
StepHook = Callable[[int, torch.Tensor, torch.Tensor], None]


def gumbel_temperature(step: int, steps: int, base: float = 0.5, spread: float = 0.8) -> float:
    """Temperature of the confidence noise at step ``step`` (0-based) of ``steps``: base + spread·(1
    − (k+1)/K)."""
    return base + spread * (1.0 - (step + 1) / steps)


def gumbel_noise(
    shape: tuple[int, ...], generator: rng.Streams, device: torch.device
) -> torch.Tensor:
    u = rng.rand(shape, generator, device).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


@torch.no_grad()
def iterative_decode(
    logits_fn: LogitsFn,
    batch: int,
    seq_len: int,
    mask_id: int,
    steps: int,
    generator: rng.Streams = None,
    device: torch.device | str = "cpu",
    temperature_base: float = 0.5,
    temperature_range: float = 0.8,
    token_temperature: float = 1.0,
    progress: bool = False,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """Decode ``batch`` token sequences of length ``seq_len``; returns B×T token ids (none equal to
    ``mask_id``).

    Args:
        logits_fn: ``(tokens B×T with mask_id at masked positions, step) → logits B×T×V`` over the
            codebook.
        generator: all randomness (token draws, Gumbel noise) comes from it: same seed, same tokens.
            A list of generators (one per sample, :mod:`elt.core.rng`) makes each sample independent
            of the batch.
        token_temperature: softmax temperature of the token draws (1 = the model's distribution).
        on_step: called as ``on_step(step, tokens_before, tokens_after)`` (for tests and
            visualisation).
    """
    device = torch.device(device)
    counts = masked_counts(seq_len, steps)
    tokens = torch.full((batch, seq_len), mask_id, dtype=torch.long, device=device)
    for step in tqdm(range(steps), desc="decoding", disable=not progress, leave=False):
        masked = tokens == mask_id
        logits = logits_fn(tokens, step).float()
        if logits.shape[:2] != (batch, seq_len):
            raise ValueError(
                f"logits_fn returned shape {tuple(logits.shape)}, expected ({batch}, {seq_len}, V)"
            )
        if token_temperature != 1.0:  # x / 1 is x: at the default the division is skipped
            logits = logits / max(token_temperature, 1e-6)
        log_probs = torch.log_softmax(logits, dim=-1)
        drawn = rng.multinomial(log_probs.exp(), generator)
        drawn = torch.where(masked, drawn, tokens)
        confidence = log_probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1)
        temperature = gumbel_temperature(step, steps, temperature_base, temperature_range)
        confidence = confidence + temperature * gumbel_noise(confidence.shape, generator, device)
        confidence = torch.where(masked, confidence, torch.full_like(confidence, float("inf")))
        keep_masked = counts[step]
        new_tokens = drawn
        if keep_masked > 0:
            least_confident = confidence.argsort(dim=1)[:, :keep_masked]
            remask = torch.zeros_like(masked).scatter_(1, least_confident, True)
            new_tokens = torch.where(remask, torch.full_like(drawn, mask_id), drawn)
        if on_step is not None:
            on_step(step, tokens, new_tokens)
        tokens = new_tokens
    return tokens
