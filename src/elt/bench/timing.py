"""Measurement: interleaved timing of compared variants, and training memory accounted from saved
tensors."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from elt.bench.models import BenchModel, build_model, make_train_step
from elt.core.ilsd import ilsd_loss
from elt.runtime import autocast_context


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin after ``warmup``
    calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# -- memory ----------------------------------------------------------------------------------------
def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def saved_activation_bytes(
    model: BenchModel, mode: str, args: argparse.Namespace, device: torch.device
) -> int:
    """Bytes autograd keeps for the backward pass of one training forward (parameters excluded),
    counted exactly with saved-tensor hooks: device-independent, so it is measured on CPUs too."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    data = model.make_batch(args.batch, device)
    sampler_loops = args.loops - 1 if mode == "ilsd" else None
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        autocast_context(device, args.precision),
    ):
        out = model.states(data, exit_loops=[sampler_loops] if sampler_loops else [])
        teacher = model.head(out.final)
        student = model.head(out.exits[sampler_loops]) if sampler_loops else None
        terms = ilsd_loss(
            teacher,
            student,
            lambda p: model.gt_loss(p, data),
            model.distill_loss,
            0.5,
            sampler_loops,
        )
    del terms, out, teacher, student
    return sum(seen.values())


def memory_row(
    args: argparse.Namespace, mode: str, device: torch.device, checkpoint_loops: bool
) -> dict[str, Any]:
    model = build_model(args, mode, device, checkpoint_loops=checkpoint_loops)
    step, optimizer = make_train_step(model, mode, args, device)
    params = tensor_bytes(model.parameters())
    activations = saved_activation_bytes(model, mode, args, device)
    if (
        checkpoint_loops
    ):  # the backward pass recomputes one loop at a time: add one loop's activations
        model.backbone.checkpoint_loops = False
        activations += saved_activation_bytes(model, mode, args, device) // model.backbone.loops
        model.backbone.checkpoint_loops = True
    row = {
        "mode": mode,
        "checkpoint_loops": checkpoint_loops,
        "layers": len(model.backbone.blocks),
        "loops": model.backbone.loops,
        "params": sum(p.numel() for p in model.parameters()),
        "param_mib": params / 2**20,
        "grad_mib": params / 2**20,
        "adam_mib": 2 * params / 2**20,
        "activation_mib": activations / 2**20,
    }
    row["accounted_mib"] = (
        row["param_mib"] + row["grad_mib"] + row["adam_mib"] + row["activation_mib"]
    )
    if device.type == "cuda":
        step()  # optimizer state allocated
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        row["measured_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    del model, step, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return my - slope * mx, slope
