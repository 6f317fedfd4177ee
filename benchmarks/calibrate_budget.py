"""Does a latency budget hold? Time `elt calibrate` on a model, then, for budgets placed just above
each point of its latency front, pick the point `elt sample --budget-ms` would pick and re-measure
that point's latency in a fresh process (same threads, same latency batch, median of the same number
of calls).

    python benchmarks/calibrate_budget.py --ckpt demo:diffusion  # default grid, 200 samples
    python benchmarks/calibrate_budget.py --ckpt demo:masked --smoke  # tiny grid and sample count

Prints one row per budget (budget, point picked, calibrated and re-measured latency, their ratios)
and the calibration's wall time, and writes JSON (default runs/bench/calibrate_budget_<model>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from elt.fileio import write_json

# re-measures one point in a fresh interpreter, exactly as elt calibrate measures latency
FRESH = """
import json, sys
import elt
from elt.eval.sweep import measure_latency
from elt.runtime import set_threads
ckpt, loops, steps, guidance, batch, repeats, seed = json.loads(sys.argv[1])
set_threads()
g = elt.load(ckpt)
stats = measure_latency(g, loops, steps, guidance, batch=batch, repeats=repeats, seed=seed)
print(json.dumps(stats))
"""


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="demo:diffusion")
    parser.add_argument(
        "--threads", type=int, default=None, help="passed to elt (default: elt's own default)"
    )
    parser.add_argument(
        "--num", type=int, default=200, help="samples per point for quality (elt calibrate --num)"
    )
    parser.add_argument("--loops", default=None, help="points (default: elt calibrate's grid)")
    parser.add_argument(
        "--margin", type=float, default=0.05, help="budget = front latency × (1 + margin)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="3 points, 20 samples, 3 steps: checks the script runs"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    name = args.ckpt.replace("demo:", "").replace("/", "_").strip("_")
    out = Path(args.out or f"runs/bench/calibrate_budget_{name}.json")
    env = dict(os.environ)
    if args.threads:
        env["ELT_THREADS"] = str(args.threads)
    extra = (
        ["--loops", "1,2,exit:0.1", "--num", "20", "--batch-size", "10", "--steps", "3"]
        if args.smoke
        else [*(["--loops", args.loops] if args.loops else []), "--num", str(args.num)]
    )
    with tempfile.TemporaryDirectory(prefix="elt-calibrate-budget-") as tmp:
        command = [
            sys.executable,
            "-m",
            "elt.cli",
            "calibrate",
            "--ckpt",
            args.ckpt,
            "--out",
            tmp,
            "--no-progress",
            *extra,
        ]
        start = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        calibrate_s = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"elt calibrate failed:\n{proc.stderr[-2000:]}")
        record = json.loads((Path(tmp) / "calibration.json").read_text())
    from elt.anytime import choose_point

    prov = record["provenance"]
    front = sorted(
        (p for p in record["points"] if p.get("pareto_latency")), key=lambda p: p["latency_ms"]
    )
    print(
        f"elt calibrate --ckpt {args.ckpt}: {len(record['points'])} points, {prov['n']} samples "
        "each, "
        f"{calibrate_s:.0f} s wall ({prov['threads']} thread(s), {cpus()} CPUs, {prov['machine']})"
    )
    print(
        f"{'budget ms':>10} {'picked':>12} {'calibrated':>11} {'fresh':>8} {'fresh/budget':>13} "
        f"{'fresh/calib':>12}",
        flush=True,
    )
    rows = []
    for point in front:
        budget = point["latency_ms"] * (1 + args.margin)
        picked = choose_point(record, budget_ms=budget)
        spec = [
            args.ckpt,
            picked["loops"],
            prov["steps"],
            prov["guidance"],
            prov["latency"]["batch"],
            prov["latency"]["min_repeats"],
            prov["seed"],
        ]
        fresh = subprocess.run(
            [sys.executable, "-c", FRESH, json.dumps(spec)], env=env, capture_output=True, text=True
        )
        if fresh.returncode != 0:
            raise SystemExit(f"fresh measurement failed:\n{fresh.stderr[-2000:]}")
        measured = json.loads(fresh.stdout.strip().splitlines()[-1])["latency_ms"]
        row = {
            "budget_ms": budget,
            "picked": picked["loops"],
            "calibrated_ms": picked["latency_ms"],
            "fresh_ms": measured,
            "fresh_over_budget": measured / budget,
            "fresh_over_calibrated": measured / picked["latency_ms"],
        }
        rows.append(row)
        print(
            f"{budget:>10.1f} {row['picked']:>12} {row['calibrated_ms']:>11.1f} {measured:>8.1f} "
            f"{row['fresh_over_budget']:>13.2f} {row['fresh_over_calibrated']:>12.2f}",
            flush=True,
        )
    worst = max((r["fresh_over_budget"] for r in rows), default=float("nan"))
    print(
        f"worst fresh/budget: {worst:.2f} (within 15 %: {'yes' if worst <= 1.15 else 'no'}); "
        f"calibration {calibrate_s / 60:.1f} min"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "ckpt": args.ckpt,
        "smoke": args.smoke,
        "calibrate_seconds": calibrate_s,
        "points": len(record["points"]),
        "n": prov["n"],
        "threads": prov["threads"],
        "cpus": cpus(),
        "machine": prov["machine"],
        "platform": platform.platform(),
        "loadavg_at_end": os.getloadavg()[0],
        "rows": rows,
        "worst_fresh_over_budget": worst,
    }
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
