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
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from elt.data.cache import CacheSpec, read_cache, write_manifest

DEFAULT_SHARD_SIZE = 4096


def shards_dir(spec: CacheSpec) -> Path:
    return spec.path.with_name(spec.path.name + ".shards")


def shard_ranges(count: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def _shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard_{index:06d}.npy"


def _finished(path: Path, rows: int, spec: CacheSpec) -> bool:
    """A shard file that loads with the expected shape and dtype (renamed into place only when complete)."""
    if not path.is_file():
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
            tmp = folder / f".shard_{index:06d}.{os.getpid()}.tmp.npy"
            np.save(tmp, out)
            os.replace(tmp, _shard_path(folder, index))
            (folder / f"shard_{index:06d}.skipped").write_text(str(skipped))
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
        out[start:stop] = np.load(_shard_path(folder, index))
        marker = folder / f"shard_{index:06d}.skipped"
        skipped += int(marker.read_text()) if marker.is_file() else 0
    out.flush()
    del out
    os.replace(tmp, array_path)
    write_manifest(spec, skipped=skipped, processes=processes, shard_size=shard_size, created_by="elt prepare",
                   encode_seconds=round(seconds, 3))
    shutil.rmtree(folder, ignore_errors=True)
    return np.load(array_path, mmap_mode="r")


def prepare(cfg, run_dir: str | Path | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
            progress: bool = True) -> dict:
    """Build the training cache ``cfg`` describes; under torchrun every process encodes its shards.
    Returns the manifest (``NAME.json``) plus ``path`` and this run's ``encoded`` items."""
    from elt import registry
    from elt.train import distributed as dist_lib

    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    run_dir = Path(run_dir or cfg.train.out_dir)
    with dist_lib.distributed_session(cfg.train.device) as env:
        generator = registry.build_generator(cfg)
        module = registry.task_module(cfg.paradigm)
        if not hasattr(module, "cache_spec"):
            raise ValueError(f"paradigm {cfg.paradigm!r} has no cache to prepare")
        with dist_lib.main_process_first(env):  # rank 0 trains a missing FSQ tokenizer; the others load it
            spec = module.cache_spec(cfg, generator, run_dir, progress=progress and env.is_main)
        for encoder in (getattr(generator, "tokenizer", None), getattr(generator, "vae", None)):
            if encoder is not None:  # each process encodes on its own device (cuda:LOCAL_RANK under torchrun)
                encoder.to(env.device)
        shard_size = max(spec.batch_size, shard_size // spec.batch_size * spec.batch_size)
        started = time.perf_counter()
        done = read_cache(spec, warn_stale=env.is_main)
        stats = {"encoded": 0, "skipped": 0, "resumed": 0}
        if done is None:
            start_shards(spec, env.is_main)
            dist_lib.barrier(env)
            stats = encode_shards(spec, env.rank, env.world_size, shard_size, progress=progress)
            dist_lib.barrier(env)
            if env.is_main:
                join_shards(spec, shard_size, env.world_size, time.perf_counter() - started)
            dist_lib.barrier(env)
        encoded = dist_lib.all_reduce_sum([stats["encoded"]], env)[0]
        manifest = json.loads(spec.path.with_suffix(".json").read_text())
        return {**manifest, "path": str(spec.path.with_suffix(".npy")), "encoded": int(encoded),
                "seconds": time.perf_counter() - started}


def add_parser(sub) -> None:
    """``elt prepare`` (registered in the CLI's EXTRA_COMMANDS)."""
    p = sub.add_parser("prepare", help="encode a training set into the latent/token cache (torchrun: sharded)",
                       description="Encode the training set a config names into the cache elt train reads "
                                   "(VQ/FSQ tokens or VAE latents). Under torchrun every process encodes its "
                                   "own shards; a rerun after a kill resumes from the finished shards.")
    p.add_argument("config", help="YAML config path or shipped name (e.g. imagenet256_masked_elt_l_8x3)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"items per shard (rounded to the encode batch; default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args) -> int:
    from elt.config import load_config
    from elt.errors import UserError

    if args.shard_size < 1:
        raise UserError(f"--shard-size must be >= 1, got {args.shard_size}")
    cfg = load_config(args.config, args.overrides)
    result = prepare(cfg, shard_size=args.shard_size, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"cache: {result['path']} ({result['count']} items, {result.get('skipped', 0)} unreadable skipped, "
              f"{result['encoded']} encoded now in {result['seconds']:.1f} s)")
    return 0
