"""``elt eval``: the quality-vs-compute sweep, and the classifier behind the Fashion-MNIST metrics.

    elt eval --ckpt A [--ckpt B ...] --loops 1-5 --num 1000 --out DIR
        the sweep → eval.json, eval.csv, eval.png
    elt eval --samples DIR [--ckpt A] --loops 1-5 --out DIR
        metrics of existing 'elt sample' output
    elt eval train-classifier                      (re)train the shipped classifier
    elt eval floor                                 real-vs-real floor of the domain metrics
    elt eval merge DIR_OR_JSON [...] --out DIR     one table/plot from several sweeps
    elt eval video --samples DIR --real-data moving_fmnist
        video metrics (elt.eval.video)

Argument parsing and printing only: each command is one call into :mod:`elt.eval.run` (sweep,
merge, floor, classifier) or :func:`elt.eval.video.evaluate_videos`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from elt.cli.args import (
    LOOPS_HELP,
    batch_size,
    bounded_int,
    count,
    finite_float,
    parse_loops,
    parse_steps,
    seed,
)
from elt.errors import UserError
from elt.eval import run, video
from elt.eval.sweep import format_table, output_paths

FMNIST_TRAIN = 60_000  # the floor draws its real images from the Fashion-MNIST training split
FMNIST_WHY = " (the Fashion-MNIST training images)"


def sweep_request(args: argparse.Namespace) -> run.SweepRequest:
    """The ``elt eval`` options as a :class:`~elt.eval.run.SweepRequest`."""
    return run.SweepRequest(
        ckpts=args.ckpt or [],
        samples=args.samples or [],
        names=args.name or [],
        loops=args.loops,
        steps=args.steps,
        num=args.num,
        metrics=args.metrics,
        reference=args.reference,
        classifier=args.classifier,
        inception_weights=args.inception_weights,
        i3d=args.i3d,
        data_root=args.data_root,
        guidance=args.guidance,
        seed=args.seed,
        batch_size=args.batch_size,
        latency_batch=args.latency_batch,
        latency_repeats=args.latency_repeats,
        latency=not args.no_latency,
        device=args.device,
        ema=not args.raw_weights,
        progress=not args.no_progress,
    )


def cmd_eval(args: argparse.Namespace) -> int:
    result = run.evaluate(sweep_request(args), args.out)
    if result is None:  # another rank under torchrun: rank 0 writes and prints
        return 0
    print_table(result)
    print_written(args.out)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Several ``elt eval`` outputs → one table and one plot."""
    result = run.merge(args.sources, args.out, title=args.title)
    print_table(result)
    print_written(args.out)
    return 0


def print_table(result: dict) -> None:
    print(format_table(result))
    if result.get("floor_warning"):
        print(f"elt: warning: {result['floor_warning']}", file=sys.stderr)


def print_written(out: str) -> None:
    paths = output_paths(out)
    print(f"wrote {paths['json']}, {paths['csv']}, {paths['md']} and {paths['png']}")


def cmd_train_classifier(args: argparse.Namespace) -> int:
    if args.data is not None:
        return train_folder_classifier(args)
    for option, value in (("--image-size", args.image_size), ("--holdout", args.holdout)):
        if value is not None:
            raise UserError(f"{option} goes with --data DIR (a classifier for an image folder)")

    def trained(record: dict) -> None:
        weights = Path(args.out or "fmnist-classifier") / record["weights"]
        print(
            f"test accuracy {record['test_accuracy']:.4f}; weights {weights} "
            f"(sha256 {record['sha256'][:12]}…)"
        )

    record = run.train_classifier(
        args.out or "fmnist-classifier",
        epochs=args.epochs,
        seed=args.seed,
        threads=args.threads,
        data_root=args.data_root,
        floor_num=None if args.no_floor else args.floor_num,
        progress=not args.no_progress,
        on_trained=trained,
    )
    if not args.no_floor:
        print("real-vs-real floor:", json.dumps(record["floor"]))
    return 0


def train_folder_classifier(args: argparse.Namespace) -> int:
    """``elt eval train-classifier --data DIR``: a classifier for the user's image folder."""
    out = args.out or f"classifier-{Path(args.data).resolve().name}"
    record = run.train_folder_classifier(
        args.data,
        out,
        image_size=args.image_size,
        epochs=args.epochs,
        holdout=0.15 if args.holdout is None else args.holdout,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(
        f"held-out accuracy {record['heldout_accuracy']:.4f} on {record['heldout_images']} images "
        f"({record['num_classes']} classes: {', '.join(record['class_names'])}; "
        f"{record['image_size']}×{record['image_size']}×{record['channels']}; trained on "
        f"{record['train_images']} in {record['train_seconds']:.0f} s); wrote {out} "
        f"(sha256 {record['sha256'][:12]}…)"
    )
    print("real-vs-real floor:", json.dumps(record["floor"]))
    return 0


def cmd_floor(args: argparse.Namespace) -> int:
    floor = run.floor(args.num, args.classifier, args.data_root, not args.no_progress)
    print(json.dumps(floor, indent=2))
    return 0


def cmd_video(args: argparse.Namespace) -> int:
    result = video.evaluate_videos(
        args.samples,
        real=args.real,
        real_data=args.real_data,
        out=args.out,
        loops=args.loops,
        real_num=args.real_num,
        motion=args.motion,
        sprite_size=args.sprite_size,
        data_root=args.data_root,
        classifier=args.classifier,
        use_classifier=not args.no_classifier,
        i3d=args.i3d,
        frame_stride=args.frame_stride,
        controls=args.controls,
        device=args.device,
        progress=not args.no_progress,
    )
    print(video.format_table(result))
    paths = video.video_output_paths(args.out)
    print(f"wrote {paths['json']} and {paths['png']}")
    return 0


def add_parsers(sub) -> None:
    p = _add_sweep_parser(sub)
    actions = p.add_subparsers(dest="eval_action", metavar="ACTION", prog="elt eval")
    for add in (_add_train_classifier, _add_floor, _add_merge, _add_video):
        add(actions)


def _add_sweep_parser(sub) -> argparse.ArgumentParser:
    """``elt eval``: the sweep itself."""
    p = sub.add_parser(
        "eval",
        help="quality vs compute over loop counts (and the domain classifier)",
        usage="elt eval --ckpt DIR [--ckpt DIR ...] [--samples DIR ...] [--loops 1-5] [--steps "
        "S,...] [--num N] "
        "[--out DIR] [options]\n       elt eval train-classifier [options]\n       elt eval floor "
        "[options]"
        "\n       elt eval video --samples DIR (--real FILE | --real-data moving_fmnist) [options]",
        description="Evaluate checkpoints at several loop counts: samples with balanced labels (or "
        "existing "
        "'elt sample' .npz files), metrics per loop count, GFLOPs per sample, latency and peak "
        "memory on this device. Writes eval.json (with provenance), eval.csv and eval.png "
        "(quality vs GFLOPs and vs latency, real-data floor dashed). Example: elt eval --ckpt "
        "runs/elt --ckpt runs/vanilla --loops 1-5 --num 1000 --out eval/",
        epilog="Actions: 'elt eval train-classifier' retrains the shipped Fashion-MNIST "
        "classifier (--data DIR: trains one for your image folder); "
        "'elt eval floor' prints the real-vs-real floor; 'elt eval video' evaluates video samples.",
    )
    _add_model_options(p)
    _add_metric_options(p)
    _add_sampling_options(p)
    p.set_defaults(func=cmd_eval)
    return p


def _add_model_options(p) -> None:
    """What is evaluated: checkpoints, sample folders, loop counts, sample count."""
    p.add_argument(
        "--ckpt",
        action="append",
        help="checkpoint or run directory, or demo:NAME (repeat to compare models)",
    )
    p.add_argument(
        "--samples",
        action="append",
        help="folder of 'elt sample' output (samples_L<L>.npz) to evaluate instead of sampling; "
        "pairs with --ckpt by position (which then gives GFLOPs/latency)",
    )
    p.add_argument(
        "--name", action="append", help="legend name per model (default: run directory [mode])"
    )
    p.add_argument(
        "--loops",
        type=parse_loops,
        default=None,
        help="operating points used for sampling, e.g. 1-5 or "
        "1-4,4:1,exit:0.05 (" + LOOPS_HELP + "; default 1..L_max)",
    )
    p.add_argument(
        "--steps",
        type=parse_steps,
        default=None,
        help="sampling steps, e.g. 8 or 8,16 (default: the config's)",
    )
    p.add_argument("--num", type=count, default=1000, help="samples per point (default 1000)")
    p.add_argument("--out", default="eval", help="output directory (default ./eval)")


def _add_metric_options(p) -> None:
    """The metric suite and its weights and reference data."""
    p.add_argument(
        "--metrics",
        choices=["domain", "inception", "fvd"],
        default="domain",
        help="domain: Fashion-MNIST classifier (FD_cls, KID, PRDC, class accuracy; default); "
        "inception: FID/IS/precision-recall (needs --reference, Inception weights); "
        "fvd: FVD on I3D logits (needs --reference, --i3d)",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="real reference: .npz (mu/sigma and/or arr_0) or image folder",
    )
    p.add_argument(
        "--classifier",
        default=None,
        help="classifier weights (default: the shipped Fashion-MNIST ones), or CLS_DIR from "
        "'elt eval train-classifier --data DIR' (metrics against that folder's images)",
    )
    p.add_argument(
        "--inception-weights",
        default=None,
        help="weights-inception-2015-12-05-6726825d.pth (else $ELT_INCEPTION_WEIGHTS, else "
        "torch.hub "
        "cache); never downloaded",
    )
    p.add_argument("--i3d", default=None, help="I3D TorchScript file (else $ELT_I3D_WEIGHTS)")
    p.add_argument(
        "--data-root", default=None, help="Fashion-MNIST folder (default: $ELT_DATA, Debian path)"
    )


def _add_sampling_options(p) -> None:
    """Sampling, latency measurement and device."""
    p.add_argument(
        "--guidance",
        type=finite_float,
        default=None,
        help="classifier-free guidance scale s: output = uncond + s·(cond − uncond), 1 = "
        "conditional only, "
        "0 = unconditional (default: the config's sampling.guidance)",
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--batch-size", type=batch_size, default=256)
    p.add_argument(
        "--latency-batch", type=batch_size, default=1, help="batch size of the latency runs"
    )
    p.add_argument("--latency-repeats", type=bounded_int(1, 10_000), default=3)
    p.add_argument("--no-latency", action="store_true", help="skip latency/memory measurement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--raw-weights", action="store_true", help="use raw weights instead of the EMA")
    p.add_argument("--no-progress", action="store_true")


def _add_train_classifier(actions) -> None:
    """``elt eval train-classifier``."""
    t = actions.add_parser(
        "train-classifier",
        help="train the domain feature classifier (Fashion-MNIST, or --data DIR: your folder)",
        description="Train the domain classifier on the Fashion-MNIST training split "
        "(seeded, reproducible), record its test accuracy and the real-vs-real "
        "floor next to the weights (default: the package's assets folder). With --data DIR "
        "(one subfolder per class): train one on that folder (size and channels taken from "
        "it), score it on a seeded stratified held-out split, and write weights, "
        "classifier.json and the real reference features to --out, for 'elt eval "
        "--classifier CLS_DIR' and 'elt calibrate --classifier CLS_DIR'.",
    )
    t.add_argument(
        "--data",
        default=None,
        help="an image folder (class subfolders): train a classifier for it instead of "
        "Fashion-MNIST",
    )
    t.add_argument(
        "--image-size",
        type=bounded_int(8, 1024),
        default=None,
        help="with --data: input side in px (default: the folder's; use your model's "
        "data.image_size)",
    )
    t.add_argument(
        "--holdout",
        type=finite_float,
        default=None,
        help="with --data: held-out fraction per class (default 0.15)",
    )
    t.add_argument(
        "--out",
        default=None,
        help="output folder (default ./fmnist-classifier, with --data ./classifier-<folder>; "
        "the shipped copy in "
        "the package is replaced only by scripts that set ELT_ALLOW_PACKAGE_WRITES=1)",
    )
    t.add_argument(
        "--epochs",
        type=bounded_int(1, 1000),
        default=5,
        help="training epochs (default 5)",
    )
    t.add_argument("--seed", type=seed, default=0)
    t.add_argument(
        "--threads",
        type=bounded_int(0, 4096),
        default=1,
        help="torch CPU threads (fixed for reproducibility)",
    )
    t.add_argument("--data-root", default=None)
    t.add_argument("--floor-num", type=bounded_int(1, FMNIST_TRAIN, FMNIST_WHY), default=10000)
    t.add_argument("--no-floor", action="store_true", help="skip the real-vs-real floor")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train_classifier)


def _add_floor(actions) -> None:
    """``elt eval floor``."""
    f = actions.add_parser(
        "floor",
        help="real-vs-real floor of the domain metrics",
        description="FD_cls, KID, PRDC of N training images vs the test set, and the "
        "classifier's test accuracy.",
    )
    f.add_argument("--num", type=bounded_int(1, FMNIST_TRAIN, FMNIST_WHY), default=10000)
    f.add_argument(
        "--classifier",
        default=None,
        help="classifier weights, or a folder from 'elt eval train-classifier --data DIR' (its "
        "held-out images vs its training split)",
    )
    f.add_argument("--data-root", default=None)
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=cmd_floor)


def _add_merge(actions) -> None:
    """``elt eval merge``."""
    m = actions.add_parser(
        "merge",
        help="one table and plot from several 'elt eval' outputs",
        description="Concatenate the rows of several eval.json files measured with the same "
        "metric suite and sample count (e.g. models evaluated at different loop "
        "counts) and write eval.json, eval.csv, eval.md and eval.png to --out.",
    )
    m.add_argument(
        "sources", nargs="+", help="folders written by 'elt eval' (or their eval.json files)"
    )
    m.add_argument("--out", required=True, help="output directory")
    m.add_argument("--title", default=None, help="plot title")
    m.set_defaults(func=cmd_merge)


def _add_video(actions) -> None:
    """``elt eval video``."""
    v = actions.add_parser(
        "video",
        help="video metrics of 'elt sample' output (per-frame FD_cls, accuracy, motion, FVD)",
        description="Evaluate samples_L<L>.npz videos (uint8 N×T×H×W×C) against real clips: "
        "per-frame "
        "FD_cls, "
        "frame/video class accuracy and class consistency from the Fashion-MNIST classifier on "
        "32×32 "
        "crops centred on the sprite, the motion FD of trajectory descriptors, and FVD with --i3d. "
        "Writes video_eval.json and video_eval.png (metrics vs loop count, real floor dashed).",
    )
    v.add_argument(
        "--samples", required=True, help="folder written by 'elt sample' (samples_L<L>.npz)"
    )
    _add_video_reference_options(v)
    _add_video_metric_options(v)
    v.add_argument("--out", default="eval_video", help="output directory (default ./eval_video)")
    v.add_argument("--device", default="cpu")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=cmd_video)


def _add_video_reference_options(v) -> None:
    """The real clips ``elt eval video`` compares with."""
    v.add_argument(
        "--real",
        default=None,
        help=".npz of real clips (arr_0 uint8 N×T×H×W×C, optional arr_1 labels)",
    )
    v.add_argument(
        "--real-data",
        choices=["moving_fmnist"],
        default=None,
        help="make the real clips: the moving Fashion-MNIST test split at the samples' shape",
    )
    v.add_argument(
        "--real-num",
        type=bounded_int(1, 100_000),
        default=1000,
        help="real clips with --real-data (default 1000)",
    )
    v.add_argument(
        "--motion",
        choices=["bounce", "linear"],
        default=None,
        help="--real-data motion (default: the samples' training data as samples.json records, "
        "else "
        "bounce)",
    )
    v.add_argument(
        "--sprite-size",
        type=bounded_int(1, 4096),
        default=None,
        help="--real-data sprite side (default: the samples' training data, else 28)",
    )
    v.add_argument("--data-root", default=None, help="Fashion-MNIST folder for --real-data")


def _add_video_metric_options(v) -> None:
    """Which loop counts and which video metrics."""
    v.add_argument(
        "--loops",
        type=parse_loops,
        default=None,
        help="loop counts to evaluate (default: all files)",
    )
    v.add_argument(
        "--classifier", default=None, help="classifier weights (default: the shipped ones)"
    )
    v.add_argument(
        "--no-classifier", action="store_true", help="motion (and FVD) only, e.g. for colour video"
    )
    v.add_argument(
        "--i3d",
        default=None,
        help="I3D TorchScript file for FVD (else $ELT_I3D_WEIGHTS; none: no FVD)",
    )
    v.add_argument(
        "--frame-stride",
        type=bounded_int(1, 1024),
        default=1,
        help="classify every k-th frame (default 1)",
    )
    v.add_argument(
        "--controls",
        action="store_true",
        help="also score static and frame-shuffled real clips (what no / wrong motion scores)",
    )
