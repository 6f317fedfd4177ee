"""Encode a dataset once into a memory-mapped array (tokens or latents), keyed by what produced it.

The cache file ``NAME.npy`` sits beside ``NAME.json``, which records a key (e.g. the tokenizer's
hash, the dataset, the image size). A cache whose key differs from the requested one is rebuilt,
never used silently. Writing goes to a temporary file renamed into place, so an interrupted encode
leaves no half-written cache under the final name. ``NAME.json`` is the cache's manifest: besides
the key it records the count, item shape and dtype (all checked before a cache is used) and how many
unreadable items were skipped. ``elt prepare`` (:mod:`elt.data.prepare`) builds the same files with
several processes."""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from elt.errors import UserError
from elt.fileio import write_json

_SOLO_BUILDS_REFUSED: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "elt_solo_builds", default=None
)


class SoloBuildRefused(UserError):
    """A cache (or tokenizer) is missing where building it would leave one process working alone
    while the others wait inside a collective (``elt train`` under torchrun): build it first with
    ``elt prepare``."""


@contextmanager
def refuse_solo_builds(advice: str) -> Iterator[None]:
    """Inside this context a missing or stale cache is not built by :func:`build_cache` (nor a
    missing tokenizer trained) but refused with one line ending in ``advice`` (what to run
    instead)."""
    token = _SOLO_BUILDS_REFUSED.set(advice)
    try:
        yield
    finally:
        _SOLO_BUILDS_REFUSED.reset(token)


def check_solo_build(what: str) -> None:
    """Raise :class:`SoloBuildRefused` for ``what`` (e.g. "the cache X is missing") inside
    :func:`refuse_solo_builds`; nothing otherwise."""
    advice = _SOLO_BUILDS_REFUSED.get()
    if advice is not None:
        raise SoloBuildRefused(f"{what}; {advice}")


def state_dict_hash(module: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a module's weights: identifies a tokenizer/VAE exactly."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


CORE_FIELDS = ("key", "count", "item_shape", "dtype")


@dataclass
class CacheSpec:
    """What a cache holds and how to build it: ``encode(start, stop)`` returns items ``start..stop``
    (random access, so ranges can be encoded by several processes: ``elt prepare``);
    ``skipped(array)`` counts the unreadable items an encoded block marks (optional).

    A spec may also name its raw ``items`` (a dataset whose items a DataLoader collates) and
    ``encode_batch(collated) -> block``: then :func:`encode_blocks` decodes the items in
    ``num_workers`` DataLoader worker processes while this process encodes, and ``encode`` is not
    needed for that path. ``info`` holds facts written into the manifest that do not key the cache
    (e.g. the encoder's precision)."""

    path: Path  # without suffix: NAME.npy (the array) and NAME.json (its manifest)
    key: dict[str, Any]
    count: int
    item_shape: tuple[int, ...]
    dtype: Any
    encode: Callable[[int, int], np.ndarray]
    batch_size: int = 256
    skipped: Callable[[np.ndarray], int] | None = None
    items: Any = (
        None  # torch Dataset of raw items, decoded in DataLoader workers (with encode_batch)
    )
    encode_batch: Callable[[Any], np.ndarray] | None = None
    num_workers: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "count": self.count,
            "item_shape": list(self.item_shape),
            "dtype": np.dtype(self.dtype).str,
        }


def read_cache(spec: CacheSpec, warn_stale: bool = True) -> np.ndarray | None:
    """The cache's read-only memmap if its manifest matches ``spec`` (the producer's hash, the data,
    count, shapes, dtype), else ``None``; a cache built by something else is named in a warning,
    never used."""
    array_path, meta_path = spec.path.with_suffix(".npy"), spec.path.with_suffix(".json")
    if not (array_path.is_file() and meta_path.is_file()):
        return None
    try:
        found = json.loads(meta_path.read_text())
        if {k: found.get(k) for k in CORE_FIELDS} == spec.meta():
            array = np.load(array_path, mmap_mode="r")
            if array.shape == (spec.count, *spec.item_shape):
                return array
    except (json.JSONDecodeError, ValueError, OSError):
        found = None
    if warn_stale:
        differs = [
            k for k in CORE_FIELDS if not isinstance(found, dict) or found.get(k) != spec.meta()[k]
        ]
        warnings.warn(
            f"the cache {array_path} was built with other settings "
            f"({', '.join(differs) or 'shape'} "
            "differ); it is rebuilt",
            stacklevel=2,
        )
    return None


def write_manifest(spec: CacheSpec, **extra: Any) -> None:
    """NAME.json: the spec's manifest plus its ``info`` and ``extra`` facts (e.g. skipped items),
    atomically."""
    write_json(spec.path.with_suffix(".json"), {**spec.meta(), **spec.info, **extra})


def encode_blocks(
    spec: CacheSpec, ranges: Sequence[tuple[int, int]]
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, stop, block)`` for every batch of the item ranges, in order, no batch crossing a
    range's end.

    With ``spec.items`` and ``spec.encode_batch``, one DataLoader reads every range
    (``spec.num_workers`` worker processes decode ahead while this process encodes); otherwise
    ``spec.encode`` is called per batch."""
    batches = [
        (begin, min(begin + spec.batch_size, stop))
        for start, stop in ranges
        for begin in range(start, stop, spec.batch_size)
    ]
    if not batches:
        return
    if spec.items is None or spec.encode_batch is None:
        for begin, end in batches:
            yield begin, end, spec.encode(begin, end)
        return
    from torch.utils.data import DataLoader

    workers = max(0, int(spec.num_workers))
    loader = DataLoader(
        spec.items,
        batch_sampler=[list(range(b, e)) for b, e in batches],
        num_workers=workers,
        **({"prefetch_factor": 4, "persistent_workers": False} if workers else {}),
    )
    for (begin, end), collated in zip(batches, loader, strict=True):
        yield begin, end, spec.encode_batch(collated)


def build_cache(spec: CacheSpec, progress: bool = True) -> np.ndarray:
    """Return the cache ``spec`` describes, encoding it in one process if it is missing or stale."""
    found = read_cache(spec, warn_stale=_SOLO_BUILDS_REFUSED.get() is None)
    if found is not None:
        return found
    array_path = spec.path.with_suffix(".npy")
    check_solo_build(f"the cache {array_path} is missing or was built with other settings")
    array_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = array_path.with_name(f".{array_path.stem}.{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=spec.dtype, shape=(spec.count, *spec.item_shape)
    )
    skipped = 0
    with tqdm(total=spec.count, desc=f"encoding {spec.path.name}", disable=not progress) as bar:
        for start, stop, block in encode_blocks(spec, [(0, spec.count)]):
            out[start:stop] = block
            if spec.skipped is not None:
                skipped += spec.skipped(block)
            bar.update(stop - start)
    out.flush()
    del out
    os.replace(tmp, array_path)
    write_manifest(spec, skipped=skipped, processes=1)
    return np.load(array_path, mmap_mode="r")


def cached_encode(
    path: str | Path,
    key: dict[str, Any],
    count: int,
    item_shape: tuple[int, ...],
    dtype,
    encode: Callable[[int, int], np.ndarray],
    batch_size: int = 256,
    progress: bool = True,
) -> np.ndarray:
    """Return a read-only memmap of ``count`` encoded items, building it with ``encode(start,
    stop)`` if the cache at ``path`` (without suffix) is missing or was built with a different
    ``key``."""
    spec = CacheSpec(Path(path), key, count, tuple(item_shape), dtype, encode, batch_size)
    return build_cache(spec, progress=progress)
