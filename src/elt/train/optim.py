"""The training optimizer: AdamW, with optional weight-decay exemptions by parameter kind.

``optimizer.weight_decay_exempt`` lists the kinds of parameters that get no weight decay:

* ``bias`` — every parameter named ``bias`` (linear, convolution and normalisation biases);
* ``norm`` — the parameters of normalisation layers (LayerNorm, GroupNorm, RMSNorm, BatchNorm
  scales);
* ``embedding`` — embedding tables (``nn.Embedding``: tokens, classes) and learned position tables
  (parameters held directly by a module under a name containing ``pos``, e.g. ``pos_embed``).

MAGVIT exempts exactly these (``bias``, ``scale``, ``embedding``, ``embed_pos`` in
``videogvt/train_lib/maskgvt_train_lib.py``, ``get_optimizer``) and decays only weight matrices.
With an empty list (the default) every parameter is decayed in one group, as before, so checkpoints
of earlier runs resume unchanged."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from omegaconf import DictConfig
from torch import nn

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)
if hasattr(nn, "RMSNorm"):
    NORM_TYPES = (*NORM_TYPES, nn.RMSNorm)


def parameter_kinds(model: nn.Module) -> dict[int, set[str]]:
    """``id(parameter)`` → the kinds (``bias``, ``norm``, ``embedding``) it belongs to (possibly
    none)."""
    kinds: dict[int, set[str]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            found = kinds.setdefault(id(param), set())
            if name == "bias":
                found.add("bias")
            if isinstance(module, NORM_TYPES):
                found.add("norm")
            if isinstance(module, nn.Embedding) or "pos" in name:
                found.add("embedding")
    return kinds


def param_groups(
    model: nn.Module,
    params: Iterable[nn.Parameter],
    weight_decay: float,
    exempt: Iterable[str] = (),
) -> list[dict]:
    """``params`` (parameters of ``model``) split into a decayed group and a group without decay for
    the kinds in ``exempt``; a single group when nothing is exempt (or nothing matches)."""
    params = list(params)
    exempt = set(exempt)
    if not exempt:
        return [{"params": params, "weight_decay": weight_decay}]
    kinds = parameter_kinds(model)
    unknown = [p for p in params if id(p) not in kinds]
    if unknown:
        raise ValueError(f"{len(unknown)} parameters to optimise are not parameters of the model")
    decayed = [p for p in params if not kinds[id(p)] & exempt]
    free = [p for p in params if kinds[id(p)] & exempt]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if free:
        groups.append({"params": free, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module, params: Iterable[nn.Parameter], cfg: DictConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over ``params`` of ``model`` with ``optimizer.lr``, ``optimizer.betas``,
    ``optimizer.weight_decay`` (minus the exempt kinds of ``optimizer.weight_decay_exempt``); fused
    on CUDA."""
    o = cfg.optimizer
    groups = param_groups(model, params, o.weight_decay, o.get("weight_decay_exempt") or ())
    return torch.optim.AdamW(
        groups,
        lr=o.lr,
        betas=tuple(o.betas),
        weight_decay=o.weight_decay,
        **({"fused": True} if device.type == "cuda" else {}),
    )
