"""Where and how tensors run: device choice, CPU threads, precision (autocast), seeding. The bottom
layer: imports only elt.errors.

One precision vocabulary everywhere: ``fp32`` | ``bf16`` | ``auto`` (bf16 on CUDA, fp32 elsewhere).

One thread setting for every command (:func:`set_threads`): ``elt --threads N`` (which sets
``ELT_THREADS`` for the process and its children) > ``ELT_THREADS`` > a config's ``train.threads`` >
``OMP_NUM_THREADS`` > the default, half the CPUs this process may use (at least 1). The default
leaves room for one other job: PyTorch's own default (every core) collapses when another CPU-bound
process runs, because its OpenMP threads wait for each other at every operation."""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from elt.errors import (
    ConfigError,
    UserError,
)  # the very bottom (imports nothing): runtime stays bottom-layer

PRECISIONS = ("fp32", "bf16", "auto")
THREADS_ENV = "ELT_THREADS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """Half the available CPUs, at least 1: near full speed alone, and no collapse beside one other
    job."""
    return max(1, available_cpus() // 2)


def resolve_threads(requested: int | None = None, config: int | None = None) -> tuple[int, str]:
    """``(threads, where the number came from)``; ``requested``/``config`` of ``None`` or 0 mean
    unset."""
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
    """Apply the thread setting (see the module docstring for the order) to PyTorch; returns the
    count."""
    threads, _ = resolve_threads(requested, config)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


class DeviceError(UserError, ValueError):
    """An unknown or unavailable device name (the CLI prints it as one line, exit 2)."""


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` → CUDA if present, else CPU. Under torchrun every process takes ``cuda:LOCAL_RANK``
    (``local_rank`` defaults to the ``LOCAL_RANK`` torchrun sets, so callers that do not pass it —
    ``elt.load``, the metric extractors — do not put every rank on GPU 0).

    An unknown name, or a device this machine does not have, is a :class:`DeviceError` naming it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(str(name))
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {name!r}; allowed: {DEVICE_CHOICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} is not available: this machine has no CUDA GPU usable by torch "
                "(use cpu or auto)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} is not available: this machine has {torch.cuda.device_count()} "
                f"CUDA device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"device {name!r} is not available on this machine (use cpu or auto)")
    elif device.type != "cpu":
        raise DeviceError(f"device {name!r} is not supported; allowed: {DEVICE_CHOICES}")
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device(
            "cuda", int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
        )
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


# -- process groups: timeout and collective timing -------------------------------------------------
DIST_TIMEOUT_ENV = "ELT_DIST_TIMEOUT_S"
DEFAULT_DIST_TIMEOUT_S = 600.0  # PyTorch's own NCCL default (10 minutes)
COLLECTIVE_LOG_ENV = "ELT_COLLECTIVE_LOG"
TIMED_COLLECTIVES = (
    "barrier",
    "all_reduce",
    "all_gather",
    "all_gather_object",
    "gather",
    "gather_object",
    "broadcast",
    "broadcast_object_list",
    "reduce",
    "reduce_scatter",
    "scatter_object_list",
)


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's global RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "cpu": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def dist_timeout_seconds(configured: float | None = None) -> float:
    """The process-group timeout: ``ELT_DIST_TIMEOUT_S`` if set, else ``configured``
    (``distributed.timeout_s``), else 600 s. A collective that waits longer fails the run (every
    rank) instead of hanging it."""
    import math

    raw = os.environ.get(DIST_TIMEOUT_ENV)
    source = DIST_TIMEOUT_ENV if raw else "distributed.timeout_s"
    try:
        value = (
            float(raw)
            if raw
            else float(DEFAULT_DIST_TIMEOUT_S if configured is None else configured)
        )
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{source}={raw if raw else configured!r} is not allowed; use a number of seconds > 0"
        )
    return value


class CollectiveTimer:
    """Wall time this process spends inside each ``torch.distributed`` collective (waiting for the
    slowest rank plus the transfer): the longest single call, its name, the count and the total.
    Installed by :func:`init_process_group` when ``ELT_COLLECTIVE_LOG`` names a folder; at exit the
    record (with this process's peak RSS) is written there as ``collectives_rank{R}_pid{P}.json``
    (the cluster rehearsal reads it)."""

    def __init__(self) -> None:
        self.max_s, self.max_op, self.calls, self.total_s = 0.0, None, 0, 0.0
        self.installed = False

    def wrap(self, name: str, function):
        import functools
        import time

        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.calls += 1
                self.total_s += elapsed
                if elapsed > self.max_s:
                    self.max_s, self.max_op = elapsed, name

        timed.__elt_timed__ = True
        return timed

    def install(self, folder: str) -> None:
        import atexit

        import torch.distributed as dist

        if self.installed:
            return
        for name in TIMED_COLLECTIVES:
            function = getattr(dist, name, None)
            if function is not None and not getattr(function, "__elt_timed__", False):
                setattr(dist, name, self.wrap(name, function))
        self.installed = True
        atexit.register(self.write, folder)

    def record(self) -> dict:
        import resource
        import sys

        return {
            "rank": int(os.environ.get("RANK", "0")),
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "pid": os.getpid(),
            "argv": sys.argv[1:4],
            "max_wait_s": round(self.max_s, 4),
            "max_op": self.max_op,
            "calls": self.calls,
            "total_wait_s": round(self.total_s, 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }

    def write(self, folder: str) -> None:
        import json

        path = os.path.join(
            folder, f"collectives_rank{os.environ.get('RANK', '0')}_pid{os.getpid()}.json"
        )
        try:
            os.makedirs(folder, exist_ok=True)
            with open(path + ".tmp", "w") as handle:
                json.dump(self.record(), handle)
            os.replace(path + ".tmp", path)
        except OSError:
            pass


COLLECTIVE_TIMER = CollectiveTimer()


def init_process_group(device: torch.device, timeout_s: float | None = None) -> None:
    """``torch.distributed.init_process_group`` for this device (NCCL on CUDA, gloo elsewhere) with
    the timeout of :func:`dist_timeout_seconds`; times the collectives when ``ELT_COLLECTIVE_LOG``
    is set."""
    import datetime

    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=dist_timeout_seconds(timeout_s))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    if os.environ.get(COLLECTIVE_LOG_ENV):
        COLLECTIVE_TIMER.install(os.environ[COLLECTIVE_LOG_ENV])
