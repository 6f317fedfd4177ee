"""Is compute saved by adaptive exit also time saved? Adaptive exit vs a fixed schedule with the
same mean loops.

For each shipped demo model and batch size (1, 8 and 64: small batches are where the per-loop
decision costs most): one adaptive run (samples leave the batch when they exit, so later loops run
on fewer rows) and, in the same process, interleaved with it, a fixed run whose per-step loop counts
have the same total (``AxN+BxM`` with A = B + 1: the fixed schedule closest to the adaptive run's
mean loop count), plus fixed L_max for reference. Wall-clock is the median of ``--repeats``
alternating calls. Every call uses the same seed, so the adaptive run does the same loops each time
and the matched total is the total it timed (with a seed per call, its loops vary from call to call
around the one call they were matched to; at batch 1 by several percent). Target: adaptive ≤ 1.15×
the matched fixed run. Prints a table and writes JSON.

    python benchmarks/adaptive_vs_fixed.py [--batches 1,8,64 --repeats 5 --threads 1] [--smoke]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from elt.fileio import write_json

DEFAULT_POINTS = {"masked": "exit:0.2", "diffusion": "exit:0.05"}


def matched_schedule(mean_loops: float, steps: int) -> str:
    """A fixed per-step schedule of ``steps`` steps whose loops add up to round(mean × steps)."""
    total = int(round(mean_loops * steps))
    low = max(total // steps, 1)
    high_steps = total - low * steps
    if high_steps <= 0:
        return str(low)
    return f"{low + 1}x{high_steps}+{low}x{steps - high_steps}"


def timed(generator, labels, loops, steps, seed) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time of a one-thread
    run is the steadier measure of the work done; on an idle machine the two agree."""
    start, cpu = time.perf_counter(), time.process_time()
    generator.generate(labels, loops=loops, steps=steps, seed=seed)
    return time.perf_counter() - start, time.process_time() - cpu


def measure(generator, paradigm: str, batch: int, args) -> dict:
    """One row: the adaptive point, the fixed schedule of the same total loops and L_max,
    interleaved."""
    steps = args.steps or generator.sampling_settings(None, None)[0]
    labels = np.arange(batch) % generator.num_classes
    point = DEFAULT_POINTS[paradigm]
    _, used = generator.generate(
        labels, loops=point, steps=steps, seed=0, return_loops=True
    )  # warm-up
    mean_loops = float(used.mean())
    fixed = matched_schedule(mean_loops, steps)
    top = generator.trained_loops
    runs: dict[str, list[float]] = {point: [], fixed: [], str(top): []}
    cpu_runs: dict[str, list[float]] = {k: [] for k in runs}
    timed(generator, labels, fixed, steps, 0)  # warm-up
    for _ in range(
        args.repeats
    ):  # alternate so that load changes on a shared machine hit all alike
        for loops in runs:
            wall, cpu = timed(generator, labels, loops, steps, 0)  # seed 0: the loops matched
            runs[loops].append(wall)
            cpu_runs[loops].append(cpu)
    seconds = {k: statistics.median(v) for k, v in runs.items()}
    cpu_seconds = {k: statistics.median(v) for k, v in cpu_runs.items()}
    gflops = {
        point: generator.gflops_per_sample(point, steps, loops_used=used),
        fixed: generator.gflops_per_sample(fixed, steps),
        str(top): generator.gflops_per_sample(top, steps),
    }
    return {
        "model": paradigm,
        "steps": steps,
        "batch": batch,
        "adaptive": point,
        "adaptive_mean_loops": mean_loops,
        "matched_fixed": fixed,
        "seconds": seconds,
        "all_seconds": runs,
        "cpu_seconds": cpu_seconds,
        "all_cpu_seconds": cpu_runs,
        "gflops_per_sample": gflops,
        "cpu_ratio_adaptive_to_matched": cpu_seconds[point] / cpu_seconds[fixed],
        "ratio_adaptive_to_matched": seconds[point] / seconds[fixed],
        "ratio_adaptive_to_lmax": seconds[point] / seconds[str(top)],
        "target": 1.15,
        "meets_target": seconds[point] / seconds[fixed] <= 1.15,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,64", help="comma-separated batch sizes")
    parser.add_argument(
        "--batch", type=int, default=None, help="one batch size (overrides --batches)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: each model's config)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--paradigm", choices=("both", "masked", "diffusion"), default="both")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks that the script runs"
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "adaptive_vs_fixed.json")
    )
    args = parser.parse_args()
    batches = [args.batch] if args.batch else [int(b) for b in args.batches.split(",")]
    if args.smoke:
        batches, args.repeats, args.steps = [1, 8], 1, 3
    torch.set_num_threads(args.threads)

    from elt.demo import shipped_models
    from elt.inference.checkpoints import load_generator

    models = shipped_models()
    paradigms = ("masked", "diffusion") if args.paradigm == "both" else (args.paradigm,)
    rows = []
    for paradigm in paradigms:
        generator = load_generator(models[paradigm])
        for batch in batches:
            rows.append(measure(generator, paradigm, batch, args))
    header = [
        "model",
        "batch",
        "adaptive",
        "mean L",
        "matched fixed",
        "s adaptive",
        "s matched",
        "s L_max",
        "ratio",
        "≤1.15",
        "CPU ratio",
    ]
    table = [header]
    for r in rows:
        s = r["seconds"]
        table.append(
            [
                r["model"],
                str(r["batch"]),
                r["adaptive"],
                f"{r['adaptive_mean_loops']:.2f}",
                r["matched_fixed"],
                f"{s[r['adaptive']]:.2f}",
                f"{s[r['matched_fixed']]:.2f}",
                f"{list(s.values())[-1]:.2f}",
                f"{r['ratio_adaptive_to_matched']:.3f}",
                "yes" if r["meets_target"] else "NO",
                f"{r['cpu_ratio_adaptive_to_matched']:.3f}",
            ]
        )
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)))
    record = {
        "rows": rows,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "smoke": args.smoke,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(  # atomic: no half-written file under its name
        out, record, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
