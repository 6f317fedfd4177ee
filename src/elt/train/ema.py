"""Exponential moving average of a model's weights (sampling uses the EMA copy by default)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a frozen copy of ``model`` whose float weights track ``decay``-weighted averages.

    Warm start: for the first steps the effective decay is ``min(decay, (1 + step) / (10 + step))`` so the
    average is not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        self.shadow.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        source = model.state_dict()
        for name, value in self.shadow.state_dict().items():
            new = source[name]
            if value.dtype.is_floating_point:
                value.lerp_(new.to(value.dtype), 1.0 - decay)
            else:
                value.copy_(new)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
