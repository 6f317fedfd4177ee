"""Wall time of the demo, alone and beside one other CPU-bound process, at the default thread count
and oversubscribed (one thread per CPU, PyTorch's own default).

    python benchmarks/demo_time.py                 # `elt demo` with this interpreter's elt
    python benchmarks/demo_time.py --fresh-clone   # `git clone` + `make demo` (setup included)
    python benchmarks/demo_time.py --threads default,all --load 0,1 --out runs/bench/demo_time.json

The extra load is a Python busy loop (one process, one core). Prints a table and writes JSON with
the machine, the CPU count and the load average at the start of each case."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from elt.fileio import write_json

ROOT = Path(__file__).resolve().parent.parent


def burn(stop) -> None:  # one CPU-bound process: the "other job" on a shared machine
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) % 2**31


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_case(threads: str, load: int, fresh_clone: bool, per_class: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ELT_THREADS")}
    if threads == "all":
        env["ELT_THREADS"] = str(cpus())  # what PyTorch would take by itself
    elif threads != "default":
        env["ELT_THREADS"] = threads
    stop = mp.Event()
    burners = [mp.Process(target=burn, args=(stop,), daemon=True) for _ in range(load)]
    for p in burners:
        p.start()
    loadavg = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="elt-demo-time-"))
    try:
        extra = ["--per-class", str(per_class)] if per_class else []
        if fresh_clone:
            subprocess.run(["git", "clone", "-q", str(ROOT), str(workdir / "elt")], check=True)
            flags = f"--no-progress {' '.join(extra)}".strip()
            command = ["make", "-C", str(workdir / "elt"), "demo", f"DEMO_FLAGS={flags}"]
        else:
            command = [
                sys.executable,
                "-m",
                "elt.cli",
                "demo",
                "--out",
                str(workdir / "out"),
                "--no-progress",
                *extra,
            ]
        start = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    finally:
        stop.set()
        for p in burners:
            p.join(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"demo failed ({threads=}, {load=}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    used = next((line for line in proc.stdout.splitlines() if "thread(s)" in line), "")
    return {
        "threads": threads,
        "extra_load": load,
        "fresh_clone": fresh_clone,
        "seconds": round(seconds, 1),
        "loadavg_at_start": round(loadavg, 2),
        "demo_line": used.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", default="default,all", help="comma list: default, all, or a number"
    )
    parser.add_argument("--load", default="0,1", help="comma list of extra CPU-bound processes")
    parser.add_argument(
        "--fresh-clone", action="store_true", help="time `git clone` + `make demo` (setup included)"
    )
    parser.add_argument(
        "--per-class", type=int, default=None, help="passed to elt demo (default: its own)"
    )
    parser.add_argument("--out", default="runs/bench/demo_time.json")
    args = parser.parse_args()
    print(
        f"demo wall time — {platform.processor() or platform.machine()}, {cpus()} CPUs, "
        f"{'fresh clone + make demo' if args.fresh_clone else 'elt demo'}"
    )
    print(f"{'threads':>8} {'extra load':>10} {'seconds':>8} {'loadavg':>8}", flush=True)
    rows = []
    for n in args.load.split(","):
        for t in args.threads.split(","):
            r = run_case(t, int(n), args.fresh_clone, args.per_class)
            rows.append(r)
            print(
                f"{r['threads']:>8} {r['extra_load']:>10} {r['seconds']:>8.1f} "
                f"{r['loadavg_at_start']:>8.2f}",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        out,
        {
            "machine": platform.platform(),
            "cpus": cpus(),
            "python": platform.python_version(),
            "rows": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
