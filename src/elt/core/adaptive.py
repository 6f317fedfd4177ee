"""Adaptive exit, loop by loop: each sample leaves the batch once its prediction stopped changing.

ILSD makes the output after every loop a usable prediction, so the change between two consecutive
loops' predictions is a halting signal that costs one head application per loop and no extra
parameters. The driver below runs the shared blocks one loop at a time on the *active* rows only
(exited samples are dropped from the state, so later loops cost less time, not only fewer counted
FLOPs); both classifier-free guidance branches of a sample sit in the same state tensor and leave
together, because the decision is made on the guided prediction.

With ``threshold = 0`` no sample exits before ``max_loops`` and the result is bit-identical to a
fixed run of ``max_loops`` loops (same operations on the same rows); with ``threshold = inf`` every
sample exits after ``min_loops``, identical to a fixed run of ``min_loops``.

Per-loop cost at small batch. What a loop adds to the fixed schedule's work is the readout and the
change score, and at batch 1 or 8 their cost is the number of operations, not arithmetic. So the
driver reads the prediction only from loop ``min_loops − 1`` on (earlier ones are never compared);
what depends only on the set of active samples (their condition rows, masks, ODE coefficients, the
head's modulation) is computed once per set, in the callbacks, keyed on the ``active`` tensor, which
is a new object exactly when samples left; and the summary of the previous loop is kept, so each
prediction is summarised once. The network's rows, and so the samples, are those of a run that
recomputes everything: only the decision's bookkeeping is shared. The decision needs one host
synchronisation per loop (``done.any()``), which on a CPU costs nothing and on a GPU one round trip
next to the loop's N blocks of kernels."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from elt.core.looped import LoopedTransformer
from elt.core.schedule import AdaptiveExit

Readout = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]
Change = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Summary = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def run_adaptive(
    backbone: LoopedTransformer,
    h: torch.Tensor,
    cond: torch.Tensor | None,
    branches: int,
    readout: Readout,
    change: Change,
    rule: AdaptiveExit,
    summarise: Summary | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop ``h`` (``branches``·B rows: branch 0 rows 0..B-1, branch 1 rows B..2B-1, prefix tokens
    included) until every sample exits.

    Args:
        readout: ``(state rows of the active samples, their cond rows, active sample indices) →
            prediction`` A×… (branches combined).
        change: ``(previous summary, new summary, active sample indices) → A`` change scores.
        rule: threshold, min and max loops (``max_loops`` must be set: see
            :meth:`AdaptiveExit.resolved`).
        summarise: ``(prediction, active sample indices) → summary`` (A×…), what ``change``
            compares; kept from one loop to the next instead of the prediction, so it is computed
            once per loop (default: the prediction itself).

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
    memos = backbone.modulation_memos(cond)  # adaLN terms of the current rows, once per row set
    for k in range(1, rule.max_loops + 1):
        h = backbone.loop_once(h, cond, k - 1, x0, memos)
        last = k == rule.max_loops or (k >= rule.min_loops and always)
        if (
            k < rule.min_loops - 1 and not last
        ):  # no exit yet, and the next loop does not compare with this one
            continue
        prediction = readout(h, cond, active)
        if last:
            return _finish(out, used, active, prediction, k)
        summary = prediction if summarise is None else summarise(prediction, active)
        if k < rule.min_loops:  # no exit yet: only the next loop's comparison needs this one
            previous = summary
            continue
        done = change(previous, summary, active) < rule.threshold
        if not bool(done.any()):
            previous = summary
            continue
        if bool(done.all()):  # the rest leave together (at batch 1, the only sample)
            return _finish(out, used, active, prediction, k)
        if out is None:
            out = prediction.new_empty((batch, *prediction.shape[1:]))
        finished = active[done]
        out[finished] = prediction[done]
        used[finished] = k
        keep = ~done
        active = active[keep]
        rows = keep.repeat(branches)
        h = h[rows]
        x0 = x0[rows] if x0 is not None else None
        cond = cond[rows] if cond is not None else None
        memos = backbone.modulation_memos(cond)
        previous = summary[keep]
    raise AssertionError("unreachable: the last loop returns")


def _finish(
    out: torch.Tensor | None,
    used: torch.Tensor,
    active: torch.Tensor,
    prediction: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample still active exits at loop ``k``: while none left earlier (``out`` not yet
    made) the prediction is the whole result, without a copy."""
    if out is None:
        return prediction, used.fill_(k)
    out[active] = prediction
    used[active] = k
    return out, used


def active_rows(values: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``values[active]``: the rows of the active samples, ``values`` itself while every sample is
    active (``active`` is always an increasing subset of ``0..B-1``, so equal length means all;
    no copy at batch 1, where the only sample is active until it leaves)."""
    return values if len(active) == len(values) else values[active]


def per_active(compute: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
    """``compute(active)`` cached for the current set of active samples: :func:`run_adaptive` makes
    a new ``active`` tensor exactly when samples left, so identity is the key (one entry: sets never
    come back)."""
    cache: list = [None, None]

    def get(active: torch.Tensor) -> Any:
        if cache[0] is not active:
            cache[0], cache[1] = active, compute(active)
        return cache[1]

    return get


def argmax_tokens(logits: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """The summary :func:`token_change` compares: the top token of every position
    (``max(-1).indices``, which on a CPU is 2-3× faster than ``argmax`` on bfloat16 logits)."""
    return logits.max(-1).indices


def token_change(masked: torch.Tensor) -> Change:
    """Masked paradigm: share of the masked positions (``masked`` B×T) whose argmax token changed;
    compares the summaries of :func:`argmax_tokens`."""

    @per_active
    def rows(active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        where = active_rows(masked, active)
        return where, where.sum(1).clamp(min=1).float()

    def change(previous: torch.Tensor, new: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        where, count = rows(active)
        flipped = (previous != new) & where
        return flipped.sum(1).float() / count

    return change


def relative_change(
    to_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Change:
    """Diffusion: ‖x̂0_k − x̂0_{k−1}‖ / ‖x̂0_{k−1}‖ per sample. With ``to_x0(prediction, active)``
    (the network output of the active samples → x̂0) it compares predictions; without, it compares
    summaries that already are x̂0 (``summarise=to_x0`` in :func:`run_adaptive`: each prediction
    converted once, not twice)."""

    def change(previous: torch.Tensor, new: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        if to_x0 is not None:
            previous, new = to_x0(previous, active), to_x0(new, active)
        old, cur = previous.flatten(1), new.flatten(1)
        return (cur - old).norm(dim=1) / old.norm(dim=1).clamp(min=1e-8)

    return change
