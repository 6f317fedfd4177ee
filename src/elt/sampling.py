"""Sampling to disk, the same for every paradigm: ADM-style ``.npz`` per loop count plus a grid PNG."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from elt.core.generator import LoopedGenerator
from elt.visual import save_grid


def balanced_labels(num: int, num_classes: int) -> np.ndarray:
    """``num`` labels cycling over the classes (each class within one of every other)."""
    return np.arange(num) % num_classes


def generate_batched(generator: LoopedGenerator, labels: np.ndarray, loops: int | Sequence[int] | None,
                     batch_size: int = 256, seed: int = 0, steps: int | None = None,
                     guidance: float | None = None, progress: bool = False, desc: str = "") -> np.ndarray:
    """Generate for many labels in batches; batch b uses seed ``seed + b`` (reproducible, order-stable)."""
    chunks = []
    starts = range(0, len(labels), batch_size)
    for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False)):
        chunks.append(generator.generate(labels[start:start + batch_size], loops=loops, steps=steps,
                                         guidance=guidance, seed=seed + b))
    return np.concatenate(chunks) if chunks else np.zeros((0,), np.uint8)


def sample_grid_rows(generator: LoopedGenerator, loop_counts: Sequence[int], per_class: int = 1,
                     seed: int = 0, steps: int | None = None, guidance: float | None = None) -> list[np.ndarray]:
    """One row per loop count, every class ``per_class`` times, with the same seed in every row so rows
    differ only by the loop count."""
    labels = np.repeat(np.arange(generator.num_classes), per_class)
    return [generator.generate(labels, loops=loops, steps=steps, guidance=guidance, seed=seed)
            for loops in loop_counts]


def sample_to_disk(generator: LoopedGenerator, loop_counts: Sequence[int], num: int, out_dir: str | Path,
                   seed: int = 0, steps: int | None = None, guidance: float | None = None,
                   batch_size: int = 256, progress: bool = True) -> dict:
    """Write ``samples_L{L}.npz`` (``arr_0`` uint8 images, ``arr_1`` labels) per loop count, a grid PNG with
    one row per loop count, and ``samples.json`` describing what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = balanced_labels(num, generator.num_classes)
    record = {"num": num, "seed": seed, "steps": steps, "guidance": guidance, "label_policy": "balanced",
              "files": {}, "seconds": {}}
    grid_rows = []
    for loops in tqdm(loop_counts, desc="loop counts", disable=not progress):
        start = time.perf_counter()
        images = generate_batched(generator, labels, loops, batch_size=batch_size, seed=seed, steps=steps,
                                  guidance=guidance, progress=progress, desc=f"L={loops}")
        record["seconds"][str(loops)] = time.perf_counter() - start
        path = out / f"samples_L{loops}.npz"
        np.savez(path, images, labels.astype(np.int64))
        record["files"][str(loops)] = path.name
        per_row = min(len(images), 2 * generator.num_classes)
        order = np.argsort(labels[:per_row], kind="stable")
        grid_rows.append(images[:per_row][order])
    grid = save_grid(out / "grid.png", grid_rows, [f"L={loops}" for loops in loop_counts],
                     title="rows: loop count")
    record["grid"] = grid.name
    (out / "samples.json").write_text(json.dumps(record, indent=2))
    return record
