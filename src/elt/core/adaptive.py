"""Adaptive exit, loop by loop: each sample leaves the batch once its prediction stopped changing.

ILSD makes the output after every loop a usable prediction, so the change between two consecutive loops'
predictions is a halting signal that costs one head application per loop and no extra parameters. The
driver below runs the shared blocks one loop at a time on the *active* rows only (exited samples are
dropped from the state, so later loops cost less time, not only fewer counted FLOPs); both classifier-free
guidance branches of a sample sit in the same state tensor and leave together, because the decision is made
on the guided prediction.

With ``threshold = 0`` no sample exits before ``max_loops`` and the result is bit-identical to a fixed run
of ``max_loops`` loops (same operations on the same rows); with ``threshold = inf`` every sample exits after
``min_loops``, identical to a fixed run of ``min_loops``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from elt.core.looped import LoopedTransformer
from elt.core.schedule import AdaptiveExit

Readout = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]
Change = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Summary = Callable[[torch.Tensor], torch.Tensor]


def run_adaptive(backbone: LoopedTransformer, h: torch.Tensor, cond: torch.Tensor | None, branches: int,
                 readout: Readout, change: Change, rule: AdaptiveExit,
                 summarise: Summary | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop ``h`` (``branches``·B rows: branch 0 rows 0..B-1, branch 1 rows B..2B-1, prefix tokens included)
    until every sample exits.

    Args:
        readout: ``(state rows of the active samples, their cond rows, active sample indices) → prediction``
            A×… (branches combined).
        change: ``(previous summary, new summary, active sample indices) → A`` change scores.
        rule: threshold, min and max loops (``max_loops`` must be set: see :meth:`AdaptiveExit.resolved`).
        summarise: ``prediction → summary`` (A×…), what ``change`` compares; kept from one loop to the next
            instead of the prediction, so it is computed once per loop (default: the prediction itself).

    Returns the prediction of every sample at its exit (B×…) and the loops it used (B, int64).
    """
    if rule.max_loops is None:
        raise ValueError("run_adaptive needs rule.max_loops; call rule.resolved(L_max) first")
    batch = h.shape[0] // branches
    device = h.device
    active = torch.arange(batch, device=device)
    used = torch.zeros(batch, dtype=torch.long, device=device)
    out: torch.Tensor | None = None
    previous: torch.Tensor | None = None
    always = math.isinf(rule.threshold)
    x0 = h if backbone.inject is not None else None  # the loop input, re-injected by such models
    for k in range(1, rule.max_loops + 1):
        h = backbone.loop_once(h, cond, k - 1, x0)
        prediction = readout(h, cond, active)
        if out is None:
            out = prediction.new_empty((batch, *prediction.shape[1:]))
        last = k == rule.max_loops or (k >= rule.min_loops and always)
        summary = prediction if summarise is None or last else summarise(prediction)  # unused after the last
        if last:
            done = torch.ones(len(active), dtype=torch.bool, device=device)
        elif k >= rule.min_loops:
            done = change(previous, summary, active) < rule.threshold
        else:
            done = torch.zeros(len(active), dtype=torch.bool, device=device)
        if bool(done.any()):
            finished = active[done]
            out[finished] = prediction[done]
            used[finished] = k
            keep = ~done
            if not bool(keep.any()):
                break
            active = active[keep]
            rows = keep.repeat(branches)
            h = h[rows]
            x0 = x0[rows] if x0 is not None else None
            cond = cond[rows] if cond is not None else None
            summary = summary[keep]
        previous = summary
    return out, used


def argmax_tokens(logits: torch.Tensor) -> torch.Tensor:
    """The summary :func:`token_change` compares: the top token of every position (``max(-1).indices``, which
    on a CPU is 2-3× faster than ``argmax`` on bfloat16 logits)."""
    return logits.max(-1).indices


def token_change(masked: torch.Tensor) -> Change:
    """Masked paradigm: share of the masked positions (``masked`` B×T) whose argmax token changed; compares
    the summaries of :func:`argmax_tokens`."""

    def change(previous: torch.Tensor, new: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        where = masked[active]
        flipped = (previous != new) & where
        return flipped.sum(1).float() / where.sum(1).clamp(min=1).float()

    return change


def relative_change(to_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Change:
    """Diffusion: ‖x̂0_k − x̂0_{k−1}‖ / ‖x̂0_{k−1}‖ per sample; ``to_x0(prediction, active)`` converts the
    network output of the active samples to x̂0."""

    def change(previous: torch.Tensor, new: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        old, cur = to_x0(previous, active).flatten(1), to_x0(new, active).flatten(1)
        return (cur - old).norm(dim=1) / old.norm(dim=1).clamp(min=1e-8)

    return change
