"""Sharded training state with ``torch.distributed.checkpoint`` (DCP;
``checkpoint.format=dcp``, the default under FSDP).

Every rank writes its own shards of the weights, the optimizer state and the EMA in parallel
(nothing is gathered), and a checkpoint loads onto any number of processes: DCP re-shards on load (a
2-process FSDP checkpoint resumes in 1 process, or in 8). The checkpoint directory keeps its usual
files for sampling (``model.safetensors``, ``ema.safetensors``) beside ``sharded/``: under FSDP they
are streamed from the shards by :func:`stream_safetensors`, one tensor at a time, so no rank ever
holds the whole model or EMA."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

SHARDED_DIR = "sharded"

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def sharded_state(
    generator: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema_tensors: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """The state DCP writes/reads in place: weights and optimizer state as this rank holds them
    (DTensor shards under FSDP, whole tensors otherwise) and the EMA's running averages (laid out
    like the weights)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(generator, optimizer)
    return {"model": model_state, "optimizer": optimizer_state, "ema": ema_tensors}


def save_sharded(
    folder: str | Path,
    generator: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema_tensors: dict[str, torch.Tensor],
) -> None:
    """Every rank calls it (a collective under torchrun)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(sharded_state(generator, optimizer, ema_tensors), checkpoint_id=str(folder))


def load_sharded(
    folder: str | Path,
    generator: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema_tensors: dict[str, torch.Tensor],
) -> None:
    """Load ``folder`` into the live weights, optimizer and EMA (every rank calls it; any process
    count)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = sharded_state(generator, optimizer, ema_tensors)
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(
        generator, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )


def _header(
    state: dict[str, torch.Tensor], metadata: dict[str, str] | None
) -> tuple[bytes, list[str]]:
    """The safetensors header of ``state`` (global shapes and dtypes: known without gathering)."""
    entries: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset, names = 0, []
    for name, tensor in state.items():
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise TypeError(f"{name}: dtype {tensor.dtype} cannot be written to safetensors")
        size = tensor.numel() * tensor.element_size()
        entries[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
        names.append(name)
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(text)) + text, names


def stream_safetensors(
    path: str | Path | None, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> str | None:
    """Write ``state`` (DTensor shards and/or whole tensors) as one safetensors file at ``path``,
    gathering one tensor at a time: the peak is the largest single tensor, never the model. Every
    rank calls it (each DTensor's gather is a collective); only the rank given a ``path`` writes
    (rank 0; the others pass ``None``).

    Returns the name of the first tensor holding NaN/Inf — the same on every rank, which all see the
    same gathered values — and then stops; the partial file is the caller's to remove."""
    from elt.train.distributed import is_sharded

    state = {name: value for name, value in state.items() if torch.is_tensor(value)}
    header, names = _header(state, metadata)
    handle = open(path, "wb") if path is not None else None
    try:
        if handle is not None:
            handle.write(header)
        for name in names:
            tensor = state[name]
            full = tensor.full_tensor() if is_sharded(tensor) else tensor
            full = full.detach().to("cpu").contiguous()
            if full.is_floating_point() and not bool(torch.isfinite(full).all()):
                return name
            if handle is not None and full.numel():
                handle.write(memoryview(full.reshape(-1).view(torch.uint8).numpy()))
            del full
        if handle is not None:
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        if handle is not None:
            handle.close()
    return None
