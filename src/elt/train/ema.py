"""Exponential moving average of a model's weights. Sampling (grids, ``elt sample``, ``elt.load``) uses
the EMA copy by default, and every checkpoint stores it (``ema.safetensors``).

Warm start: the effective decay at update n is ``min(decay, (1 + n) / (10 + n))`` — 0.18 at the first
update, 0.5 at the eighth, reaching 0.999 after about 9k updates. Early on the average therefore follows
the model closely instead of staying anchored to the random initialisation, so EMA samples are usable
from the first grids of a run. The update count is part of the checkpoint, so a resumed run continues
the same schedule.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from elt.train.distributed import is_sharded, shard_like


class EMA:
    """Keeps ``shadow``, a frozen copy of ``model`` whose float weights track ``decay``-weighted averages.

    Under FSDP the running averages are kept sharded like the model (:meth:`track_sharded`), and
    :meth:`materialize` gathers them into ``shadow`` before sampling or saving (a collective).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        self.shadow.requires_grad_(False)
        self.updates = 0
        self._sharded: dict[str, torch.Tensor] | None = None

    def track_sharded(self, model: nn.Module) -> None:
        """Average ``model``'s (sharded) tensors in place of the shadow's; call after ``fully_shard``."""
        self._sharded = {name: value.detach().clone() for name, value in model.state_dict().items()}

    def _averages(self) -> dict[str, torch.Tensor]:
        return self._sharded if self._sharded is not None else self.shadow.state_dict()

    def averages(self) -> dict[str, torch.Tensor]:
        """The live running averages (sharded like the model under FSDP); loading into them in place
        restores the EMA (sharded checkpoints)."""
        return self._averages()

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - self.current_decay()
        source = model.state_dict()
        averages, targets = [], []
        for name, value in self._averages().items():
            new = source[name]
            if value.dtype.is_floating_point and value.dtype == new.dtype:
                averages.append(value)
                targets.append(new)
            elif value.dtype.is_floating_point:
                value.lerp_(new.to(value.dtype), weight)
            else:
                value.copy_(new)
        if averages and self._sharded is None:
            torch._foreach_lerp_(averages, targets, weight)  # one fused kernel launch per group, not per tensor
        else:
            for value, new in zip(averages, targets, strict=True):
                value.lerp_(new, weight)

    @torch.no_grad()
    def materialize(self) -> nn.Module:
        """``shadow`` with the current averages (gathers them under FSDP: every rank must call it)."""
        if self._sharded is not None:
            target = self.shadow.state_dict()
            for name, value in self._sharded.items():
                target[name].copy_(value.full_tensor() if is_sharded(value) else value)
        return self.shadow

    @torch.no_grad()
    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Restore the averages from full (saved) weights."""
        self.shadow.load_state_dict(weights)
        if self._sharded is not None:
            for name, value in self._sharded.items():
                value.copy_(shard_like(weights[name], value))

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
