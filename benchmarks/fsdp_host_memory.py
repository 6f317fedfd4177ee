"""Peak host memory per rank of FSDP training against one process (gloo, CPU): meta-device init, the
EMA and AdamW state sharded, a sharded (DCP) checkpoint saved and loaded.

    PYTHONPATH=src python benchmarks/fsdp_host_memory.py [--ranks 4] [--smoke] [--out FILE.json]

Runs the same ~200 M-parameter looped model (a regression toy: 16 unique blocks of width 1024, 2
loops, 16 tokens) twice, one after the other: as 1 process (its default checkpoint format, full),
then under ``torchrun --nproc_per_node RANKS`` with ``distributed.strategy=fsdp`` (checkpoint format
auto = dcp). Each run builds its Trainer, trains 2 steps, saves a checkpoint, drops the Trainer,
builds a new one and resumes from that checkpoint. Every process reports its peak resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after each phase; the table gives them, and the
ratio of the largest rank peak to the 1-process peak (target ≤ 0.35 at 4 ranks). ``--smoke``: a
width-128 model, seconds. Set OMP_NUM_THREADS=1 on a small machine.

Allocator: both runs get ``MALLOC_MMAP_THRESHOLD_=1048576`` unless ``--glibc-default``. glibc's
default raises its mmap threshold after the first large free (up to 32 MiB), after which the
per-block gather buffers of FSDP (16 MiB tensors here) come from the heap and stay in the resident
set once freed: the peak RSS then measures allocator caching on top of live memory, and ranks that
gather and free a block at every loop cache the most. A fixed threshold returns large blocks to the
system on free, so the peak follows live tensors. The JSON records which allocator setting was used.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from elt.fileio import write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARADIGM = "hostmem"
SIZE = 4  # 4×4 "images": 16 tokens


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- the paradigm: a regression toy on the real looped core (this module is its task module) -------
def _generator_class():
    from elt.core.blocks import LabelEmbedder
    from elt.core.generator import LoopedGenerator
    from elt.core.ilsd import ilsd_loss
    from elt.registry import build_backbone

    class RegressionToy(LoopedGenerator):
        def __init__(self, cfg):
            super().__init__()
            self.config = cfg
            self.num_classes = int(cfg.data.num_classes)
            width = cfg.model.width
            self.backbone = build_backbone(cfg)
            self.labels = LabelEmbedder(self.num_classes, width, drop_prob=0.0)
            self.pixel_in = nn.Linear(1, width)
            self.pos = nn.Parameter(torch.randn(1, SIZE * SIZE, width) * 0.02)
            self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

        def training_loss(self, batch, student_loops, lam):
            images, labels = batch
            tokens = self.pixel_in(torch.zeros_like(images).reshape(len(images), -1, 1)) + self.pos
            out = self.backbone(
                tokens + self.labels(labels).unsqueeze(1),
                exit_loops=[student_loops] if student_loops else [],
            )

            def image(h):
                return self.head(h).reshape(images.shape)

            student = image(out.exits[student_loops]) if student_loops else None
            return ilsd_loss(
                image(out.final),
                student,
                lambda p: (p - images).pow(2).mean(),
                lambda s, t: (s - t).pow(2).mean(),
                lam,
                student_loops,
            )

        def generate(
            self,
            class_labels,
            loops=None,
            steps=None,
            guidance=None,
            seed=None,
            progress=False,
            *,
            seeds=None,
            return_loops=False,
        ):
            raise NotImplementedError("a memory benchmark model: no sampling")

        def gflops_per_sample(self, loops=None, steps=None, guidance=None, loops_used=None):
            return 0.0

    return RegressionToy


def build_generator(cfg):
    return _generator_class()(cfg)


def prepare_data(cfg, generator, run_dir, progress=True):
    n = int(cfg.data.limit)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % int(cfg.data.num_classes)
    return TensorDataset(torch.rand(n, 1, SIZE, SIZE, generator=g) * 2 - 1, labels)


def overrides(smoke: bool, run_dir: Path, fsdp: bool) -> list[str]:
    width, layers, heads = (128, 4, 4) if smoke else (1024, 16, 16)
    return [
        f"paradigm={PARADIGM}",
        f"model.width={width}",
        f"model.heads={heads}",
        f"model.unique_layers={layers}",
        "model.loops=2",
        "data.num_classes=4",
        "data.limit=16",
        "train.batch_size=4",
        "train.steps=3",
        "logging.every=1",
        "logging.sample_every=0",
        "checkpoint.every=0",
        "train.device=cpu",
        "train.threads=1",
        "logging.tensorboard=false",
        "train.precision=fp32",
        f"train.out_dir={run_dir}",
        *(["distributed.strategy=fsdp"] if fsdp else []),
    ]


def worker(args) -> None:
    """One process of a measured run (rank r of torchrun, or the single process)."""
    from elt import registry
    from elt.config import load_config
    from elt.train.distributed import distributed_session
    from elt.train.trainer import Trainer

    registry.register_paradigm(PARADIGM, sys.modules[__name__])
    cfg = load_config(None, overrides(args.smoke, Path(args.run_dir), args.fsdp))
    phases = {"start": peak_rss_mib()}
    times = {}
    with distributed_session("cpu") as env:
        start = time.perf_counter()
        trainer = Trainer(cfg, progress=False, env=env)
        params = sum(p.numel() for p in trainer.generator.parameters())
        phases["init"], times["init"] = peak_rss_mib(), time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(2):
            trainer.train_step(next(trainer._batches()))
        phases["train"], times["train"] = peak_rss_mib(), time.perf_counter() - start
        start = time.perf_counter()
        checkpoint = trainer.save()
        phases["save"], times["save"] = peak_rss_mib(), time.perf_counter() - start
        fmt = trainer.checkpoint_format
        del trainer
        gc.collect()
        start = time.perf_counter()
        resumed = Trainer(cfg, progress=False, env=env)
        resumed.resume_from(checkpoint)
        phases["load"], times["load"] = peak_rss_mib(), time.perf_counter() - start
        record = {
            "rank": env.rank,
            "world": env.world_size,
            "params": params,
            "checkpoint_format": fmt,
            "peak_mib_after": phases,
            "seconds": times,
            "peak_mib": peak_rss_mib(),
            "resumed_step": resumed.step,
        }
    write_json(Path(args.run_dir, f"memory_rank{record['rank']}.json"), record)


MMAP_THRESHOLD = "1048576"


def run(ranks: int, smoke: bool, folder: Path, glibc_default: bool = False) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(HERE)]),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    if not glibc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
    run_dir = folder / f"ranks{ranks}"
    tail = [
        str(Path(__file__).resolve()),
        "--worker",
        "--run-dir",
        str(run_dir),
        *(["--smoke"] if smoke else []),
    ]
    if ranks == 1:
        cmd = [sys.executable, *tail]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={ranks}",
            *tail,
            "--fsdp",
        ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(
            f"the {ranks}-process run failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return [json.loads((run_dir / f"memory_rank{r}.json").read_text()) for r in range(ranks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="a width-128 model (seconds)")
    parser.add_argument("--out", default=str(HERE / "results" / "fsdp_host_memory.json"))
    parser.add_argument(
        "--glibc-default",
        action="store_true",
        help="keep glibc's dynamic mmap threshold (peaks then include freed, cached heap blocks)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fsdp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="fsdp_host_memory_") as tmp:
        single = run(1, args.smoke, Path(tmp), args.glibc_default)[0]
        sharded = run(args.ranks, args.smoke, Path(tmp), args.glibc_default)
    phases = list(single["peak_mib_after"])
    allocator = (
        "glibc default" if args.glibc_default else f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}"
    )
    print(
        f"Peak host RSS (MiB, ru_maxrss) after each phase; {single['params'] / 1e6:.1f} M "
        "parameters, fp32, "
        f"AdamW + EMA, gloo/CPU, {allocator}"
    )
    print(
        f"{'process':<22} {'format':>6} "
        + " ".join(f"{p:>8}" for p in phases)
        + f" {'peak':>8} {'ratio':>6}"
    )
    rows = [
        ("1 process", single),
        *((f"rank {r['rank']} of {r['world']} (fsdp)", r) for r in sharded),
    ]
    for label, record in rows:
        ratio = record["peak_mib"] / single["peak_mib"]
        print(
            f"{label:<22} {record['checkpoint_format']:>6} "
            + " ".join(f"{record['peak_mib_after'][p]:>8.0f}" for p in phases)
            + f" {record['peak_mib']:>8.0f} {ratio:>6.3f}"
        )
    worst = max(r["peak_mib"] for r in sharded)
    ratio = worst / single["peak_mib"]
    print(
        f"largest rank peak / 1-process peak = {worst:.0f} / {single['peak_mib']:.0f} MiB = "
        f"{ratio:.3f} "
        f"(target <= 0.35 at 4 ranks: {'met' if ratio <= 0.35 else 'NOT met'})"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "ranks": args.ranks,
        "smoke": args.smoke,
        "params": single["params"],
        "single": single,
        "sharded": sharded,
        "worst_rank_peak_mib": worst,
        "ratio": ratio,
        "target": 0.35,
        "allocator": allocator,
        "torch": torch.__version__,
        "machine": os.uname().machine,
        "cpus": os.cpu_count(),
    }
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
