"""Throughput accounting: analytic training FLOPs, model-FLOPs utilisation (MFU) and memory.

MFU = achieved model FLOP/s ÷ the device's dense peak. Model FLOPs are the backbone's matmul FLOPs
(``LoopedTransformer.flops_per_token``) × 3 for forward + backward, counted once per sample whatever
the implementation recomputes (activation checkpointing does not raise MFU), as in the PaLM/nanoGPT
convention. Embeddings, heads and ILSD's extra head application are left out: they are small next to
N·L blocks, so MFU is a slight underestimate. Devices without a known peak report ``None`` ("n/a")
rather than a guessed number; ``logging.peak_tflops`` supplies one."""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch
from torch import nn

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets, matched by device-name
# substring in this order (the more specific names first).
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("A100", 312.0),
)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine() or device.type


def peak_flops(device: torch.device, bf16: bool, override_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of one device for this precision, or ``None`` where we do not know it."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if device.type != "cuda" or not bf16:
        return None
    name = device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def mfu(
    flops_per_sample: float | None, samples_per_s: float, world_size: int, peak: float | None
) -> float | None:
    if not flops_per_sample or not peak:
        return None
    return flops_per_sample * samples_per_s / (world_size * peak)


class FlopCounter:
    """Counts the backbone's model FLOPs per sample of one training step, whatever the paradigm
    does.

    A forward pre-hook on the looped backbone sees every call's token count (prefix tokens included)
    and loop count; calls under autograd count 3× (forward + backward), calls without it 1×. Attach
    before a step, read ``flops_per_sample`` and ``tokens_per_sample`` after it, then ``detach``.
    """

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        self.flops = 0.0
        self.tokens = 0
        self.samples = 0
        self._handle = backbone.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        x = args[0] if args else kwargs["x"]
        loops = kwargs.get("loops", args[2] if len(args) > 2 else None)
        prefix = kwargs.get("prefix", args[4] if len(args) > 4 else None)
        tokens = x.shape[1] + (prefix.shape[1] if prefix is not None else 0)
        factor = 3 if torch.is_grad_enabled() else 1
        self.flops += factor * module.flops_per_token(tokens, loops) * tokens * x.shape[0]
        if not self.samples:
            self.samples, self.tokens = x.shape[0], tokens

    @property
    def flops_per_sample(self) -> float | None:
        return self.flops / self.samples if self.samples else None

    @property
    def tokens_per_sample(self) -> int | None:
        return self.tokens or None

    def detach(self) -> None:
        self._handle.remove()


def memory_record(device: torch.device, reset: bool = True) -> dict[str, float]:
    """Peak memory since the last reset: CUDA allocator peak (GiB) on GPUs, process peak RSS (MiB)
    on CPUs."""
    if device.type == "cuda":
        record = {
            "mem_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "mem_reserved_gib": torch.cuda.memory_reserved(device) / 2**30,
        }
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return record
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss_peak_mib": peak_kib / (1024 * 1024 if sys.platform == "darwin" else 1024)}
