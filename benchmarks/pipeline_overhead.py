"""The diffusers pipelines' cost over elt's own sampling, and their cold start.

1. Sampling time, side by side and interleaved in one process: ``elt.load(name).generate(...)``
   against ``ELT*Pipeline.from_pretrained(name)(...)`` (default ``output_type="pil"``: the PIL
   conversion is counted) at batch 1 and 64, same loops, steps and seeds; the order alternates each
   round; medians (batch 1: three times the rounds). Target: pipeline / elt ≤ 1.05. The pipeline's
   own time (its call minus the elt ``generate`` inside it) is reported too: on a busy machine it
   bounds the overhead more tightly than the ratio of two noisy medians.
2. Cold start: a fresh Python process that imports ``elt.pipelines``, loads a Hub folder written by
   ``elt export --format hub`` with ``from_pretrained`` and generates one image (wall time measured
   by the parent, from spawn to exit), next to the same with ``elt.load``. Target: < 3 s.

Prints a table and writes JSON::

    python benchmarks/pipeline_overhead.py [--models masked diffusion] [--batches 1 64]
        [--rounds 5] [--cold-runs 3] [--out benchmarks/results/pipeline_overhead.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import elt
from elt.fileio import write_json
from elt.pipelines import load_pipeline

COLD_PIPELINE = """
import time
t0 = time.perf_counter()
from elt.pipelines import load_pipeline
t1 = time.perf_counter()
pipe = load_pipeline({folder!r})
pipe.set_progress_bar_config(disable=True)
t2 = time.perf_counter()
pipe(class_labels=[0], generator=0)
t3 = time.perf_counter()
print("SPLIT", t1 - t0, t2 - t1, t3 - t2)
"""

COLD_ELT = """
import time
t0 = time.perf_counter()
import elt
t1 = time.perf_counter()
generator = elt.load({folder!r})
t2 = time.perf_counter()
generator.generate([0], seed=0)
t3 = time.perf_counter()
print("SPLIT", t1 - t0, t2 - t1, t3 - t2)
"""


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def side_by_side(name: str, batch: int, rounds: int, loops, steps) -> dict:
    reference = elt.load(f"demo:{name}")
    pipe = load_pipeline(f"demo:{name}")
    pipe.set_progress_bar_config(disable=True)
    labels = [i % reference.num_classes for i in range(batch)]
    run_elt = lambda seed: reference.generate(labels, loops, steps, seed=seed)  # noqa: E731
    run_pipe = lambda seed: pipe(labels, steps, generator=seed, loops=loops)  # noqa: E731
    # time spent inside elt's generate during each pipeline call: the rest is the pipeline's own
    # work (argument checks, seed mapping, GFLOPs, PIL conversion), robust to a busy machine
    inner: list[float] = []
    generate = pipe.elt_generator.generate

    def timed_generate(*a, **k):
        start = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            inner.append(time.perf_counter() - start)

    pipe.elt_generator.generate = timed_generate
    run_elt(0), run_pipe(0)  # warm-up (allocator, first-call costs)
    times = {"elt": [], "pipeline": []}
    inner.clear()
    own: list[float] = []
    for r in range(rounds):
        order = [("elt", run_elt), ("pipeline", run_pipe)]
        for key, run in order if r % 2 == 0 else order[::-1]:
            times[key].append(timed(lambda run=run, seed=r + 1: run(seed)))
            if key == "pipeline":
                own.append(times[key][-1] - inner[-1])
    elt_s, pipe_s = statistics.median(times["elt"]), statistics.median(times["pipeline"])
    return {
        "model": f"demo:{name}",
        "batch": batch,
        "loops": loops,
        "steps": steps if steps is not None else int(reference.sampling_settings(None, None)[0]),
        "rounds": rounds,
        "elt_s": elt_s,
        "pipeline_s": pipe_s,
        "ratio": pipe_s / elt_s,
        "pipeline_own_s": statistics.median(own),
        "own_ratio": 1 + statistics.median(own) / elt_s,
        "elt_all_s": times["elt"],
        "pipeline_all_s": times["pipeline"],
    }


def cold_start(name: str, folder: Path, runs: int) -> dict:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = {"model": f"demo:{name}", "folder": "elt export --format hub", "runs": runs}
    for key, script in (("pipeline", COLD_PIPELINE), ("elt", COLD_ELT)):
        walls, splits, cpus = [], [], []
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", script.format(folder=str(folder))],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(
                after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            )  # CPU seconds of the child: less sensitive than wall time to a busy machine
            line = next(x for x in done.stdout.splitlines() if x.startswith("SPLIT"))
            splits.append([float(v) for v in line.split()[1:]])
        best = min(range(runs), key=lambda i: walls[i])
        result[key] = {
            "wall_s_median": statistics.median(walls),
            "wall_s_all": walls,
            "cpu_s_median": statistics.median(cpus),
            "import_s": statistics.median(s[0] for s in splits),
            "load_s": statistics.median(s[1] for s in splits),
            "first_image_s": statistics.median(s[2] for s in splits),
            "fastest_split": splits[best],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["masked", "diffusion"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loops", default="2", help="operating point for both (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="default: each model's own")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start part")
    parser.add_argument("--out", default="benchmarks/results/pipeline_overhead.json")
    args = parser.parse_args()
    loops = int(args.loops) if args.loops.isdigit() else args.loops

    rows = [
        side_by_side(name, batch, args.rounds * (3 if batch == 1 else 1), loops, args.steps)
        for name in args.models
        for batch in args.batches
    ]
    print(
        f"{'model':<16} {'batch':>5} {'elt s':>8} {'pipeline s':>10} {'ratio':>6} "
        f"{'own ms':>7} {'1+own/elt':>9}"
    )
    for row in rows:
        print(
            f"{row['model']:<16} {row['batch']:>5} {row['elt_s']:>8.3f} "
            f"{row['pipeline_s']:>10.3f} {row['ratio']:>6.3f} "
            f"{1000 * row['pipeline_own_s']:>7.1f} {row['own_ratio']:>9.4f}"
        )

    cold = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [] if args.no_cold else args.models:
            folder = elt.export(f"demo:{name}", Path(tmp) / name, format="hub")
            cold.append(cold_start(name, folder, args.cold_runs))
    print()
    print(
        f"{'cold start':<16} {'path':<9} {'wall s':>7} {'CPU s':>6} {'import':>7} {'load':>6} "
        f"{'image':>6}"
    )
    for row in cold:
        for key in ("pipeline", "elt"):
            c = row[key]
            print(
                f"{row['model']:<16} {key:<9} {c['wall_s_median']:>7.2f} {c['cpu_s_median']:>6.2f} "
                f"{c['import_s']:>7.2f} {c['load_s']:>6.2f} {c['first_image_s']:>6.2f}"
            )

    record = {
        "benchmark": "pipeline_overhead",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
        },
        "side_by_side": rows,
        "cold_start": cold,
        "targets": {"ratio_max": 1.05, "cold_start_s_max": 3.0},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
