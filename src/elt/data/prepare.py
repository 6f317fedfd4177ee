"""``elt prepare CONFIG``: encode a training set (image folder, UCF-101, ...) into the latent/token cache the
trainer reads, with several processes under torchrun, resumable after a kill.

    elt prepare imagenet256_masked_elt_l_8x3 data.root=/data/imagenet/train tokenizer.pretrained_path=/models/vq
    torchrun --standalone --nproc_per_node 8 -m elt.cli prepare imagenet256_diffusion_elt_8x4 data.root=...

The cache is cut into shards of ``--shard-size`` items; process r of W encodes shards r, r+W, r+2W, ...
Each finished shard is written under a temporary name and renamed into ``NAME.shards/``, so a kill loses
at most the shards in progress (one per process); a rerun skips the finished ones. When every shard is
there, rank 0 joins them into ``NAME.npy`` and writes the manifest ``NAME.json`` (producer hash, count,
shapes, dtype, unreadable items skipped) that ``elt train`` checks before it uses the cache. Shards of
another tokenizer/VAE or data setting are discarded, never mixed in.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from elt.data.cache import CacheSpec, read_cache, write_manifest
from elt.runtime import init_process_group, resolve_device

DEFAULT_SHARD_SIZE = 4096


def shards_dir(spec: CacheSpec) -> Path:
    return spec.path.with_name(spec.path.name + ".shards")


def shard_ranges(count: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def _shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard_{index:06d}.npy"


def _marker_path(shard: Path) -> Path:
    """Where the unreadable-item count of ``shard`` is kept, beside it."""
    return shard.with_suffix(".skipped")


def _read_marker(path: Path) -> int | None:
    """The unreadable-item count a shard's marker holds, or None when it is missing or unreadable."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _finished(path: Path, rows: int, spec: CacheSpec) -> bool:
    """A shard file that loads with the expected shape and dtype (renamed into place only when complete) and
    whose skipped-count marker reads as a number (renamed into place before the shard)."""
    if not path.is_file() or _read_marker(_marker_path(path)) is None:
        return False
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False
    return array.shape == (rows, *spec.item_shape) and array.dtype == np.dtype(spec.dtype)


def start_shards(spec: CacheSpec, is_main: bool) -> Path:
    """The shard folder of ``spec``; rank 0 empties one left by other settings (call, then barrier)."""
    folder = shards_dir(spec)
    key_file = folder / "key.json"
    if is_main:
        if folder.is_dir():
            try:
                same = json.loads(key_file.read_text()) == spec.meta()
            except (OSError, json.JSONDecodeError):
                same = False
            if not same:
                shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not key_file.is_file():
            tmp = folder / f".key.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(spec.meta(), indent=2))
            os.replace(tmp, key_file)
    return folder


def encode_shards(spec: CacheSpec, rank: int, world: int, shard_size: int, progress: bool = True) -> dict:
    """Encode this rank's unfinished shards. Returns {"encoded": items, "skipped": unreadable, "resumed": shards
    found finished}."""
    folder = shards_dir(spec)
    ranges = shard_ranges(spec.count, shard_size)
    mine = list(range(rank, len(ranges), world))
    todo = [i for i in mine if not _finished(_shard_path(folder, i), ranges[i][1] - ranges[i][0], spec)]
    stats = {"encoded": 0, "skipped": 0, "resumed": len(mine) - len(todo)}
    total = sum(ranges[i][1] - ranges[i][0] for i in todo)
    with tqdm(total=total, desc=f"prepare {spec.path.name} [rank {rank}]", disable=not progress, unit="item",
              dynamic_ncols=True) as bar:
        for index in todo:
            start, stop = ranges[index]
            out = np.empty((stop - start, *spec.item_shape), dtype=spec.dtype)
            skipped = 0
            for begin in range(start, stop, spec.batch_size):
                end = min(begin + spec.batch_size, stop)
                block = spec.encode(begin, end)
                out[begin - start:end - start] = block
                if spec.skipped is not None:
                    skipped += spec.skipped(block)
                bar.update(end - begin)
            # the marker first, both under temporary names: a kill between the renames leaves a marker
            # without its shard (re-encoded on resume), never a shard without a readable marker
            shard = _shard_path(folder, index)
            tmp = folder / f".shard_{index:06d}.{os.getpid()}.tmp.npy"
            _marker_path(tmp).write_text(str(skipped))
            os.replace(_marker_path(tmp), _marker_path(shard))
            np.save(tmp, out)
            os.replace(tmp, shard)
            stats["encoded"] += stop - start
            stats["skipped"] += skipped
    return stats


def join_shards(spec: CacheSpec, shard_size: int, processes: int, seconds: float) -> np.ndarray:
    """Rank 0: the shards → ``NAME.npy`` (temporary name, renamed) and its manifest; the shards are removed."""
    folder = shards_dir(spec)
    ranges = shard_ranges(spec.count, shard_size)
    missing = [i for i, (a, b) in enumerate(ranges) if not _finished(_shard_path(folder, i), b - a, spec)]
    if missing:
        raise RuntimeError(f"{len(missing)} shards of {spec.path.name} are missing (first: {missing[0]}); "
                           "rerun elt prepare to encode them")
    array_path = spec.path.with_suffix(".npy")
    tmp = array_path.with_name(f".{array_path.stem}.{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=spec.dtype, shape=(spec.count, *spec.item_shape))
    skipped = 0
    for index, (start, stop) in enumerate(ranges):
        shard = _shard_path(folder, index)
        out[start:stop] = np.load(shard)
        skipped += _read_marker(_marker_path(shard))  # _finished checked that it reads
    out.flush()
    del out
    os.replace(tmp, array_path)
    write_manifest(spec, skipped=skipped, processes=processes, shard_size=shard_size, created_by="elt prepare",
                   encode_seconds=round(seconds, 3))
    shutil.rmtree(folder, ignore_errors=True)
    return np.load(array_path, mmap_mode="r")


@dataclass(frozen=True)
class _Ranks:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _barrier(ranks: _Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


@contextmanager
def _process_group(device_name: str, timeout_s: float | None = None) -> Iterator[_Ranks]:
    """Under torchrun: a process group (NCCL on CUDA, gloo on CPU) for the shard barriers, torn down after."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        init_process_group(device, timeout_s)  # ELT_DIST_TIMEOUT_S / train.dist_timeout_s; collective timing
        created = True
    try:
        if dist.is_initialized():
            yield _Ranks(dist.get_rank(), dist.get_world_size(), device)
        else:
            yield _Ranks(0, 1, device)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def prepare(cfg, run_dir: str | Path | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
            progress: bool = True) -> dict:
    """Build the training cache ``cfg`` describes; under torchrun every process encodes its shards.
    Returns the manifest (``NAME.json``) plus ``path`` and this run's ``encoded`` items."""
    from elt import registry

    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    run_dir = Path(run_dir or cfg.train.out_dir)
    with _process_group(cfg.train.device, OmegaConf.select(cfg, "train.dist_timeout_s", default=None)) as ranks:
        generator = registry.build_generator(cfg)
        module = registry.task_module(cfg.paradigm)
        if not hasattr(module, "cache_spec"):
            raise ValueError(f"paradigm {cfg.paradigm!r} has no cache to prepare")
        if not ranks.is_main:  # rank 0 trains a missing FSQ tokenizer first; the others then load it
            _barrier(ranks)
        spec = module.cache_spec(cfg, generator, run_dir, progress=progress and ranks.is_main)
        if ranks.is_main:
            _barrier(ranks)
        for encoder in (getattr(generator, "tokenizer", None), getattr(generator, "vae", None)):
            if encoder is not None:  # each process encodes on its own device (cuda:LOCAL_RANK under torchrun)
                encoder.to(ranks.device)
        shard_size = max(spec.batch_size, shard_size // spec.batch_size * spec.batch_size)
        started = time.perf_counter()
        done = read_cache(spec, warn_stale=ranks.is_main)
        stats = {"encoded": 0, "skipped": 0, "resumed": 0}
        if done is None:
            start_shards(spec, ranks.is_main)
            _barrier(ranks)
            stats = encode_shards(spec, ranks.rank, ranks.world, shard_size, progress=progress)
            _barrier(ranks)
            if ranks.is_main:
                join_shards(spec, shard_size, ranks.world, time.perf_counter() - started)
            _barrier(ranks)
        encoded = torch.tensor([float(stats["encoded"])], dtype=torch.float64)
        if ranks.world > 1:
            encoded = encoded.to(ranks.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(encoded)
        manifest = json.loads(spec.path.with_suffix(".json").read_text())
        return {**manifest, "path": str(spec.path.with_suffix(".npy")), "encoded": int(encoded.item()),
                "seconds": time.perf_counter() - started}
