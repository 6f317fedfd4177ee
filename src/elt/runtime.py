"""Where and how tensors run: device choice, precision (autocast), seeding. The bottom layer: no elt imports.

One precision vocabulary everywhere: ``fp32`` | ``bf16`` | ``auto`` (bf16 on CUDA, fp32 elsewhere).
"""

from __future__ import annotations

import os
import random
from contextlib import nullcontext

import numpy as np
import torch

PRECISIONS = ("fp32", "bf16", "auto")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA if present, else CPU. Under torchrun every process takes ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", local_rank)
    return device


def uses_bf16(device: torch.device, precision: str) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast when ``precision`` asks for it on this device, else a no-op context."""
    if uses_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
