"""``elt calibrate``: argparse glue over :mod:`elt.eval.calibrate` (the measuring lives there)."""

from __future__ import annotations

import argparse

from elt.cli.args import (
    LOOPS_HELP,
    batch_size,
    bounded_int,
    count,
    finite_float,
    parse_loops,
    seed,
    steps_int,
)
from elt.eval import calibrate as calibrate_lib

LATENCY_ONLY_NUM = 32  # samples per point that give the mean loops (and GFLOPs) of adaptive exits


def cmd_calibrate(args: argparse.Namespace) -> int:
    record, paths = calibrate_lib.calibrate_checkpoint(
        args.ckpt,
        args.out,
        points=args.loops,
        num=args.num or (LATENCY_ONLY_NUM if args.latency_only else 200),
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        batch_size=args.batch_size,
        latency_batch=args.latency_batch,
        latency_repeats=args.latency_repeats,
        measure_latency=not args.no_latency,
        data_root=args.data_root,
        device=args.device,
        progress=not args.no_progress,
        on_note=lambda note: print(f"elt calibrate: {note}"),
        classifier=args.classifier,
        latency_only=args.latency_only,
    )
    print(calibrate_lib.format_points(record))
    print(
        f"wrote {paths['calibration']}, {paths['json'].name}, {paths['csv'].name} and "
        f"{paths['png'].name}"
    )
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure operating points (fixed L, schedules, adaptive exits): "
        "quality, GFLOPs, latency; write the Pareto front and calibration.json",
        description=calibrate_lib.__doc__.splitlines()[0]
        + " Example: elt calibrate --ckpt runs/fmnist_diffusion",
    )
    p.add_argument("--ckpt", required=True, help="checkpoint or run directory")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: the run directory when writable; for a "
        "shipped demo:NAME model ./calibration-NAME); the run records where it went, for "
        "'elt sample --budget-ms'",
    )
    p.add_argument(
        "--loops",
        type=parse_loops,
        default=None,
        help=LOOPS_HELP + " (default: 1..L_max, L_max:1, 1:L_max and three adaptive thresholds)",
    )
    p.add_argument(
        "--num",
        type=count,
        default=None,
        help="samples per point for quality (default 200; with --latency-only 32, for the mean "
        "loops of adaptive exits)",
    )
    p.add_argument(
        "--classifier",
        default=None,
        help="quality in this classifier's features: CLS_DIR from 'elt eval train-classifier "
        "--data DIR' (needed for a model that is not Fashion-MNIST-shaped; default: the shipped "
        "Fashion-MNIST classifier)",
    )
    p.add_argument(
        "--latency-only",
        action="store_true",
        help="measure latency and GFLOPs only (no classifier: fd_cls/class_acc null); front by "
        "mean loops for the cost; --budget-ms then picks the most loops within the budget",
    )
    p.add_argument(
        "--steps", type=steps_int, default=None, help="sampling steps (default: the config's)"
    )
    p.add_argument(
        "--guidance", type=finite_float, default=None, help="CFG scale (default: the config's)"
    )
    p.add_argument(
        "--batch-size",
        type=batch_size,
        default=64,
        help="batch of the bulk generation (default 64)",
    )
    p.add_argument(
        "--latency-batch", type=batch_size, default=1, help="batch of the latency calls (default 1)"
    )
    p.add_argument("--latency-repeats", type=bounded_int(1, 10_000), default=3)
    p.add_argument(
        "--no-latency", action="store_true", help="skip latency (then --budget-ms cannot use it)"
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument(
        "--data-root", default=None, help="Fashion-MNIST folder (default: $ELT_DATA, Debian path)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_calibrate)
