"""Where and how tensors run: device choice, CPU threads, precision (autocast), seeding. The bottom layer:
imports only elt.errors.

One precision vocabulary everywhere: ``fp32`` | ``bf16`` | ``auto`` (bf16 on CUDA, fp32 elsewhere).

One thread setting for every command (:func:`set_threads`): ``elt --threads N`` (which sets ``ELT_THREADS``
for the process and its children) > ``ELT_THREADS`` > a config's ``train.threads`` > ``OMP_NUM_THREADS`` >
the default, half the CPUs this process may use (at least 1). The default leaves room for one other job:
PyTorch's own default (every core) collapses when another CPU-bound process runs, because its OpenMP
threads wait for each other at every operation.
"""

from __future__ import annotations

import os
import random
from contextlib import nullcontext

import numpy as np
import torch

from elt.errors import ConfigError, UserError  # the very bottom (imports nothing): runtime stays bottom-layer

PRECISIONS = ("fp32", "bf16", "auto")
THREADS_ENV = "ELT_THREADS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """Half the available CPUs, at least 1: near full speed alone, and no collapse beside one other job."""
    return max(1, available_cpus() // 2)


def resolve_threads(requested: int | None = None, config: int | None = None) -> tuple[int, str]:
    """``(threads, where the number came from)``; ``requested``/``config`` of ``None`` or 0 mean unset."""
    if requested:
        if requested < 1:
            raise ConfigError(f"threads={requested} must be >= 1")
        return int(requested), "--threads"
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"{THREADS_ENV}={env!r} must be an integer >= 1")
        return value, THREADS_ENV
    if config:
        if config < 0:
            raise ConfigError(f"train.threads={config} must be >= 0 (0: the default)")
        return int(config), "train.threads"
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    return default_threads(), "default"


def set_threads(requested: int | None = None, config: int | None = None) -> int:
    """Apply the thread setting (see the module docstring for the order) to PyTorch; returns the count."""
    threads, _ = resolve_threads(requested, config)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


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
