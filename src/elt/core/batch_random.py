"""Training randomness keyed by the global sample index, so N processes draw what 1 process draws.

A training step of global batch B is split over W ranks: rank r holds the items at global positions
r, r + W, r + 2W, ... of the step's batch (:class:`elt.train.distributed.ShardedSampler`). Inside
:func:`keyed_draws` every draw of a training loss (diffusion times and noise, token masks, label
dropout) is made for the whole global batch from a generator seeded by (run seed, step, draw number)
and this rank keeps its own rows. So the item at global position g gets the same noise, mask and
dropout whatever the number of processes, and a W-process step computes the same per-item losses as
one process; the gradients then differ only by float reduction order. Resuming is exact for these
draws by construction (they depend on the step, not on a stream position).

Outside :func:`keyed_draws` (tests, direct calls) the helpers fall back to the global RNG.

Cost: each rank draws the random numbers of the whole global batch (W× a local draw), which is small
next to the forward pass (for a 256-item batch of 4×32×32 latents: 1M normal numbers per step)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass
class _Keyed:
    seed: int
    step: int
    rows: torch.Tensor  # this rank's global positions within the step's batch
    global_batch: int
    draws: int = field(default=0)

    def generator(self, device: torch.device) -> torch.Generator:
        self.draws += 1
        mixed = ((self.seed * 1_000_003 + self.step) * 1_009 + self.draws) % (2**63 - 1)
        return torch.Generator(device=device).manual_seed(mixed)


_ACTIVE: list[_Keyed] = []


@contextmanager
def keyed_draws(
    seed: int, step: int, rows: Sequence[int] | torch.Tensor, global_batch: int
) -> Iterator[None]:
    """Within the block, :func:`rand` / :func:`randn` draw per global sample index (see the module
    doc)."""
    rows = torch.as_tensor(rows, dtype=torch.long)
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= global_batch):
        raise ValueError(f"rows {rows.tolist()[:4]}... must lie in 0..{global_batch - 1}")
    _ACTIVE.append(_Keyed(seed, step, rows, global_batch))
    try:
        yield
    finally:
        _ACTIVE.pop()


def active() -> bool:
    return bool(_ACTIVE)


def _draw(
    kind: str, batch: int, shape: tuple[int, ...], device: torch.device | str, dtype
) -> torch.Tensor:
    device = torch.device(device)
    if not _ACTIVE:
        make = torch.rand if kind == "rand" else torch.randn
        return make((batch, *shape), device=device, dtype=dtype)
    keyed = _ACTIVE[-1]
    if batch != len(keyed.rows):
        raise ValueError(
            f"a keyed draw for {batch} items inside a step whose rank holds {len(keyed.rows)}"
        )
    make = torch.rand if kind == "rand" else torch.randn
    full = make(
        (keyed.global_batch, *shape), device=device, dtype=dtype, generator=keyed.generator(device)
    )
    return full[keyed.rows.to(device)]


def rand_global(
    batch: int, *shape: int, device: torch.device | str = "cpu", dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """U[0, 1) numbers for the whole global batch (global_batch × ``shape``) and the rows of this
    rank's ``batch`` items in it; outside a step: ``batch`` rows and ``arange(batch)``. For
    quantities that need the whole step's draws on every rank (e.g. the number of masked tokens of
    the global batch)."""
    device = torch.device(device)
    if not _ACTIVE:
        return torch.rand((batch, *shape), device=device, dtype=dtype), torch.arange(
            batch, device=device
        )
    keyed = _ACTIVE[-1]
    if batch != len(keyed.rows):
        raise ValueError(
            f"a keyed draw for {batch} items inside a step whose rank holds {len(keyed.rows)}"
        )
    full = torch.rand(
        (keyed.global_batch, *shape), device=device, dtype=dtype, generator=keyed.generator(device)
    )
    return full, keyed.rows.to(device)


def rank_share() -> float:
    """This rank's share of the step's global batch (1 / world size; 1 outside a step). A loss
    normalised by a global count is scaled by ``1 / rank_share()`` so that DDP's mean over ranks is
    the global mean."""
    if not _ACTIVE:
        return 1.0
    return len(_ACTIVE[-1].rows) / _ACTIVE[-1].global_batch


def rand(
    batch: int, *shape: int, device: torch.device | str = "cpu", dtype=torch.float32
) -> torch.Tensor:
    """U[0, 1) numbers, ``batch`` × ``shape``: row i belongs to this rank's i-th item."""
    return _draw("rand", batch, tuple(shape), device, dtype)


def randn(
    batch: int, *shape: int, device: torch.device | str = "cpu", dtype=torch.float32
) -> torch.Tensor:
    """Standard normal numbers, ``batch`` × ``shape``: row i belongs to this rank's i-th item."""
    return _draw("randn", batch, tuple(shape), device, dtype)


def randn_like(x: torch.Tensor) -> torch.Tensor:
    return randn(
        x.shape[0], *x.shape[1:], device=x.device, dtype=x.dtype if x.is_floating_point() else None
    )
