"""``elt bench`` (also ``python -m elt.bench``): the options; the benchmarks are
:mod:`elt.bench`."""

from __future__ import annotations

import argparse
import os
import sys

import elt.bench as bench_lib
from elt.bench import peers, suites
from elt.cli.args import batch_size, bounded_int, int_list, parse_loops
from elt.errors import UserError
from elt.limits import MAX_BATCH, MAX_LOOPS, MAX_SAMPLING_STEPS, MAX_WIDTH
from elt.runtime import THREADS_ENV, set_threads

LOOPS_TYPE = bounded_int(1, MAX_LOOPS)


def comma_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "benchmark",
        choices=[*suites.BENCHMARKS, "all", "suite"],
        help="which benchmark (all: train, sampling, memory; suite: the GPU suite)",
    )
    p.add_argument(
        "--kind",
        choices=("masked", "diffusion"),
        default="masked",
        help="paradigm-shaped synthetic model (default masked)",
    )
    p.add_argument("--width", type=bounded_int(1, MAX_WIDTH), default=256)
    p.add_argument(
        "--heads", type=bounded_int(1, MAX_WIDTH), default=None, help="default: width / 64"
    )
    p.add_argument("--unique-layers", type=bounded_int(1, 1024), default=4, help="N, unique blocks")
    p.add_argument(
        "--max-loops",
        dest="loops",
        type=LOOPS_TYPE,
        default=4,
        help="L_max, the trained loop count (the unique stack has N·L layers, 1 loop)",
    )
    p.add_argument(
        "--tokens",
        type=bounded_int(1, 2**20),
        default=64,
        help="tokens per sample (e.g. 256 = 16×16 latents)",
    )
    p.add_argument(
        "--vocab", type=bounded_int(1, 2**24), default=1024, help="codebook size (masked)"
    )
    p.add_argument(
        "--batch", type=batch_size, default=32, help="train, memory, trainer (sampling: --batches)"
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 on CUDA (scaling: bf16 everywhere, as the demo models sample)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile each block")
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (eager: check tracing only)",
    )
    p.add_argument(
        "--checkpoint-loops", action="store_true", help="per-loop activation checkpointing (train)"
    )
    p.add_argument(
        "--loops-list",
        type=parse_loops,
        default=None,
        help="sampling: loop counts used for sampling (1-4, 1,2,4; default 1-4); scaling: the "
        "loops axis (default 1 to 2·L_max)",
    )
    p.add_argument(
        "--batches",
        type=int_list(MAX_BATCH, "batch sizes"),
        default=None,
        help="sampling: batch sizes (every loop count of --loops-list is timed at each; default "
        "1,8,32); "
        "peers: default 1,8,64; scaling: the batch axis (default 1,4,16,64,256)",
    )
    p.add_argument(
        "--paradigms",
        type=comma_list,
        default=["diffusion", "masked"],
        help="scaling: diffusion,masked (default both; the demo configs' shapes)",
    )
    p.add_argument(
        "--grids",
        type=int_list(256, "grid sides"),
        default=None,
        help="scaling: token grid sides of the tokens axis, besides the demo's (default 8,16,32: "
        "8×8, 16×16, 32×32 tokens)",
    )
    p.add_argument(
        "--steps-list",
        type=int_list(MAX_SAMPLING_STEPS, "step counts"),
        default=None,
        help="scaling: sampling step counts of the steps axis (default 1,2,4,8,16)",
    )
    p.add_argument(
        "--base-batch",
        type=batch_size,
        default=4,
        help="scaling: the batch size of the loops, tokens and steps axes (default 4)",
    )
    p.add_argument(
        "--peer-configs",
        type=comma_list,
        default=list(peers.DEFAULT_CONFIGS),
        help="peers: shipped configs (or YAML paths) whose model shapes are compared "
        f"(default {','.join(peers.DEFAULT_CONFIGS)})",
    )
    p.add_argument(
        "--precisions",
        type=comma_list,
        default=["fp32", "bf16"],
        help="peers: fp32,bf16 (default both)",
    )
    p.add_argument(
        "--modes",
        type=comma_list,
        default=["eager", "compiled"],
        help="peers: eager,compiled (default both; compiled = torch.compile of both sides)",
    )
    p.add_argument(
        "--sample-steps",
        type=bounded_int(0, MAX_SAMPLING_STEPS),
        default=0,
        help="sampling steps (synthetic default 8; with --ckpt the config's; scaling: of the "
        "batch, loops and tokens axes, default 4)",
    )
    p.add_argument(
        "--ckpt", default=None, help="sampling: time this trained generator's sampler instead"
    )
    p.add_argument(
        "--warmup",
        type=bounded_int(0, 10_000),
        default=None,
        help="untimed calls per variant first (default 3; scaling 1)",
    )
    p.add_argument(
        "--repeats",
        type=bounded_int(1, 10_000),
        default=None,
        help="timed calls per variant (default 10; scaling 5; trainer: timed steps, after as many "
        "warm-up steps)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON files")
    p.add_argument("--tag", default="", help="suffix of the JSON file name (train_TAG.json)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that everything runs")


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="throughput, MFU and memory benchmarks",
        description=bench_lib.__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # whole option names: --loops (--max-loops before 0.x) ≠ --loops-list
    )
    add_arguments(p)
    p.set_defaults(func=run)


def check_sizes(args: argparse.Namespace) -> None:
    """The synthetic model's fp32 weights (blocks, positions, vocabulary) must fit this machine's
    memory."""
    from elt.limits import check_memory, transformer_parameters

    if (
        args.smoke
        or args.benchmark in ("suite", "scaling")  # scaling: the demo configs' sizes
        or (args.benchmark == "sampling" and args.ckpt)
    ):
        return
    layers = (
        args.unique_layers * args.loops
    )  # the unique stack of equal FLOPs is the largest variant
    params = transformer_parameters(args.width, layers, 4.0, args.tokens, args.vocab)
    check_memory(
        "--width",
        f"{args.width} (with --unique-layers {args.unique_layers} --max-loops {args.loops})",
        4 * params,
        needs=f"for the fp32 weights of at least {params:.3g} parameters",
    )


def run(args: argparse.Namespace) -> int:
    check_sizes(args)
    return suites.run(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m elt.bench",
        description=bench_lib.__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_arguments(parser)
    parser.add_argument(
        "--threads",
        dest="global_threads",
        type=bounded_int(1, 4096),
        default=None,
        help="CPU threads for PyTorch (default: as `elt`: $ELT_THREADS, else half the CPUs)",
    )
    try:
        args = parser.parse_args(argv)
        # as `elt` does for every command (elt.cli.apply_threads): --threads becomes $ELT_THREADS,
        # else half the CPUs, not PyTorch's thread per core (threads wait on a busy CPU)
        if args.global_threads:
            os.environ[THREADS_ENV] = str(args.global_threads)
        set_threads()
        return run(args)
    except UserError as exc:
        print(f"elt: error: {exc}", file=sys.stderr)
        return 2
