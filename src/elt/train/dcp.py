"""Sharded training state with ``torch.distributed.checkpoint`` (``train.checkpoint_format=dcp``).

Every rank writes its own shards of the weights, the optimizer state and the EMA in parallel (no gather of
the optimizer state on rank 0), and a checkpoint loads onto any number of processes: DCP re-shards on load
(a 2-process FSDP checkpoint resumes in 1 process, or in 8). The checkpoint directory keeps its usual files
for sampling (``model.safetensors``, ``ema.safetensors``, gathered by rank 0) beside ``sharded/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

SHARDED_DIR = "sharded"


def sharded_state(generator: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  ema_tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The state DCP writes/reads in place: weights and optimizer state as this rank holds them (DTensor
    shards under FSDP, whole tensors otherwise) and the EMA's running averages (laid out like the weights)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(generator, optimizer)
    return {"model": model_state, "optimizer": optimizer_state, "ema": ema_tensors}


def save_sharded(folder: str | Path, generator: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 ema_tensors: dict[str, torch.Tensor]) -> None:
    """Every rank calls it (a collective under torchrun)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(sharded_state(generator, optimizer, ema_tensors), checkpoint_id=str(folder))


def load_sharded(folder: str | Path, generator: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 ema_tensors: dict[str, torch.Tensor]) -> None:
    """Load ``folder`` into the live weights, optimizer and EMA (every rank calls it; any process count)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = sharded_state(generator, optimizer, ema_tensors)
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(generator, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
