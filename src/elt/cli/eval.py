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

The argparse glue and input checks; the metrics, sweeps and suites live in :mod:`elt.eval`.
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
    check_sampling_request,
    count,
    finite_float,
    parse_loops,
    parse_steps,
    seed,
)
from elt.errors import UserError
from elt.fileio import check_output_dir, write_json

FMNIST_TRAIN = 60_000  # the floor draws its real images from the Fashion-MNIST training split
FMNIST_WHY = " (the Fashion-MNIST training images)"


def _user_errors():
    """Exceptions that mean 'fix your input', turned into one-line UserErrors."""
    from elt.data.fashion_mnist import DataNotFoundError
    from elt.eval.classifier import ClassifierMissingError, ImageFormatError
    from elt.eval.inception import MissingDependencyError, WeightsHashError, WeightsNotFoundError
    from elt.eval.sweep import SweepInputError

    return (
        DataNotFoundError,
        ClassifierMissingError,
        MissingDependencyError,
        WeightsHashError,
        WeightsNotFoundError,
        FileNotFoundError,
        ImageFormatError,
        SweepInputError,
    )


def load_classifier(path, device="cpu"):
    """:func:`elt.eval.classifier.load_classifier`, with a file that is not the classifier's weights
    (damaged, another format, other tensors) as one line naming it."""
    from elt.eval.classifier import ClassifierMissingError
    from elt.eval.classifier import load_classifier as load

    try:
        return load(path, device=device)
    except ClassifierMissingError:
        raise
    except (
        UserError
    ) as exc:  # a damaged or foreign file, named by the loader: say which option gave it
        raise UserError(f"--classifier: {exc}") from None
    except (
        Exception
    ) as exc:  # safetensors' header errors, missing/unexpected tensors, unreadable files
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(
            f"--classifier {str(path)[:200]!r} is not the domain classifier's weights (a "
            ".safetensors "
            f"file written by 'elt eval train-classifier'): {reason}"
        ) from None


def build_suite(args: argparse.Namespace):
    from elt.eval import suites

    progress = not args.no_progress
    if args.metrics == "domain":
        return suites.DomainSuite.fashion_mnist(
            load_classifier(args.classifier, device=args.device),
            data_root=args.data_root,
            progress=progress,
            seed=args.seed,
        )
    if not args.reference:
        raise UserError(
            f"--metrics {args.metrics} needs --reference (an .npz with mu/sigma or arr_0, or a "
            "folder "
            "of real images)"
        )
    try:
        reference = suites.load_reference(args.reference)
    except ValueError as exc:
        raise UserError(f"bad --reference: {exc}") from exc
    if args.metrics == "inception":
        from elt.eval.inception import InceptionFeatures

        return suites.InceptionSuite(
            InceptionFeatures(args.inception_weights, device=args.device),
            reference,
            progress=progress,
        )
    from elt.eval.i3d import I3DFeatures

    return suites.FVDSuite(I3DFeatures(args.i3d, device=args.device), reference, progress=progress)


def model_name(ckpt: str) -> str:
    """``<run dir> [<mode>]`` so that ELT / vanilla / unique runs stay apart on one plot."""
    from elt.inference.checkpoints import load_config_of, resolve_checkpoint

    path = resolve_checkpoint(ckpt)
    run = path.parent.parent if path.parent.name == "checkpoints" else path
    return f"{run.name} [{load_config_of(path).ilsd.mode}]"


def check_model_args(args: argparse.Namespace) -> None:
    ckpts, samples, names = args.ckpt or [], args.samples or [], args.name or []
    if not ckpts and not samples:
        raise UserError("give --ckpt DIR (repeatable) and/or --samples DIR written by 'elt sample'")
    if ckpts and samples and len(ckpts) != len(samples):
        raise UserError(
            f"--samples pairs with --ckpt by position: got {len(ckpts)} --ckpt and {len(samples)} "
            "--samples"
        )
    if names and len(names) != max(len(ckpts), len(samples)):
        raise UserError(
            f"--name given {len(names)} times for {max(len(ckpts), len(samples))} models"
        )
    if not ckpts and not args.loops:
        raise UserError("--loops is required when only --samples folders are given")
    from elt.inference.checkpoints import resolve_checkpoint

    for ckpt in ckpts:
        resolve_checkpoint(ckpt)  # a CheckpointError (one line, exit 2) before any slow setup


def build_models(args: argparse.Namespace):
    import elt
    from elt.eval.sweep import SweepModel

    ckpts, samples, names = args.ckpt or [], args.samples or [], args.name or []
    count = max(len(ckpts), len(samples))
    models = []
    for i in range(count):
        ckpt = ckpts[i] if ckpts else None
        folder = Path(samples[i]) if samples else None
        if folder is not None and not folder.is_dir():
            raise UserError(f"samples folder {folder} not found")
        generator = elt.load(ckpt, ema=not args.raw_weights, device=args.device) if ckpt else None
        name = names[i] if names else (model_name(ckpt) if ckpt else folder.name)
        if any(
            m.name == name for m in models
        ):  # lines on the plot are grouped by name: keep them apart
            name = f"{name} #{i + 1}"
        models.append(SweepModel(name, generator, folder, str(ckpt) if ckpt else None))
    return models


def check_domain_inputs(models) -> None:
    """Fail before sampling when a checkpoint does not make the 32×32 grey images the classifier
    takes."""
    from omegaconf import OmegaConf

    for model in models:
        cfg = getattr(model.generator, "config", None)
        if cfg is None:
            continue
        size = OmegaConf.select(cfg, "data.image_size", default=None)
        channels = OmegaConf.select(cfg, "data.channels", default=None)
        if (size is not None and size not in (28, 32)) or (channels is not None and channels != 1):
            raise UserError(
                f"--metrics domain uses the Fashion-MNIST classifier (grey 28 or 32 px), but "
                f"{model.name} makes {size}×{size}×{channels} images; use --metrics inception "
                "--reference REF (or fvd for video)"
            )


def knn_k(metrics: str) -> int:
    """The k of the suite's k-NN metrics (PRDC for domain, precision/recall for inception; 0:
    none)."""
    import inspect

    from elt.eval import suites

    suite = {"domain": suites.DomainSuite, "inception": suites.InceptionSuite}.get(metrics)
    return int(inspect.signature(suite.__init__).parameters["k"].default) if suite else 0


def check_num(num: int, metrics: str = "domain", what: str = "--num") -> None:
    """Enough samples for the suite's statistics: more than k for the k-NN radii, at least 2 for a
    covariance."""
    need = max(knn_k(metrics) + 1, 2)
    if num < need:
        raise UserError(
            f"{what} {num} is too few samples for the {metrics} metrics (k-NN radii with k="
            f"{knn_k(metrics)} need more than k points); allowed: {what} {need} or more"
        )


def cmd_eval(args: argparse.Namespace) -> int:

    from elt.config import check_options
    from elt.eval.sweep import write_outputs

    check_options(seeds={"--seed": args.seed}, finite={"--guidance": args.guidance})
    check_output_dir(
        args.out, "--out"
    )  # before any sampling: a bad --out fails now, not after the sweep
    check_model_args(args)
    if not args.samples:  # (with --samples: after their files and counts are checked, see _sweep)
        check_num(args.num, args.metrics)
        for ckpt in args.ckpt or []:
            check_sampling_request(ckpt, args.num, args.batch_size, args.loops)
    from elt.train.distributed import distributed_session

    # under torchrun: every rank generates its share of each sample set, rank 0 computes metrics and
    # writes
    with distributed_session(args.device) as env:
        result = _sweep(args)
        if not env.is_main:
            return 0
    paths = write_outputs(result, args.out)
    print_table(result)
    print(f"wrote {paths['json']}, {paths['csv']}, {paths['md']} and {paths['png']}")
    return 0


def _sweep(args: argparse.Namespace) -> dict:
    from elt.eval.sweep import check_samples, run_sweep

    try:
        models = build_models(args)
        if args.metrics == "domain":
            check_domain_inputs(models)
        loops = args.loops or list(
            range(1, max(m.generator.trained_loops for m in models if m.generator) + 1)
        )
        for model in (
            models
        ):  # missing loop files or too few samples: before the reference features are computed
            if model.samples_dir is not None:
                check_samples(model.samples_dir, loops, args.num)
        check_num(args.num, args.metrics)
        suite = build_suite(args)  # before any sampling: missing weights or data fail first
        result = run_sweep(
            models,
            suite,
            loops,
            steps=args.steps or [None],
            num=args.num,
            seed=args.seed,
            guidance=args.guidance,
            batch_size=args.batch_size,
            latency_batch=args.latency_batch,
            latency_repeats=args.latency_repeats,
            measure=not args.no_latency,
            progress=not args.no_progress,
        )
    except _user_errors() as exc:
        raise UserError(str(exc)) from exc
    return result


def cmd_merge(args: argparse.Namespace) -> int:
    """Several ``elt eval`` outputs (e.g. models swept at different loop counts) → one table and one
    plot."""
    from elt.eval.sweep import SweepInputError, check_result_shape, merge_results, write_outputs

    check_output_dir(args.out, "--out")
    results = []
    for source in args.sources:
        path = Path(source) / "eval.json" if Path(source).is_dir() else Path(source)
        if not path.is_file():
            raise UserError(
                f"no eval.json at {source} (give a folder written by 'elt eval' or its eval.json)"
            )
        try:
            result = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not valid JSON: {exc}") from exc
        try:
            check_result_shape(result)
        except SweepInputError as exc:
            raise UserError(f"{path}: {exc}") from exc
        results.append(result)
    try:
        result = merge_results(results)
    except SweepInputError as exc:
        raise UserError(str(exc)) from exc
    if args.title:
        result["provenance"]["title"] = args.title
    paths = write_outputs(result, args.out)
    print_table(result)
    print(f"wrote {paths['json']}, {paths['csv']}, {paths['md']} and {paths['png']}")
    return 0


def print_table(result: dict) -> None:
    keys = [k for k, _ in result["plot_metrics"]]
    extra = [
        k for k in ("kid", "precision", "recall", "density", "coverage", "is") if k not in keys
    ]
    columns = ["model", "steps", "loops", "gflops", "latency_ms", "peak_mem_mib", *keys, *extra]
    measured = {
        "peak_mem_mib": "peak_mem_kind"
    }  # a column attempted in a row but not measured there: "n/a"
    columns = [
        c
        for c in columns
        if any(r.get(c) is not None or measured.get(c) in r for r in result["rows"])
    ]

    def fmt(row, c):
        v = row.get(c)
        if v is None:
            return "n/a" if measured.get(c) in row else "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    rows = result["rows"] + (
        [{"model": "real data", **result["floor"]}] if result.get("floor") else []
    )
    table = [columns] + [[fmt(r, c) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    if result.get("floor_warning"):
        print(f"elt: warning: {result['floor_warning']}", file=sys.stderr)


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from elt.config import check_options
    from elt.eval.classifier import RECORD_NAME, train_classifier

    check_options(not_negative={"--threads": args.threads}, seeds={"--seed": args.seed})
    if not args.no_floor:
        check_num(args.floor_num, what="--floor-num")
    out = Path(
        args.out or "fmnist-classifier"
    )  # never the package's shipped copy (elt.fileio refuses that)
    check_output_dir(out, "--out")
    try:
        record = train_classifier(
            out,
            epochs=args.epochs,
            seed=args.seed,
            threads=args.threads,
            data_root=args.data_root,
            progress=not args.no_progress,
        )
        print(
            f"test accuracy {record['test_accuracy']:.4f}; weights {out / record['weights']} "
            f"(sha256 {record['sha256'][:12]}…)"
        )
        if not args.no_floor:
            record["floor"] = compute_floor(
                load_classifier(out / record["weights"]),
                args.floor_num,
                args.data_root,
                not args.no_progress,
            )
            write_json(out / RECORD_NAME, record, ensure_ascii=False)
            print("real-vs-real floor:", json.dumps(record["floor"]))
    except _user_errors() as exc:
        raise UserError(str(exc)) from exc
    return 0


def compute_floor(extractor, num: int, data_root=None, progress: bool = True) -> dict:
    from elt.eval.suites import DomainSuite

    suite = DomainSuite.fashion_mnist(extractor, data_root=data_root, progress=progress)
    floor = suite.floor(num)
    floor["description"] = (
        f"{floor['n']} Fashion-MNIST training images (seeded random subset) vs the 10000 "
        "test images; class_acc = classifier accuracy on the test images"
    )
    return floor


def cmd_floor(args: argparse.Namespace) -> int:
    check_num(args.num)
    try:
        floor = compute_floor(
            load_classifier(args.classifier), args.num, args.data_root, not args.no_progress
        )
    except _user_errors() as exc:
        raise UserError(str(exc)) from exc
    print(json.dumps(floor, indent=2))
    return 0


def add_parsers(sub) -> None:
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
        "classifier; "
        "'elt eval floor' prints the real-vs-real floor; 'elt eval video' evaluates video samples.",
    )
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
        "--classifier", default=None, help="classifier weights (default: the shipped ones)"
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
    p.set_defaults(func=cmd_eval)

    actions = p.add_subparsers(dest="eval_action", metavar="ACTION", prog="elt eval")
    t = actions.add_parser(
        "train-classifier",
        help="train the Fashion-MNIST feature classifier",
        description="Train the domain classifier on the Fashion-MNIST training split "
        "(seeded, reproducible), record its test accuracy and the real-vs-real "
        "floor next to the weights (default: the package's assets folder).",
    )
    t.add_argument(
        "--out",
        default=None,
        help="output folder (default ./fmnist-classifier; the shipped copy in "
        "the package is replaced only by scripts that set ELT_ALLOW_PACKAGE_WRITES=1)",
    )
    t.add_argument("--epochs", type=bounded_int(1, 1000), default=5)
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

    f = actions.add_parser(
        "floor",
        help="real-vs-real floor of the domain metrics",
        description="FD_cls, KID, PRDC of N training images vs the test set, and the "
        "classifier's test accuracy.",
    )
    f.add_argument("--num", type=bounded_int(1, FMNIST_TRAIN, FMNIST_WHY), default=10000)
    f.add_argument("--classifier", default=None)
    f.add_argument("--data-root", default=None)
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=cmd_floor)

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
    add_video_parser(actions)


# -- `elt eval video` ------------------------------------------------------------------------------
def add_video_parser(actions) -> None:
    """Register ``elt eval video`` on the ``elt eval`` action subparsers."""
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
    v.add_argument("--out", default="eval_video", help="output directory (default ./eval_video)")
    v.add_argument("--device", default="cpu")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=cmd_video)


def cmd_video(args) -> int:
    import os

    from elt.eval.classifier import ClassifierMissingError, ImageFormatError
    from elt.eval.inception import WeightsNotFoundError
    from elt.eval.video import (
        CROP_SIZE,
        MASS_THRESHOLD,
        VideoFormatError,
        VideoSuite,
        evaluate_folder,
        load_videos,
        moving_fmnist_reference,
        real_data_geometry,
        sample_files,
        write_video_eval,
    )

    check_output_dir(args.out, "--out")
    if (args.real is None) == (args.real_data is None):
        raise UserError(
            "give exactly one real reference: --real FILE.npz or --real-data moving_fmnist"
        )
    progress = not args.no_progress
    try:
        files = sample_files(args.samples, args.loops)
        shape = load_videos(next(iter(files.values())))[0].shape
        if args.real:
            real, real_labels = load_videos(args.real)
        else:
            try:
                motion, sprite_size = real_data_geometry(
                    args.samples, args.motion, args.sprite_size
                )
                real, real_labels = moving_fmnist_reference(
                    args.real_num, shape[1], shape[2], motion, sprite_size, root=args.data_root
                )
            except ImportError as exc:
                raise UserError(
                    f"--real-data moving_fmnist needs elt.data.moving_fmnist ({exc})"
                ) from exc
        extractor = None
        if not args.no_classifier:
            extractor = load_classifier(args.classifier, device=args.device)
        i3d = None
        if args.i3d or os.environ.get("ELT_I3D_WEIGHTS"):
            from elt.eval.i3d import I3DFeatures

            i3d = I3DFeatures(args.i3d, device=args.device)
        suite = VideoSuite(real, extractor, i3d, frame_stride=args.frame_stride, progress=progress)
        result = evaluate_folder(
            suite, args.samples, list(files), real_labels, controls=args.controls, progress=progress
        )
    except (
        FileNotFoundError,
        VideoFormatError,
        ImageFormatError,
        ClassifierMissingError,
        WeightsNotFoundError,
    ) as exc:
        raise UserError(str(exc)) from exc
    result["real"] = args.real or (
        f"moving_fmnist test split, {len(real)} clips ({motion}, {sprite_size}-px garments)"
    )
    result["provenance"] = {
        "classifier": extractor.provenance() if extractor else None,
        "i3d": i3d.provenance() if i3d else None,
        "frame_stride": args.frame_stride,
        "crop": CROP_SIZE,
        "mass_threshold": MASS_THRESHOLD,
    }
    paths = write_video_eval(result, args.out)
    keys = ["loops", "fd_cls", "video_acc", "consistency", "motion_fd", "fvd", "mean_speed"]
    rows = [
        *result["rows"],
        {"loops": "real", **result["floor"]},
        *({"loops": name, **vals} for name, vals in result.get("controls", {}).items()),
    ]
    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    print("  ".join(f"{k:>11}" for k in keys))
    for row in rows:
        print(
            "  ".join(
                f"{row.get(k):>11.4g}"
                if isinstance(row.get(k), float)
                else f"{row.get(k, '-')!s:>11}"
                for k in keys
            )
        )
    print(f"wrote {paths['json']} and {paths['png']}")
    return 0
