"""Encode a dataset once into a memory-mapped array (tokens or latents), keyed by what produced it.

The cache file ``NAME.npy`` sits beside ``NAME.json``, which records a key (e.g. the tokenizer's hash,
the dataset, the image size). A cache whose key differs from the requested one is rebuilt, never used
silently. Writing goes to a temporary file renamed into place, so an interrupted encode leaves no
half-written cache under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from elt.fileio import write_json


def state_dict_hash(module: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a module's weights: identifies a tokenizer/VAE exactly."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_encode(path: str | Path, key: dict[str, Any], count: int, item_shape: tuple[int, ...], dtype,
                  encode: Callable[[int, int], np.ndarray], batch_size: int = 256,
                  progress: bool = True) -> np.ndarray:
    """Return a read-only memmap of ``count`` encoded items, building it with ``encode(start, stop)`` if the
    cache at ``path`` (without suffix) is missing or was built with a different ``key``."""
    path = Path(path)
    array_path, meta_path = path.with_suffix(".npy"), path.with_suffix(".json")
    meta = {"key": key, "count": count, "item_shape": list(item_shape), "dtype": np.dtype(dtype).str}
    if array_path.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return np.load(array_path, mmap_mode="r")
        except (json.JSONDecodeError, ValueError):
            pass
    array_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = array_path.with_name(f".{array_path.stem}.{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(count, *item_shape))
    for start in tqdm(range(0, count, batch_size), desc=f"encoding {path.name}", disable=not progress):
        stop = min(start + batch_size, count)
        out[start:stop] = encode(start, stop)
    out.flush()
    del out
    os.replace(tmp, array_path)
    write_json(meta_path, meta)
    return np.load(array_path, mmap_mode="r")
