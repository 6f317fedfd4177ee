"""``elt demo``: the shipped models at every loop count (the work is in :mod:`elt.demo`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from elt import demo as demo_lib
from elt.cli.args import bounded_int, seed

MAX_PER_CLASS = 1000  # 10 000 samples per model and loop count: minutes on a CPU already


def cmd_demo(args: argparse.Namespace) -> int:
    from elt.config import check_options
    from elt.fileio import check_output_dir

    check_options(
        at_least_one={"--per-class": args.per_class, "--jobs": args.jobs},
        seeds={"--seed": args.seed},
    )
    check_output_dir(args.out, "--out")
    paradigms = demo_lib.PARADIGMS if args.paradigm == "both" else (args.paradigm,)
    start = time.perf_counter()
    record = demo_lib.run_demo(
        args.out,
        paradigms,
        per_class=args.per_class,
        seed=args.seed,
        progress=not args.no_progress,
        vanilla=False if args.no_vanilla else None,
        jobs=args.jobs,
        video=False if args.no_video else None,
    )
    out = Path(args.out)
    if not args.no_vanilla:
        without = [p for p in paradigms if f"{p}-vanilla" not in record["vanilla"]]
        if without:
            print(
                f"(this install ships no vanilla-looped demo model for {', '.join(without)}: ILSD "
                "only there)"
            )
    for name, info in record["models"].items():
        accs = ", ".join(
            f"L={r['loops']}: {100 * r['class_accuracy']:.0f}%" for r in info["results"]
        )
        print(
            f"demo:{name} ({info['unique_layers']} unique layers, {info['mode']}, trained at "
            f"L={info['trained_loops']}): class accuracy {accs}"
        )
        if info.get("adaptive"):
            a = info["adaptive"]
            print(
                f"  adaptive {a['loops']}: class accuracy {100 * a['class_accuracy']:.0f}% with "
                f"{a['mean_loops']:.2f} loops per step on average"
            )
    for panel in record["steps"]:
        grid = out / f"{panel}_grid.png"
        print(
            f"grid: {grid}"
            + (f" (animated: {grid.with_suffix('.gif')})" if panel == demo_lib.VIDEO else "")
        )
    print(f"quality vs loops: {out / record['plot']}")
    print(
        f"record: {out / 'demo.json'}  ({time.perf_counter() - start:.0f} s, {record['jobs']} "
        "process(es) of "
        f"{record['threads']} thread(s))"
    )
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the shipped ILSD and vanilla models at every loop count (CPU, < 1 min)",
        description=demo_lib.__doc__.splitlines()[0].replace("``", ""),
    )
    p.add_argument("--out", default="elt-demo", help="output directory (default ./elt-demo)")
    p.add_argument(
        "--paradigm",
        choices=("both", *demo_lib.PARADIGMS),
        default="both",
        help="image paradigms to show (default both); the video models are masked ones, shown with "
        "both and masked",
    )
    p.add_argument(
        "--per-class",
        type=bounded_int(1, MAX_PER_CLASS),
        default=demo_lib.DEFAULT_PER_CLASS,
        help=f"samples per class, model and loop count (default {demo_lib.DEFAULT_PER_CLASS})",
    )
    p.add_argument("--no-vanilla", action="store_true", help="only the ILSD models (half the time)")
    p.add_argument(
        "--no-video",
        action="store_true",
        help="leave out the video models (shown with the masked paradigm where the install ships "
        "them)",
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument(
        "--jobs",
        type=bounded_int(1, 256),
        default=None,
        metavar="N",
        help="processes sampling side by side, each with --threads threads (default: 2 where there "
        "are "
        "2 CPUs or more, else 1; the images do not depend on it)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
