"""`elt prepare` with 1 and with 2 processes (torchrun, gloo, 1 thread each) on a generated folder of tiny images,
encoded by a random-weight FSQ tokenizer: wall time and speed-up. Writes JSON, prints a table.

    PYTHONPATH=src python benchmarks/prepare_scaling.py [--images 10000] [--work /tmp/elt_prepare_bench]
        [--out benchmarks/results/prepare_scaling.json]

The figure depends on free cores: on a machine whose cores are busy with other jobs, 2 processes cannot
reach 2×. The wall time includes each run's start-up (imports, process group, tokenizer load).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from elt.config import load_config
from elt.tokenizers import fsq
from elt.tokenizers.factory import build_tokenizer as build_fsq


def overrides(work: Path) -> list[str]:
    return ["data.name=folder", f"data.root={work / 'images'}", "data.num_classes=10", "data.channels=3",
            "data.image_size=16", "tokenizer.levels=[8,5,5,5]", "tokenizer.downsample=4", "tokenizer.channels=16",
            "tokenizer.encode_batch_size=64", f"tokenizer.path={work / 'tok'}", "train.device=cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--work", default="/tmp/elt_prepare_bench")
    parser.add_argument("--out", default="benchmarks/results/prepare_scaling.json")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(args.images):
        folder = work / "images" / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    cfg = load_config("fmnist_masked", overrides(work))
    torch.manual_seed(0)
    fsq.save_tokenizer(build_fsq(cfg), work / "tok")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for nproc in (1, 2):
        shutil.rmtree(work / "tok" / "cache", ignore_errors=True)
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
        cmd = [sys.executable, *launcher, "-m", "elt.cli", "prepare", "fmnist_masked", *overrides(work),
               "train.threads=1", "--shard-size", "1024", "--no-progress"]
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        manifest = json.loads(next((work / "tok" / "cache").glob("*.json")).read_text())
        rows.append({"processes": nproc, "seconds": seconds, "encode_seconds": manifest["encode_seconds"],
                     "items": manifest["count"]})
    for row in rows:
        row["speedup"] = rows[0]["seconds"] / row["seconds"]
        row["encode_speedup"] = rows[0]["encode_seconds"] / row["encode_seconds"]
    print(f"elt prepare, {args.images} images 24² → 16² → 4×4 FSQ tokens, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), load average {os.getloadavg()[0]:.1f}")
    print(f"{'processes':>9} {'wall s':>8} {'speed-up':>8} {'encode s':>9} {'speed-up':>8}")
    for row in rows:
        print(f"{row['processes']:>9} {row['seconds']:>8.1f} {row['speedup']:>7.2f}x {row['encode_seconds']:>9.1f} "
              f"{row['encode_speedup']:>7.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": args.images, "cpus": os.cpu_count(), "rows": rows,
                               "load_average": os.getloadavg()}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
