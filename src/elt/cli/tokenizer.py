"""``elt tokenizer train CONFIG [key=value ...]``: train the image or video tokenizer on its own;
``elt tokenizer convert-maskgit CHECKPOINT OUT``: convert MaskGIT's VQGAN for
``tokenizer.kind=maskgit_vq``.

``elt train`` trains the tokenizer itself when it finds none, so this command is for training one
shared tokenizer ahead of several runs (point each run's ``tokenizer.path`` at it) or for tuning it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elt.cli.args import NO_PROGRESS_HELP
from elt.errors import UserError


def tokenizer_dir(cfg, out: str | None = None) -> Path:
    """Where a config's tokenizer lives: ``--out``, else ``tokenizer.path``, else
    ``RUN/tokenizer``."""
    if out:
        return Path(out)
    if cfg.tokenizer.path:
        return Path(cfg.tokenizer.path)
    return Path(cfg.train.out_dir) / "tokenizer"


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from elt.progress import reporting

    with reporting():  # the start summary, time estimate and progress lines on stderr
        return _tokenizer_train(args)


def _tokenizer_train(args: argparse.Namespace) -> int:
    from elt.config import load_config
    from elt.data.shape import resolve_data_config
    from elt.tokenizers.factory import TRAINABLE_KINDS
    from elt.tokenizers.fsq import is_saved
    from elt.tokenizers.train import train_tokenizer

    cfg = load_config(args.config, args.overrides)
    from elt.train.checkpoint import refuse_environment_reads

    refuse_environment_reads(
        cfg
    )  # tokenizer.json stores the data settings: no environment value ends up there
    resolve_data_config(cfg)  # null data shape keys from the data; one warning per conversion
    if cfg.tokenizer.kind not in TRAINABLE_KINDS:
        raise UserError(
            f"tokenizer.kind={cfg.tokenizer.kind} is not trainable here; only "
            f"{' and '.join(TRAINABLE_KINDS)} are (pretrained_vq and maskgit_vq load from "
            "tokenizer.pretrained_path)"
        )
    out = tokenizer_dir(cfg, args.out)
    from contextlib import nullcontext

    from elt.fileio import check_output_dir, enclosing_run, exclusive_lock

    check_output_dir(out, "tokenizer output folder")
    # a tokenizer written into a run directory (RUN/tokenizer by default) holds that run's lock:
    # never while a training there uses it
    run = (
        Path(cfg.train.out_dir)
        if out == Path(cfg.train.out_dir) / "tokenizer"
        else enclosing_run(out)
    )
    if args.dry_run:  # the refusals of a real run, then the timing; no lock, nothing written
        if is_saved(out) and not args.force:
            raise UserError(
                f"a tokenizer already exists in {out}; pass --force to retrain it or --out DIR"
            )
        return dry_run_tokenizer(cfg, out)
    with exclusive_lock(run, ".lock", what="run directory") if run is not None else nullcontext():
        if is_saved(out) and not args.force:
            raise UserError(
                f"a tokenizer already exists in {out}; pass --force to retrain it or --out DIR"
            )
        if args.resume not in (None, "auto"):
            raise UserError(
                f"--resume {args.resume}: a tokenizer training resumes from its own folder; "
                "use --resume auto"
            )
        try:
            meta = train_tokenizer(
                cfg,
                out,
                progress=not args.no_progress,
                resume=args.resume == "auto",
                restart=args.force,
            )
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(str(exc).splitlines()[0]) from exc
    metrics = meta.get("metrics")
    if metrics:
        print(
            f"tokenizer {meta['hash']}: {metrics['split']} PSNR {metrics['psnr']:.2f} dB, "
            f"MSE {metrics['mse']:.5f} (pixels in [0,1], {metrics['items']} items)"
        )
    print(f"saved to {out}")
    return 0


def dry_run_tokenizer(cfg, out: Path) -> int:
    """``--dry-run``: the summary and the measured time of the training, nothing written."""
    from elt.progress import TIMED_STEPS, estimate_line, print_summary
    from elt.tokenizers.train import time_tokenizer_steps

    try:
        step_s, run = time_tokenizer_steps(cfg, TIMED_STEPS)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc).splitlines()[0]) from exc
    print_summary(
        f"dry run: would train the {cfg.tokenizer.kind} tokenizer -> {out}", run.summary(out)
    )
    print(
        estimate_line(
            "tokenizer", step_s, run.steps, f"timed over {TIMED_STEPS} steps after a warm-up step"
        ),
        file=sys.stderr,
    )
    print(f"dry run: nothing written; the tokenizer would be saved to {out}")
    return 0


def cmd_tokenizer_convert_maskgit(args: argparse.Namespace) -> int:
    from elt.fileio import check_output_dir
    from elt.tokenizers.maskgit_vq import convert_maskgit

    out = Path(args.out)
    check_output_dir(out, "tokenizer output folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out} already exists and is not empty; pass --force to replace it")
    try:
        convert_maskgit(args.checkpoint, out, replace=args.force)
    except ImportError as exc:
        raise UserError(str(exc).splitlines()[0]) from exc
    from elt.tokenizers.maskgit_vq import read_folder_config

    config = read_folder_config(out)
    print(
        f"MaskGIT VQ tokenizer: {config.codebook_size} codes of {config.embedding_dim} dims, "
        f"{config.downsample}x downsampling; saved to {out}"
    )
    print(f"use it with: tokenizer.kind=maskgit_vq tokenizer.pretrained_path={out}")
    return 0


def add_parsers(sub) -> None:
    tokenizer = sub.add_parser(
        "tokenizer",
        help="train an image or video tokenizer, or convert a pretrained one",
        description="Tokenizer commands (train: images tokenizer.kind=fsq, video fsq3d; "
        "convert-maskgit: MaskGIT's VQGAN for tokenizer.kind=maskgit_vq).",
    )
    commands = tokenizer.add_subparsers(dest="tokenizer_command", metavar="COMMAND")
    p = commands.add_parser(
        "train",
        help="train the FSQ tokenizer (image or video) a config describes",
        description="Train the FSQ tokenizer of a config (tokenizer.* and data.* fields; "
        "tokenizer.kind=fsq for images, fsq3d for video clips) "
        "and report its test PSNR/MSE. Saved to --out, else tokenizer.path, "
        "else TRAIN.OUT_DIR/tokenizer.",
    )
    p.add_argument("config", help="YAML config path or shipped name (fmnist_masked)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument(
        "--out", default=None, help="output folder (default: tokenizer.path or RUN/tokenizer)"
    )
    p.add_argument(
        "--force", action="store_true", help="retrain even if a tokenizer is already saved there"
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="auto",
        help="continue a tokenizer training stopped by Ctrl-C/SIGTERM (its state is saved in the "
        "output folder)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build the training, time a few steps, print the summary and the estimated time; "
        "write nothing",
    )
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(func=cmd_tokenizer_train)
    p = commands.add_parser(
        "convert-maskgit",
        help="convert MaskGIT's VQGAN checkpoint (Flax, or the PyTorch port) for tokenizer.kind="
        "maskgit_vq",
        description="Convert MaskGIT's ImageNet VQGAN tokenizer into a folder elt loads with "
        "tokenizer.kind=maskgit_vq tokenizer.pretrained_path=OUT. CHECKPOINT is either the "
        "released Flax checkpoint (tokenizer_imagenet256_checkpoint; needs msgpack: pip install "
        "'elt-looped[pretrained]') or the PyTorch port's state dict "
        "(maskgit-vqgan-imagenet-f16-256.bin); the format is read from the file.",
    )
    p.add_argument("checkpoint", help="the Flax msgpack checkpoint or the PyTorch state dict")
    p.add_argument("out", help="output folder (config.json + model.safetensors)")
    p.add_argument("--force", action="store_true", help="replace OUT if it already holds files")
    p.set_defaults(func=cmd_tokenizer_convert_maskgit)
    tokenizer.set_defaults(func=lambda args: tokenizer.print_help() or 0)
