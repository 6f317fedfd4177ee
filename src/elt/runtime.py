"""Where and how tensors run: device choice, precision (autocast), seeding. The bottom layer: imports only
elt.errors.

One precision vocabulary everywhere: ``fp32`` | ``bf16`` | ``auto`` (bf16 on CUDA, fp32 elsewhere).
"""

from __future__ import annotations

import os
import random
from contextlib import nullcontext

import numpy as np
import torch

from elt.errors import UserError  # the very bottom (imports nothing): runtime stays a bottom-layer module

PRECISIONS = ("fp32", "bf16", "auto")


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


class DeviceError(UserError, ValueError):
    """An unknown or unavailable device name (the CLI prints it as one line, exit 2)."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA if present, else CPU. Under torchrun every process takes ``cuda:LOCAL_RANK``.

    An unknown name, or a device this machine does not have, is a :class:`DeviceError` naming it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(str(name))
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {name!r}; allowed: {DEVICE_CHOICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} is not available: this machine has no CUDA GPU usable by torch "
                              "(use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} is not available: this machine has {torch.cuda.device_count()} "
                              f"CUDA device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"device {name!r} is not available on this machine (use cpu or auto)")
    elif device.type != "cpu":
        raise DeviceError(f"device {name!r} is not supported; allowed: {DEVICE_CHOICES}")
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
