"""``elt calibrate``: argparse glue over :mod:`elt.eval.calibrate` (the measuring lives there)."""

from __future__ import annotations

import argparse
from pathlib import Path

from elt.cli.args import (
    LOOPS_HELP,
    batch_size,
    bounded_int,
    check_sampling_request,
    count,
    finite_float,
    parse_loops,
    seed,
    steps_int,
)
from elt.errors import UserError
from elt.eval import calibrate as calibrate_lib
from elt.fileio import run_dir_lock, write_json


def cmd_calibrate(args: argparse.Namespace) -> int:
    points = args.loops
    check_sampling_request(
        args.ckpt, args.num, args.batch_size, points
    )  # config.yaml: before the weights
    out, note = default_output(args.ckpt, args.out)
    if note:
        print(f"elt calibrate: {note}")
    with run_dir_lock(out):  # calibrating into a run directory: never while a training holds it
        return _calibrate(args, out, points)


def default_output(ckpt: str, out: str | None) -> tuple[Path, str | None]:
    """``--out``, else the run directory when writable; a shipped model (``demo:NAME``) or any
    checkpoint inside the installed package gets ``./calibration-NAME`` instead (nothing is written
    into the package)."""
    from elt.fileio import PACKAGE_DIR, check_output_dir
    from elt.inference.checkpoints import resolve_checkpoint

    if out is None:
        source = resolve_checkpoint(ckpt).resolve()
        if source.is_relative_to(PACKAGE_DIR):
            folder = Path(f"calibration-{source.name}")
            check_output_dir(folder, "--out")
            return folder, (
                f"{ckpt} is a model shipped inside the elt package, which is never written to: "
                f"writing to {folder.resolve()} (choose another folder with --out)"
            )
    folder, note = calibrate_lib.output_dir(ckpt, out)
    check_output_dir(folder, "--out")
    return folder, note


def _calibrate(args: argparse.Namespace, out: Path, points) -> int:
    import elt
    from elt.sampling import check_points

    generator = elt.load(args.ckpt, device=args.device)
    points = points or calibrate_lib.default_points(generator)
    steps = args.steps
    check_points(
        generator, points, steps
    )  # every schedule must fit the steps before minutes of sampling
    from elt.cli.eval import _user_errors

    partial = out / calibrate_lib.PARTIAL_FILE

    def keep(rows: list[dict]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(partial, {"checkpoint": str(args.ckpt), "points": rows})

    try:
        probe = calibrate_lib.QualityProbe(args.data_root, device=args.device)
        record = calibrate_lib.calibrate(
            generator,
            points,
            probe,
            num=args.num,
            seed=args.seed,
            steps=steps,
            guidance=args.guidance,
            batch_size=args.batch_size,
            latency_batch=args.latency_batch,
            latency_repeats=args.latency_repeats,
            measure_latency=not args.no_latency,
            progress=not args.no_progress,
            on_point=keep,
        )
    except _user_errors() as exc:
        raise UserError(str(exc)) from exc
    paths = calibrate_lib.write_calibration(record, out, str(args.ckpt))
    partial.unlink(missing_ok=True)
    calibrate_lib.print_points(record)
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
        "shipped demo:NAME model ./calibration-NAME)",
    )
    p.add_argument(
        "--loops",
        type=parse_loops,
        default=None,
        help=LOOPS_HELP + " (default: 1..L_max, L_max:1, 1:L_max and three adaptive thresholds)",
    )
    p.add_argument(
        "--num", type=count, default=200, help="samples per point for quality (default 200)"
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
