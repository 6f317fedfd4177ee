"""What the adaptive exit's decision costs per loop, at small batch: ``exit:0:2-L`` against fixed
``L``.

With threshold 0 no sample exits before L, and the samples are bit-identical to the fixed run of L
loops (the same network operations on the same rows, tests/test_anytime.py); what differs is the
decision's work every loop (read the head, summarise, compare, check). So the time ratio of the two,
interleaved in one process, is the decision's overhead at equal loops, free of the exit's savings,
and robust to machine load (a ratio). The overhead bounds how much slower an exit can be than the
fixed schedule of the same mean loops (the target of ``benchmarks/adaptive_vs_fixed.py``: ≤ 1.15×).
Prints a table and writes JSON.

    python benchmarks/adaptive_overhead.py [--batches 1,8 --repeats 15 --threads 1 --steps 6]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from elt.fileio import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=6, help="sampling steps per call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "adaptive_overhead.json")
    )
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.smoke:
        batches, args.repeats, args.steps = [1], 2, 2
    torch.set_num_threads(args.threads)

    import elt
    from elt.demo import shipped_models
    from elt.inference.checkpoints import load_generator

    rows = []
    for paradigm in ("diffusion", "masked"):
        generator = load_generator(shipped_models()[paradigm])
        top = generator.trained_loops
        for batch in batches:
            labels = np.arange(batch) % generator.num_classes
            points = {"fixed": top, "exit:0": f"exit:0:2-{top}"}
            wall: dict[str, list[float]] = {k: [] for k in points}
            cpu: dict[str, list[float]] = {k: [] for k in points}
            for loops in points.values():  # warm-up
                generator.generate(labels, loops=loops, steps=args.steps, seed=0)
            for r in range(args.repeats):
                for name, loops in points.items():
                    start, start_cpu = time.perf_counter(), time.process_time()
                    generator.generate(labels, loops=loops, steps=args.steps, seed=r)
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
            w = {k: statistics.median(v) for k, v in wall.items()}
            c = {k: statistics.median(v) for k, v in cpu.items()}
            row = {
                "model": paradigm,
                "batch": batch,
                "loops": top,
                "steps": args.steps,
                "fixed_ms": 1000 * w["fixed"],
                "exit0_ms": 1000 * w["exit:0"],
                "ratio": w["exit:0"] / w["fixed"],
                "cpu_ratio": c["exit:0"] / c["fixed"],
                "overhead_per_loop_ms": 1000 * (w["exit:0"] - w["fixed"]) / (args.steps * top),
            }
            rows.append(row)
            print(
                f"{paradigm:<9} batch {batch:>3}: fixed L={top} {row['fixed_ms']:8.1f} ms  "
                f"exit:0:2-{top} "
                f"{row['exit0_ms']:8.1f} ms  ratio {row['ratio']:.3f} (CPU time "
                f"{row['cpu_ratio']:.3f})",
                flush=True,
            )
    record = {
        "rows": rows,
        "elt": str(Path(elt.__file__).parent),
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": f"python benchmarks/adaptive_overhead.py --batches {args.batches} --repeats "
        f"{args.repeats} "
        f"--steps {args.steps} --threads {args.threads}",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)  # atomic: no half-written file under its name
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
