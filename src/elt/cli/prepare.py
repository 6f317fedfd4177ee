"""``elt prepare``: the options; the sharded, resumable cache build is :mod:`elt.data.prepare`."""

from __future__ import annotations

import argparse
import os

from elt.cli.args import positive_int


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def cmd_prepare(args: argparse.Namespace) -> int:
    from elt.config import load_config
    from elt.data.prepare import prepare
    from elt.data.shape import resolve_data_config
    from elt.progress import reporting

    cfg = resolve_data_config(load_config(args.config, args.overrides))
    with reporting():  # a missing tokenizer is trained first: its summary and progress lines
        result = prepare(
            cfg,
            shard_size=args.shard_size,
            progress=not args.no_progress,
            workers=args.workers,
            precision=args.precision,
        )
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"cache: {result['path']} ({result['count']} items, {result.get('skipped', 0)} "
            "unreadable skipped, "
            f"{result['encoded']} encoded now in {result['seconds']:.1f} s)"
        )
    return 0


def add_parsers(sub) -> None:
    from elt.data.prepare import DEFAULT_SHARD_SIZE, PRECISIONS

    p = sub.add_parser(
        "prepare",
        help="encode a training set into the latent/token cache (torchrun: sharded)",
        description="Encode the training set a config names into the cache elt train reads "
        "(VQ/FSQ tokens or VAE latents). Under torchrun every process encodes its "
        "own shards; a rerun after a kill resumes from the finished shards.",
    )
    p.add_argument(
        "config", help="YAML config path or shipped name (e.g. imagenet256_masked_elt_l_8x3)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument(
        "--shard-size",
        type=positive_int,
        default=DEFAULT_SHARD_SIZE,
        help=f"items per shard (rounded to the encode batch; default {DEFAULT_SHARD_SIZE})",
    )
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="DataLoader workers decoding images, per process (default: data.num_workers when it "
        "is "
        "set, else the CPUs per process less one, at most 16; 0: decode in the process itself)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="the encoder's precision: auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16 "
        "(latents and tokens are stored as fp32 / integers either way)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)
