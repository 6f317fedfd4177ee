"""Cluster rehearsal on CPU: every recipe family through its real multi-process path, under a short
timeout.

For each family (masked image: ``imagenet256_masked_elt_l_8x3`` with a random-weight VQ; diffusion:
``imagenet256_diffusion_elt_8x4`` with a random-weight SD-VAE layout on VAE latents; masked video:
``ucf101_masked_elt_l_6x4`` with an fsq3d tokenizer on synthetic UCF-101 clips), shipped configs at
tiny width through overrides only, with P gloo processes (``python -m elt.train.launch``, i.e.
torchrun):

1. (video) ``elt tokenizer train`` — one process, before the cluster job, as docs/recipes.md says;
2. ``elt prepare`` with P processes (the cache every rank encodes a share of);
3. a 1-process reference run of the same config (the loss curve to compare against);
4. ``elt train`` with P processes, grids every few steps, until SIGTERM reaches the launcher: exit
   143 and a checkpoint;
5. ``--resume auto`` on P' ≠ P processes to the last step;
6. ``elt eval`` with P processes (domain metrics: the images are 32 px grey; one batch per rank and
   loop count, so the ranks have equal work) — for video ``elt sample`` with P processes (the same
   sharded generation; the video metrics need I3D weights this machine does not have).

Every process group runs with ``ELT_DIST_TIMEOUT_S`` (30 s by default) and ``ELT_COLLECTIVE_LOG``:
each rank records the longest time it spent inside one ``torch.distributed`` collective (waiting for
the slowest rank plus the transfer) and its peak RSS. Targets: every phase ends as expected under
the timeout, and the longest collective wait of any rank is ≤ 5 s.

    python benchmarks/cluster_rehearsal.py                 # 4 processes, resume on 2, all families
    python benchmarks/cluster_rehearsal.py --smoke         # 2 processes, resume on 1, fewer steps

Writes benchmarks/results/cluster_rehearsal.json (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from elt.fileio import write_json, write_text

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
FAMILIES = {
    "masked_image": "imagenet256_masked_elt_l_8x3",
    "diffusion": "imagenet256_diffusion_elt_8x4",
    "masked_video": "ucf101_masked_elt_l_6x4",
}
TARGET_WAIT_S = 5.0
UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


# -- tiny assets -----------------------------------------------------------------------------------
def write_images(root: Path, classes: int = 2, per_class: int = 12, size: int = 40) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            base[:, : size // 2] = (
                40 + 150 * label
            )  # a class-dependent half, so the loss has something to learn
            Image.fromarray(base).save(folder / f"{i:05d}.png")


def write_vq(folder: Path) -> Path:
    import torch
    from diffusers import VQModel

    torch.manual_seed(0)
    VQModel(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=8,
        num_vq_embeddings=64,
        norm_num_groups=8,
        sample_size=32,
    ).save_pretrained(folder)
    return folder


def write_vae(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        act_fn="silu",
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=0.18215,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
    ).save_pretrained(folder)
    return folder


def write_ucf(root: Path, per_class: int = 4, frames: int = 12) -> Path:
    import av

    lists, videos = root / "ucfTrainTestlist", root / "UCF-101"
    lists.mkdir(parents=True, exist_ok=True)
    write_text(
        lists / "classInd.txt", "".join(f"{i + 1} {name}\n" for i, name in enumerate(UCF_CLASSES))
    )
    train, test = [], []
    for c, name in enumerate(UCF_CLASSES):
        for g in range(per_class + 1):
            rel = f"{name}/v_{name}_g{g + 8:02d}_c01.avi"
            path = videos / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with av.open(str(path), "w") as container:
                stream = container.add_stream("ffv1", rate=25)
                stream.width, stream.height, stream.pix_fmt = 40, 40, "yuv420p"
                for k in range(frames):
                    level = (30 + 60 * c + 8 * k + 5 * g) % 255
                    frame = av.VideoFrame.from_ndarray(
                        np.full((40, 40, 3), level, np.uint8), format="rgb24"
                    )
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            (test if g == per_class else train).append((rel, c + 1))
    write_text(lists / "trainlist01.txt", "".join(f"{rel} {c}\n" for rel, c in train))
    write_text(lists / "testlist01.txt", "".join(f"{rel}\n" for rel, _ in test))
    return root


def family_overrides(family: str, assets: Path, steps: int, sample_every: int) -> list[str]:
    common = [
        "model.width=32",
        "model.heads=2",
        f"train.steps={steps}",
        "train.batch_size=8",
        "lr_schedule.warmup_steps=2",
        "train.device=cpu",
        "train.precision=fp32",
        "train.threads=1",
        "logging.tensorboard=false",
        "logging.every=1",
        "logging.samples_per_class=1",
        "data.num_workers=0",
        "distributed.strategy=ddp",
        f"logging.sample_every={sample_every}",
        "logging.grid_classes=2",
        "logging.sample_loops=[1,2]",
        "sampling.steps=3",
        "checkpoint.keep=2",
        # a random flip per access and the dropout masks (the MaskGIT/MAGVIT recipes' 0.1) are drawn
        # from the rank's RNG, not keyed by the global sample index, so with them the loss curve
        # depends on the process count; off here so the curves compare like for like
        "data.hflip=false",
        "model.dropout=0",
        "model.attention_dropout=0",
    ]
    if family == "masked_image":
        data = [
            f"data.root={assets / 'images'}",
            "data.num_classes=2",
            "data.image_size=32",
            "data.channels=1",
            f"tokenizer.pretrained_path={assets / 'vq'}",
            f"tokenizer.path={assets / 'vq_cache'}",
        ]
    elif family == "diffusion":
        data = [
            f"data.root={assets / 'images'}",
            "data.num_classes=2",
            "data.image_size=32",
            "data.channels=1",
            f"diffusion.vae_path={assets / 'vae'}",
            f"diffusion.latent_cache={assets / 'latents'}",
        ]
    else:
        data = [
            f"data.root={assets / 'ucf'}",
            f"data.num_classes={len(UCF_CLASSES)}",
            "data.frames=4",
            "data.image_size=16",
            "tokenizer.channels=8",
            "tokenizer.steps=3",
            "tokenizer.batch_size=2",
            "tokenizer.eval_items=0",
            f"tokenizer.path={assets / 'fsq3d'}",
            "tokenizer.warmup_steps=1",
        ]
    return [*common, *data]


# -- processes -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(timeout_s: float, log_dir: Path | None) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "OMP_NUM_THREADS": "1",
        "ELT_DIST_TIMEOUT_S": str(timeout_s),
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "60",
    }
    env.pop("ELT_COLLECTIVE_LOG", None)
    if log_dir is not None:
        env["ELT_COLLECTIVE_LOG"] = str(log_dir)
    return env


def launcher(nproc: int, *args: str) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "elt.cli", *args]
    return [
        sys.executable,
        "-m",
        "elt.train.launch",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "--master_port",
        str(free_port()),
        "-m",
        "elt.cli",
        *args,
    ]


def run_phase(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    log_dir: Path,
    expect: int = 0,
    stop_after_lines: tuple[Path, int] | None = None,
    limit_s: float = 600,
) -> dict:
    """Run one command; with ``stop_after_lines`` SIGTERM the launcher once the log has that many
    lines."""
    log_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=str(log_dir),
    )
    signalled_at = None
    try:
        if stop_after_lines is not None:
            path, lines = stop_after_lines
            while proc.poll() is None and time.perf_counter() - start < limit_s:
                if path.is_file() and len(path.read_text().splitlines()) >= lines:
                    proc.send_signal(
                        signal.SIGTERM
                    )  # the launcher only, as a scheduler (or the sbatch trap) does
                    signalled_at = time.perf_counter() - start
                    break
                time.sleep(0.05)
        out, err = proc.communicate(timeout=max(1.0, limit_s - (time.perf_counter() - start)))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    seconds = time.perf_counter() - start
    ranks = []
    for path in sorted(log_dir.glob("collectives_rank*_pid*.json")):
        ranks.append(json.loads(path.read_text()))
    ranks.sort(key=lambda r: r["rank"])
    record = {
        "phase": name,
        "returncode": proc.returncode,
        "expected": expect,
        "ok": proc.returncode == expect,
        "seconds": round(seconds, 2),
        "signalled_at_s": signalled_at and round(signalled_at, 2),
        "ranks": ranks,
        "max_wait_s": max((r["max_wait_s"] for r in ranks), default=0.0),
        "max_wait_op": max(ranks, key=lambda r: r["max_wait_s"])["max_op"] if ranks else None,
        "peak_rss_mb": [r["peak_rss_mb"] for r in ranks],
    }
    if not record[
        "ok"
    ]:  # the workers' own lines, without torchrun's warnings and its launcher traceback
        lines = [
            line for line in err.splitlines() if line.strip() and line[:2] not in ("W1", "I1", "E1")
        ]
        record["stderr_tail"] = "\n".join(lines[-60:])[-4000:]
    return record


def read_losses(run_dir: Path) -> dict[int, float]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return {}
    return {
        r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines()) if "loss" in r
    }


def rehearse(
    family: str,
    work: Path,
    procs: int,
    resume_procs: int,
    steps: int,
    stop_at: int,
    timeout_s: float,
    eval_num: int,
) -> dict:
    config = FAMILIES[family]
    assets = work / "assets"
    overrides = family_overrides(family, assets, steps, sample_every=max(2, stop_at // 2))
    run, ref = work / family / "run", work / family / "reference"
    logs = work / family / "logs"
    phases = []

    def phase(name, cmd, nproc, **kwargs):
        log_dir = logs / name
        record = run_phase(
            name, cmd, base_env(timeout_s, log_dir if nproc > 1 else None), log_dir, **kwargs
        )
        record["processes"] = nproc
        phases.append(record)
        return record

    if (
        family == "masked_video"
    ):  # the tokenizer is trained once, by one process, before any cluster job
        phase(
            "tokenizer",
            [sys.executable, "-m", "elt.cli", "tokenizer", "train", config, *overrides],
            1,
        )
    phase(
        "prepare",
        launcher(procs, "prepare", "--no-progress", config, *overrides, f"train.out_dir={run}"),
        procs,
    )
    phase(
        "reference_1proc",
        launcher(1, "train", "--no-progress", config, *overrides, f"train.out_dir={ref}"),
        1,
    )
    phase(
        "train_sigterm",
        launcher(procs, "train", "--no-progress", config, *overrides, f"train.out_dir={run}"),
        procs,
        expect=143,
        stop_after_lines=(run / "log.jsonl", stop_at),
    )
    stopped = max(read_losses(run), default=0)
    phase(
        "resume",
        launcher(
            resume_procs,
            "train",
            "--no-progress",
            "--resume",
            "auto",
            config,
            *overrides,
            f"train.out_dir={run}",
        ),
        resume_procs,
    )
    out = work / family / "eval"
    per_rank = str(max(1, eval_num // procs))
    if family == "masked_video":
        phase(
            "sample",
            launcher(
                procs,
                "sample",
                "--ckpt",
                str(run),
                "--loops",
                "1,2",
                "--num",
                str(eval_num),
                "--batch-size",
                per_rank,
                "--out",
                str(out),
                "--no-progress",
            ),
            procs,
        )
    else:
        phase(
            "eval",
            launcher(
                procs,
                "eval",
                "--ckpt",
                str(run),
                "--loops",
                "1,2",
                "--num",
                str(eval_num),
                "--batch-size",
                per_rank,
                "--metrics",
                "domain",
                "--no-latency",
                "--no-progress",
                "--out",
                str(out),
            ),
            procs,
        )
    grids = (
        sorted(p.name for p in (run / "samples").glob("step_*.png"))
        if (run / "samples").is_dir()
        else []
    )
    checkpoints = (
        sorted(p.name for p in (run / "checkpoints").glob("step_*"))
        if (run / "checkpoints").is_dir()
        else []
    )
    one, many = read_losses(ref), read_losses(run)
    common = sorted(set(one) & set(many))
    rel = [abs(many[s] - one[s]) / max(abs(one[s]), 1e-12) for s in common]
    before = [r for s, r in zip(common, rel, strict=True) if s <= stopped]
    after = [r for s, r in zip(common, rel, strict=True) if s > stopped]
    return {
        "family": family,
        "config": config,
        "processes": procs,
        "resume_processes": resume_procs,
        "steps": steps,
        "stopped_at_step": stopped,
        "grids": grids,
        "checkpoints": checkpoints,
        "phases": phases,
        "ok": all(p["ok"] for p in phases) and len(common) == steps,
        "max_wait_s": max(p["max_wait_s"] for p in phases),
        "peak_rss_mb_max": max((mb for p in phases for mb in p["peak_rss_mb"]), default=None),
        "loss": {
            "reference_1proc": [one.get(s) for s in range(1, steps + 1)],
            "cluster": [many.get(s) for s in range(1, steps + 1)],
            "max_rel_diff_before_stop": max(before, default=None),
            "max_rel_diff_after_resume": max(after, default=None),
        },
    }


def print_table(results: list[dict], timeout_s: float) -> None:
    print(
        f"\ncluster rehearsal (gloo on CPU, process-group timeout {timeout_s:g} s; target: all "
        "pass, "
        f"longest collective wait <= {TARGET_WAIT_S:g} s)"
    )
    head = (
        f"{'family':<14}{'phase':<17}{'procs':>6}{'rc':>5}{'ok':>4}{'sec':>8}{'max wait s':>12}  "
        f"{'op':<22}"
        "peak RSS MB/rank"
    )
    print(head)
    print("-" * len(head))
    for result in results:
        for p in result["phases"]:
            rss = "/".join(f"{mb:.0f}" for mb in p["peak_rss_mb"]) or "-"
            print(
                f"{result['family']:<14}{p['phase']:<17}{p['processes']:>6}{p['returncode']:>5}"
                f"{'y' if p['ok'] else 'N':>4}{p['seconds']:>8.1f}{p['max_wait_s']:>12.3f}  "
                f"{str(p['max_wait_op']):<22}{rss}"
            )
        loss = result["loss"]
        fmt = lambda v: "n/a" if v is None else f"{v:.2e}"  # noqa: E731
        print(
            f"{'':<14}stopped at step {result['stopped_at_step']}/{result['steps']}, grids "
            f"{len(result['grids'])}, "
            f"loss vs 1 process: max rel diff {fmt(loss['max_rel_diff_before_stop'])} before the "
            "stop, "
            f"{fmt(loss['max_rel_diff_after_resume'])} after resuming on "
            f"{result['resume_processes']}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=None, help="processes (default 4, --smoke 2)")
    parser.add_argument("--resume-procs", type=int, default=None, help="default: procs / 2")
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help=f"comma-separated: {', '.join(FAMILIES)}"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default 16, --smoke 10)"
    )
    parser.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="SIGTERM once the log has this many steps (default 6, --smoke 4)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="process-group timeout (s)")
    parser.add_argument(
        "--num", type=int, default=8, help="samples per loop count in elt eval / sample"
    )
    parser.add_argument("--smoke", action="store_true", help="2 processes, resume on 1, 10 steps")
    parser.add_argument(
        "--work", default=None, help="working folder (default: a temporary one, removed)"
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "cluster_rehearsal.json")
    )
    args = parser.parse_args(argv)
    defaults = (2, 10, 4) if args.smoke else (4, 16, 6)
    args.procs, args.steps, args.stop_at = (
        given if given is not None else default
        for given, default in zip((args.procs, args.steps, args.stop_at), defaults, strict=True)
    )
    resume = args.resume_procs or max(1, args.procs // 2)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        parser.error(f"--families: {bad[0]!r} is not one of {', '.join(FAMILIES)}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="elt_rehearsal_"))
    assets = work / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if {"masked_image", "diffusion"} & set(families):
        write_images(assets / "images")
    if "masked_image" in families:
        write_vq(assets / "vq")
    if "diffusion" in families:
        write_vae(assets / "vae")
    if "masked_video" in families:
        write_ucf(assets / "ucf")
    results = []
    try:
        for family in families:
            results.append(
                rehearse(
                    family,
                    work,
                    args.procs,
                    resume,
                    args.steps,
                    args.stop_at,
                    args.timeout,
                    args.num,
                )
            )
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    worst = max((r["max_wait_s"] for r in results), default=0.0)
    record = {
        "benchmark": "cluster_rehearsal",
        "processes": args.procs,
        "resume_processes": resume,
        "timeout_s": args.timeout,
        "steps": args.steps,
        "smoke": args.smoke,
        "target": {"all_pass": True, "max_collective_wait_s": TARGET_WAIT_S},
        "all_pass": all(r["ok"] for r in results),
        "max_collective_wait_s": worst,
        "wait_target_met": worst <= TARGET_WAIT_S,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "families": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record, indent=1)
    print_table(results, args.timeout)
    print(
        f"all pass: {record['all_pass']}; longest collective wait {worst:.3f} s "
        f"(target <= {TARGET_WAIT_S:g}: {'met' if record['wait_target_met'] else 'NOT met'}); "
        f"{record['seconds']:.0f} s; wrote {out}"
    )
    return 0 if record["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
