"""``elt prepare CONFIG``: encode a training set (image folder, UCF-101, ...) into the latent/token
cache the trainer reads, with several processes under torchrun, resumable after a kill.

    elt prepare imagenet256_masked_elt_l_8x3 data.root=/data/imagenet/train \\
        tokenizer.pretrained_path=/models/vq
    torchrun --standalone --nproc_per_node 8 -m elt.cli prepare imagenet256_diffusion_elt_8x4 \\
        data.root=...

The cache is cut into shards of ``--shard-size`` items; process r of W encodes shards r, r+W, r+2W,
... Each finished shard is written under a temporary name and renamed into ``NAME.shards/``, so a
kill loses at most the shards in progress (one per process); a rerun skips the finished ones. When
every shard is there, every process copies its own shards into one file at their offsets (the join
costs each 1/W), rank 0 renames it ``NAME.npy`` and writes the manifest ``NAME.json`` (producer
hash, count, shapes, dtype, unreadable items skipped, encoder precision) that ``elt train`` checks
before it uses the cache. Shards of another tokenizer/VAE or data setting are discarded, never mixed
in.

Only the encoder is built (the task module's ``prepare_spec``: the tokenizer or the VAE, never the
transformer). Images are decoded in DataLoader worker processes (``--workers``, else
``data.num_workers``, else the CPUs per process less one) while the process encodes; on CUDA the
encoder runs in bf16 autocast (``--precision``; the FSQ rounding and the VQ nearest-code search stay
fp32, latents are stored in fp32)."""

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

from elt.data.cache import CacheSpec, encode_blocks, read_cache, write_manifest
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
    """The unreadable-item count a shard's marker holds, or None when it is missing or
    unreadable."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _finished(path: Path, rows: int, spec: CacheSpec) -> bool:
    """A shard file that loads with the expected shape and dtype (renamed into place only when
    complete) and whose skipped-count marker reads as a number (renamed into place before the
    shard)."""
    if not path.is_file() or _read_marker(_marker_path(path)) is None:
        return False
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False
    return array.shape == (rows, *spec.item_shape) and array.dtype == np.dtype(spec.dtype)


def start_shards(spec: CacheSpec, is_main: bool) -> Path:
    """The shard folder of ``spec``; rank 0 empties one left by other settings (call, then
    barrier)."""
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


def encode_shards(
    spec: CacheSpec, rank: int, world: int, shard_size: int, progress: bool = True
) -> dict:
    """Encode this rank's unfinished shards (one DataLoader over all of them: ``spec.num_workers``
    workers decode ahead across shard boundaries). Returns {"encoded": items, "skipped": unreadable,
    "resumed": shards found finished}."""
    folder = shards_dir(spec)
    ranges = shard_ranges(spec.count, shard_size)
    mine = list(range(rank, len(ranges), world))
    todo = [
        i for i in mine if not _finished(_shard_path(folder, i), ranges[i][1] - ranges[i][0], spec)
    ]
    stats = {"encoded": 0, "skipped": 0, "resumed": len(mine) - len(todo)}
    total = sum(ranges[i][1] - ranges[i][0] for i in todo)
    shard_of = {ranges[i][0]: i for i in todo}
    out, index, skipped = None, -1, 0
    with tqdm(
        total=total,
        desc=f"prepare {spec.path.name} [rank {rank}]",
        disable=not progress,
        unit="item",
        dynamic_ncols=True,
    ) as bar:
        for begin, end, block in encode_blocks(spec, [ranges[i] for i in todo]):
            if begin in shard_of:  # the first batch of a shard
                index, skipped = shard_of[begin], 0
                out = np.empty((ranges[index][1] - begin, *spec.item_shape), dtype=spec.dtype)
            start, stop = ranges[index]
            out[begin - start : end - start] = block
            if spec.skipped is not None:
                skipped += spec.skipped(block)
            bar.update(end - begin)
            if end == stop:
                _save_shard(folder, index, out, skipped)
                stats["encoded"] += stop - start
                stats["skipped"] += skipped
    return stats


def _save_shard(folder: Path, index: int, out: np.ndarray, skipped: int) -> None:
    """The marker first, both under temporary names: a kill between the renames leaves a marker
    without its shard (re-encoded on resume), never a shard without a readable marker."""
    shard = _shard_path(folder, index)
    tmp = folder / f".shard_{index:06d}.{os.getpid()}.tmp.npy"
    _marker_path(tmp).write_text(str(skipped))
    os.replace(_marker_path(tmp), _marker_path(shard))
    np.save(tmp, out)
    os.replace(tmp, shard)


def _joining_path(spec: CacheSpec) -> Path:
    """The joined array while it is being filled (one name every rank knows; renamed when
    complete)."""
    return spec.path.with_name(f".{spec.path.name}.joining.npy")


def check_shards(spec: CacheSpec, shard_size: int) -> None:
    folder = shards_dir(spec)
    ranges = shard_ranges(spec.count, shard_size)
    missing = [
        i for i, (a, b) in enumerate(ranges) if not _finished(_shard_path(folder, i), b - a, spec)
    ]
    if missing:
        raise RuntimeError(
            f"{len(missing)} shards of {spec.path.name} are missing (first: {missing[0]}); "
            "rerun elt prepare to encode them"
        )


def start_join(spec: CacheSpec, shard_size: int) -> None:
    """Rank 0, after every shard is written: check them all, create the (sparse) joined file, header
    and size only. Then a barrier, :func:`fill_join` on every rank, a barrier, :func:`finish_join`
    on rank 0."""
    check_shards(spec, shard_size)
    out = np.lib.format.open_memmap(
        _joining_path(spec), mode="w+", dtype=spec.dtype, shape=(spec.count, *spec.item_shape)
    )
    del out


def fill_join(spec: CacheSpec, rank: int, world: int, shard_size: int) -> int:
    """Copy this rank's shards (r, r+W, ...) into the joined file at their offsets; returns the
    items copied. Every rank copies its own, so the join costs each 1/W of the cache; positional
    writes touch only the shard's bytes (safe beside other ranks' writes to the same file, also on a
    shared filesystem)."""
    path = _joining_path(spec)
    offset = np.load(path, mmap_mode="r").offset
    row = int(np.prod(spec.item_shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
    ranges = shard_ranges(spec.count, shard_size)
    copied = 0
    fd = os.open(path, os.O_WRONLY)
    try:
        for index in range(rank, len(ranges), world):
            start, stop = ranges[index]
            data = memoryview(
                np.ascontiguousarray(np.load(_shard_path(shards_dir(spec), index)))
            ).cast("B")
            position = offset + start * row
            while len(data):
                written = os.pwrite(fd, data, position)
                data, position = data[written:], position + written
            copied += stop - start
        os.fsync(fd)
    finally:
        os.close(fd)
    return copied


def finish_join(spec: CacheSpec, shard_size: int, processes: int, seconds: float) -> np.ndarray:
    """Rank 0, once every rank filled its part: rename the joined file into place, write the
    manifest (with the unreadable-item counts of the shards' markers), remove the shards."""
    folder = shards_dir(spec)
    ranges = shard_ranges(spec.count, shard_size)
    skipped = sum(_read_marker(_marker_path(_shard_path(folder, i))) for i in range(len(ranges)))
    array_path = spec.path.with_suffix(".npy")
    os.replace(_joining_path(spec), array_path)
    write_manifest(
        spec,
        skipped=skipped,
        processes=processes,
        shard_size=shard_size,
        created_by="elt prepare",
        encode_seconds=round(seconds, 3),
    )
    shutil.rmtree(folder, ignore_errors=True)
    return np.load(array_path, mmap_mode="r")


def join_shards(spec: CacheSpec, shard_size: int, processes: int, seconds: float) -> np.ndarray:
    """One process: the shards → ``NAME.npy`` and its manifest; the shards are removed."""
    start_join(spec, shard_size)
    fill_join(spec, 0, 1, shard_size)
    return finish_join(spec, shard_size, processes, seconds)


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
    """Under torchrun: a process group (NCCL on CUDA, gloo on CPU) for the shard barriers, torn down
    after."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        init_process_group(
            device, timeout_s
        )  # ELT_DIST_TIMEOUT_S / distributed.timeout_s; collective timing
        created = True
    try:
        if dist.is_initialized():
            yield _Ranks(dist.get_rank(), dist.get_world_size(), device)
        else:
            yield _Ranks(0, 1, device)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def default_workers(local_processes: int, cpus: int | None = None) -> int:
    """DataLoader workers per process when neither ``--workers`` nor ``data.num_workers`` names a
    number: the CPUs this node gives each process, less the one that process encodes on, at most 16
    (2 CPUs and 1 process: 1 worker; 2 CPUs and 2 processes: none, each process decodes and encodes
    on its own core)."""
    if cpus is None:
        cpus = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    return max(0, min(16, cpus // max(1, local_processes) - 1))


PRECISIONS = ("auto", "fp32", "bf16")


def _builds_first(cfg, module, run_dir: Path, ranks: _Ranks) -> bool:
    """Whether rank 0 builds the spec before the others (the task's ``prepare_builds_first``; a task
    without it: yes). The ranks agree (any rank's yes counts) before any of them builds, so none
    skips a barrier another waits in."""
    check = getattr(module, "prepare_builds_first", None)
    first = (
        True if check is None or not hasattr(module, "prepare_spec") else bool(check(cfg, run_dir))
    )
    if ranks.world > 1:
        flag = torch.tensor(
            [float(first)], device=ranks.device if dist.get_backend() == "nccl" else "cpu"
        )
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        first = bool(flag.item())
    return first


def _spec_for(
    cfg, module, run_dir: Path, ranks: _Ranks, precision: str, progress: bool
) -> CacheSpec:
    """The cache spec with only the encoder built (the task's ``prepare_spec``); a paradigm without
    one gets its whole generator built and ``cache_spec`` asked."""
    if hasattr(module, "prepare_spec"):
        return module.prepare_spec(
            cfg, run_dir, ranks.device, precision=precision, progress=progress
        )
    from elt import registry

    generator = registry.build_generator(cfg)
    spec = module.cache_spec(cfg, generator, run_dir, progress=progress)
    for encoder in (getattr(generator, "tokenizer", None), getattr(generator, "vae", None)):
        if (
            encoder is not None
        ):  # each process encodes on its own device (cuda:LOCAL_RANK under torchrun)
            encoder.to(ranks.device)
    return spec


def prepare(
    cfg,
    run_dir: str | Path | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
    workers: int | None = None,
    precision: str = "auto",
) -> dict:
    """Build the training cache ``cfg`` describes; under torchrun every process encodes its shards.

    Only the encoder (tokenizer or VAE) is built. ``workers``: DataLoader workers decoding images
    per process (default: ``data.num_workers`` when set, else :func:`default_workers`).
    ``precision``: the encoder's (``auto``: bf16 autocast on CUDA, fp32 on CPU). Returns the
    manifest (``NAME.json``) plus ``path`` and this run's ``encoded`` items."""
    from elt import registry

    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    if workers is not None and workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    run_dir = Path(run_dir or cfg.train.out_dir)
    with _process_group(
        cfg.train.device, OmegaConf.select(cfg, "distributed.timeout_s", default=None)
    ) as ranks:
        module = registry.task_module(cfg.paradigm)
        if not hasattr(module, "prepare_spec") and not hasattr(module, "cache_spec"):
            raise ValueError(f"paradigm {cfg.paradigm!r} has no cache to prepare")
        # rank 0 first only where something must be built once (a missing FSQ tokenizer, which the
        # others then load); else every rank reads its encoder and lists the data at once, none
        # waiting on another
        first = _builds_first(cfg, module, run_dir, ranks)
        if first and not ranks.is_main:
            _barrier(ranks)
        spec = _spec_for(cfg, module, run_dir, ranks, precision, progress and ranks.is_main)
        if first and ranks.is_main:
            _barrier(ranks)
        if workers is None:
            workers = cfg.data.num_workers or default_workers(
                int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world))
            )
        spec.num_workers = workers
        spec.info = {**spec.info, "workers": workers}
        shard_size = max(spec.batch_size, shard_size // spec.batch_size * spec.batch_size)
        started = time.perf_counter()
        done = read_cache(spec, warn_stale=ranks.is_main)
        stats = {"encoded": 0, "skipped": 0, "resumed": 0}
        if done is None:
            start_shards(spec, ranks.is_main)
            _barrier(ranks)
            stats = encode_shards(spec, ranks.rank, ranks.world, shard_size, progress=progress)
            _barrier(ranks)
            if (
                ranks.is_main
            ):  # the join: each rank copies its own shards into one file (rank 0 renames it)
                start_join(spec, shard_size)
            _barrier(ranks)
            fill_join(spec, ranks.rank, ranks.world, shard_size)
            _barrier(ranks)
            if ranks.is_main:
                finish_join(spec, shard_size, ranks.world, time.perf_counter() - started)
            _barrier(ranks)
        encoded = torch.tensor([float(stats["encoded"])], dtype=torch.float64)
        if ranks.world > 1:
            encoded = encoded.to(ranks.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(encoded)
        manifest = json.loads(spec.path.with_suffix(".json").read_text())
        return {
            **manifest,
            "path": str(spec.path.with_suffix(".npy")),
            "encoded": int(encoded.item()),
            "seconds": time.perf_counter() - started,
        }
