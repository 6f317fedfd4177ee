"""``elt`` command line: a thin layer over the Python API.

    elt train CONFIG [key=value ...]      train (either paradigm, chosen by the config)
    elt sample --ckpt DIR --loops 1,2,4   write .npz samples per loop count and a grid PNG
    elt info CKPT                         what a checkpoint holds
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from elt import __version__
from elt.errors import UserError

EPILOG = "Run 'elt COMMAND --help' for a command's options. Configs: YAML path or a shipped name (fmnist_masked)."

# Extra subcommands register here: name -> (module, function adding the parser). Each module provides
# ``add_parser(subparsers)`` which sets ``func`` on its parser. Keeps this file free of paradigm imports.
EXTRA_COMMANDS: dict[str, str] = {
    "tokenizer": "elt.tokenizers.cli",
    "eval": "elt.eval.cli",
    "bench": "elt.bench",
    "demo": "elt.demo",
}


def parse_loops(text: str) -> list[int]:
    """``"1,2,4"`` or ``"1-4"`` or ``"1-4,6"`` → sorted unique loop counts ≥ 1."""
    values: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                values.update(range(lo, hi + 1))
            elif part:
                values.add(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid loop list {text!r}; use e.g. 1,2,4 or 1-4") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"invalid loop list {text!r}; loop counts are integers >= 1")
    return sorted(values)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


# -- train ----------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from elt.config import load_config
    from elt.train.signals import TrainingInterrupted
    from elt.train.trainer import train

    cfg = load_config(args.config, args.overrides)
    try:
        final = train(cfg, resume=args.resume, progress=not args.no_progress)
    except TrainingInterrupted as stop:  # preempted: a checkpoint was written, exit 128 + signal number
        print(f"elt: {stop}", file=sys.stderr)
        return 128 + stop.signum
    print(f"checkpoint: {final}")
    print(f"sample grids: {final.parent.parent / 'samples'}")
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train an ELT model. Every config field can be overridden as key=value "
                                   "(e.g. model.loops=6 train.steps=500).")
    p.add_argument("config", help="YAML config path or shipped name (fmnist_masked, fmnist_diffusion, ...)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="resume: 'auto' = newest valid checkpoint of the run directory (fresh start if none), or a "
                        "checkpoint path")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


# -- sample --------------------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    import elt
    from elt.sampling import sample_to_disk
    from elt.train.distributed import distributed_session

    with distributed_session(args.device) as env:  # under torchrun: sampling sharded across ranks
        generator = elt.load(args.ckpt, ema=not args.raw_weights, device=env.device, overrides=args.overrides)
        loops = args.loops or list(range(1, generator.trained_loops + 1))
        record = sample_to_disk(generator, loops, args.num, args.out, seed=args.seed, steps=args.steps,
                                guidance=args.guidance, batch_size=args.batch_size, progress=not args.no_progress)
    if env.is_main:
        grids = ", ".join([record["grid"], *record.get("animations", [])])
        print(f"wrote {', '.join(record['files'].values())} and {grids} to {args.out}")
    return 0


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate samples at several loop counts",
                       description="Generate class-balanced samples from a checkpoint at each loop count: "
                                   "samples_L<L>.npz (arr_0 uint8 N×H×W×C, video N×T×H×W×C; arr_1 labels) and "
                                   "grid.png (video: also grid.gif, and grid.mp4 with PyAV).")
    p.add_argument("--ckpt", required=True, help="checkpoint or run directory, or a shipped model (demo:masked, ...)")
    p.add_argument("--loops", type=parse_loops, default=None, help="loop counts, e.g. 1,2,4 or 1-6 (default 1..L_max)")
    p.add_argument("--num", type=positive_int, default=100, help="samples per loop count (default 100)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the config's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--raw-weights", action="store_true", help="use raw weights instead of the EMA")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="sampling settings, e.g. masked.temperature_base=4.5 or diffusion.sampler=ddpm")
    p.set_defaults(func=cmd_sample)


# -- info -----------------------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from elt.train.checkpoint import load_config_of, load_generator, resolve_checkpoint

    ckpt = resolve_checkpoint(args.ckpt)
    cfg = load_config_of(ckpt)
    generator = load_generator(ckpt)
    backbone = generator.backbone
    info = {
        "checkpoint": str(ckpt),
        "paradigm": cfg.paradigm,
        "mode": cfg.ilsd.mode,
        "unique_layers": backbone.unique_layers,
        "trained_loops": backbone.loops,
        "width": backbone.dim,
        "parameters": sum(p.numel() for p in generator.parameters()),
        "backbone_parameters": sum(p.numel() for p in backbone.parameters()),
        "gflops_per_sample": {str(k): float(f"{generator.gflops_per_sample(loops=k):.6g}")
                              for k in range(1, backbone.loops + 1)},
    }
    print(json.dumps(info, indent=2))
    return 0


def add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a checkpoint", description="Print what a checkpoint holds.")
    p.add_argument("ckpt", help="checkpoint or run directory, or a shipped model (demo:masked, ...)")
    p.set_defaults(func=cmd_info)


# -- export ---------------------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from elt.train.checkpoint import export_inference

    out = export_inference(args.ckpt, args.out, half=not args.fp32)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"wrote inference checkpoint {out} ({size:.1f} MiB); load it with elt.load({str(out)!r})")
    return 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write an inference-only checkpoint (EMA weights, fp16)",
                       description="Write config.yaml + EMA weights (fp16 unless --fp32) to OUT: what elt.load, "
                                   "elt sample and elt eval need, without optimizer state.")
    p.add_argument("--ckpt", required=True, help="checkpoint or run directory, or a shipped model (demo:masked, ...)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    p.set_defaults(func=cmd_export)


BUILTIN: list[Callable] = [add_train, add_sample, add_info, add_export]


THREADS_HELP = ("CPU threads for PyTorch (default: $ELT_THREADS, else the config's train.threads, else half the "
                "CPUs, at least 1: full cores collapse when another job runs)")


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` on every (sub)command that has none of its own; one destination, never defaulted by a
    subcommand, so ``elt --threads 1 demo`` and ``elt demo --threads 1`` mean the same."""
    if "--threads" not in parser._option_string_actions:
        parser.add_argument("--threads", dest="global_threads", type=positive_int, default=argparse.SUPPRESS,
                            metavar="N", help=THREADS_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_threads_option(child)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="elt", description="Elastic Looped Transformers for visual "
                                     "generation: train once, sample at any loop count.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"elt {__version__}")
    parser.add_argument("--threads", dest="global_threads", type=positive_int, default=None, metavar="N",
                        help=THREADS_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in BUILTIN:
        add(sub)
    for module in EXTRA_COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    _add_threads_option(parser)
    return parser


def apply_threads(args: argparse.Namespace) -> int:
    """``--threads`` becomes ``ELT_THREADS`` (so workers and subprocesses inherit it), then is applied."""
    import os

    from elt.runtime import THREADS_ENV, set_threads

    threads = getattr(args, "global_threads", None)
    if threads:
        os.environ[THREADS_ENV] = str(threads)
    return set_threads()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may follow options (elt train CFG --resume auto model.loops=6)
        if getattr(args, "command", None) in ("train", "sample") and all("=" in item and not item.startswith("-")
                                                                          for item in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if hasattr(args, "no_progress") and not sys.stderr.isatty():
        args.no_progress = True  # progress bars only on a terminal: in a log file they are carriage-return noise
    try:
        apply_threads(args)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"elt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("elt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
