"""Exponential moving average of a model's weights. Sampling (grids, ``elt sample``, ``elt.load``)
uses the EMA copy by default, and every checkpoint stores it (``ema.safetensors``).

Under FSDP the averages are sharded like the parameters (no full copy on any rank).

Warm start: the effective decay at update n is ``min(decay, (1 + n) / (10 + n))`` — 0.18 at the
first update, 0.5 at the eighth, reaching 0.999 after about 9k updates. Early on the average
therefore follows the model closely instead of staying anchored to the random initialisation, so EMA
samples are usable from the first grids of a run. The update count is part of the checkpoint, so a
resumed run continues the same schedule."""

from __future__ import annotations

import copy

import torch
from torch import nn

from elt.train.distributed import is_sharded, shard_like


def _plain_modules(model: nn.Module) -> dict[int, nn.Module]:
    """Modules held as plain attributes (a frozen VAE): not part of the weights, shared by every
    copy."""
    return {id(value): value for value in vars(model).values() if isinstance(value, nn.Module)}


def meta_skeleton(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose state-dict tensors live on the meta device (no memory): the
    architecture to rebuild a full EMA module from gathered averages. Non-persistent buffers (fixed
    positional tables) keep their values; plain-attribute modules (a frozen VAE) are shared, not
    copied."""
    skeleton = copy.deepcopy(model, memo=_plain_modules(model))
    for module in skeleton.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and not param.is_meta:
                module._parameters[name] = nn.Parameter(
                    param.detach().to("meta"), requires_grad=False
                )
        for name, buffer in list(module._buffers.items()):
            if (
                buffer is not None
                and name not in module._non_persistent_buffers_set
                and not buffer.is_meta
            ):
                module._buffers[name] = buffer.to("meta")
    return skeleton.eval().requires_grad_(False)


class EMA:
    """Keeps the ``decay``-weighted running averages of ``model``'s weights.

    One process or DDP (``keep_shadow=True``): ``shadow`` is a frozen full copy of the model holding
    them.
    FSDP (``keep_shadow=False``, then :meth:`track_sharded` after ``fully_shard``): the averages are
    DTensors sharded exactly like the parameters — 1/world of the model per rank — and no full copy
    exists; :meth:`materialize` gathers a full ``shadow`` on demand (grids) and :meth:`release`
    frees it again. Checkpoints save and load the sharded averages directly (:meth:`averages`)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, keep_shadow: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._sharded: dict[str, torch.Tensor] | None = None
        self._skeleton: nn.Module | None = None
        self.shadow: nn.Module | None = None
        if keep_shadow:
            self.shadow = copy.deepcopy(model).eval()
            self.shadow.requires_grad_(False)
        else:
            self._skeleton = meta_skeleton(model)

    def track_sharded(self, model: nn.Module) -> None:
        """Average ``model``'s (sharded) tensors in place of a full shadow; call after
        ``fully_shard``. Only this rank's shards are copied."""
        self._sharded = {name: value.detach().clone() for name, value in model.state_dict().items()}
        if (
            self._skeleton is None and self.shadow is not None
        ):  # built with a shadow: keep only its layout
            self._skeleton = meta_skeleton(self.shadow)
        self.shadow = None

    def _averages(self) -> dict[str, torch.Tensor]:
        if self._sharded is not None:
            return self._sharded
        assert self.shadow is not None
        return self.shadow.state_dict()

    def averages(self) -> dict[str, torch.Tensor]:
        """The live running averages (sharded like the model under FSDP); loading into them in place
        restores the EMA (sharded checkpoints)."""
        return self._averages()

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.release()  # a shadow gathered for a grid is stale from now on: free it (FSDP)
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
            torch._foreach_lerp_(
                averages, targets, weight
            )  # one fused kernel launch per group, not per tensor
        else:
            for value, new in zip(averages, targets, strict=True):
                value.lerp_(new, weight)

    @torch.no_grad()
    def materialize(self) -> nn.Module:
        """A full module holding the current averages. Under FSDP it is gathered now (a collective:
        every rank must call it) into a fresh module — the full model's memory until
        :meth:`release`."""
        if self._sharded is None:
            assert self.shadow is not None
            return self.shadow
        assert self._skeleton is not None
        full = {
            name: (value.full_tensor() if is_sharded(value) else value).detach().clone()
            for name, value in self._sharded.items()
        }
        shadow = copy.deepcopy(self._skeleton, memo=_plain_modules(self._skeleton))
        shadow.load_state_dict(full, assign=True)
        device = next(iter(full.values())).device if full else torch.device("cpu")
        self.shadow = shadow.to(device).eval().requires_grad_(False)
        return self.shadow

    def release(self) -> None:
        """Free a shadow :meth:`materialize` gathered under FSDP (no-op otherwise)."""
        if self._sharded is not None:
            self.shadow = None

    @torch.no_grad()
    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Restore the averages from full (saved) weights."""
        if self._sharded is not None:
            for name, value in self._sharded.items():
                value.copy_(shard_like(weights[name], value))
            self.shadow = None
        else:
            assert self.shadow is not None
            self.shadow.load_state_dict(weights)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
