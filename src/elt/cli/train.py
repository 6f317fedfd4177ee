"""``elt train``, ``elt sample``, ``elt info``, ``elt export``: training and what a checkpoint
gives."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from elt.cli.args import (
    LOOPS_HELP,
    NO_PROGRESS_HELP,
    batch_size,
    count,
    finite_float,
    parse_loops,
    seed,
    steps_int,
)
from elt.errors import UserError
from elt.sampling import check_sampling_request


# -- train -----------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from elt.progress import reporting

    with reporting():  # the start summary, time estimate and progress lines on stderr
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from elt.config import load_config
    from elt.signals import TrainingInterrupted
    from elt.train.trainer import train

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from elt.train.trainer import dry_run

        try:
            dry_run(cfg, resume=args.resume)
        except (FileNotFoundError, ValueError) as exc:  # data not found, shapes: one line
            raise UserError(str(exc).splitlines()[0]) from exc
        print(f"dry run: nothing written; a real run would write to {cfg.train.out_dir}")
        return 0
    try:
        final = train(cfg, resume=args.resume, progress=not args.no_progress)
    except (
        TrainingInterrupted
    ) as stop:  # preempted: a checkpoint was written, exit 128 + signal number
        if stop.announce:  # rank 0 only under torchrun
            print(f"elt: {stop}", file=sys.stderr)
        return 128 + stop.signum
    print(f"checkpoint: {final}")
    print(f"sample grids: {final.parent.parent / 'samples'}")
    return 0


def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train an ELT model. Every config field can be overridden as key=value "
        "(e.g. model.loops=6 train.steps=500).",
    )
    p.add_argument(
        "config", help="YAML config path or shipped name (fmnist_masked, fmnist_diffusion, ...)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument(
        "--resume",
        default=None,
        metavar="auto|PATH",
        help="resume: 'auto' = newest valid checkpoint of the run directory (fresh start if none), "
        "or a checkpoint path; a tokenizer training stopped by Ctrl-C/SIGTERM continues too",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build the run (config, data, model, tokenizer found or not), time a few steps of "
        "every phase it would run, print the start summary and the estimated time; write nothing",
    )
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(func=cmd_train)


# -- sample ----------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    import dataclasses

    import elt
    from elt.fileio import check_output_dir
    from elt.sampling import check_sampling_args, write_samples
    from elt.train.distributed import distributed_session

    if args.loops is not None and (args.budget_ms is not None or args.quality is not None):
        raise UserError("give either --loops or a target (--budget-ms / --quality), not both")
    # the one sampling request of this command, checked now and resolved once the model is loaded
    request = check_sampling_args(
        num=args.num,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        batch_size=args.batch_size,
        loop_counts=args.loops or [None],
    )
    if args.compile:
        request = dataclasses.replace(request, compile=True)
    check_output_dir(args.out, "--out")
    check_sampling_request(
        args.ckpt, args.num, args.batch_size, args.loops
    )  # config.yaml: before the weights
    loops, point = args.loops, None
    if (
        args.budget_ms is not None or args.quality is not None
    ):  # a bad calibration.json fails before the load
        from elt.anytime import choose_point

        point = choose_point(
            args.calibration or args.ckpt, budget_ms=args.budget_ms, fd_cls=args.quality
        )
        check_sampling_request(args.ckpt, args.num, args.batch_size, [point["loops"]])
    with distributed_session(args.device) as env:  # under torchrun: sampling sharded across ranks
        generator = elt.load(
            args.ckpt, ema=not args.raw_weights, device=env.device, overrides=args.overrides
        )
        if point is not None:
            if env.is_main:

                def num(key: str, spec: str) -> str:  # figures may be null in a calibration.json
                    return "n/a" if point.get(key) is None else format(point[key], spec)

                print(
                    f"picked {point['loops']}: {num('latency_ms', '.0f')} ms latency, FD_cls "
                    f"{num('fd_cls', '.3g')}, "
                    f"{num('gflops', '.3g')} GFLOPs/sample (from {point['calibration']})"
                )
            loops = [point["loops"]]
        points = loops or list(range(1, generator.trained_loops + 1))
        request = dataclasses.replace(request, points=tuple(points))
        record = write_samples(
            generator,
            request,
            args.num,
            args.out,
            progress=not args.no_progress,
            classes=args.classes,
        )
    if env.is_main:
        grids = ", ".join([record["grid"], *record.get("animations", [])])
        print(f"wrote {', '.join(record['files'].values())} and {grids} to {args.out}")
        for label, used in record.get("loops_used", {}).items():
            if used.get("mean") is not None:
                print(
                    f"  L={label}: {used['mean']:.2f} loops per sample and step on average, "
                    f"{record['gflops'][label]:.3g} GFLOPs/sample"
                )
    return 0


def class_list(text: str) -> list[int | str]:
    """``--classes``: comma-separated class names or numbers (names are checked once the model is
    loaded)."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(
            f"{text!r} holds an empty name; give class names or numbers separated by commas"
        )
    return [int(item) if item.isdigit() else item for item in items]


def add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="generate samples at several loop counts",
        description="Generate class-balanced samples from a checkpoint at each loop count: "
        "samples_L<L>.npz (arr_0 uint8 N×H×W×C, video N×T×H×W×C; arr_1 labels) and "
        "grid.png (video: also grid.gif, and grid.mp4 with PyAV).",
    )
    p.add_argument(
        "--ckpt",
        required=True,
        help="checkpoint or run directory, or a shipped model (demo:masked, ...)",
    )
    p.add_argument(
        "--loops", type=parse_loops, default=None, help=LOOPS_HELP + " (default 1..L_max)"
    )
    p.add_argument(
        "--budget-ms",
        type=finite_float,
        default=None,
        help="pick the best-quality calibrated point whose latency is at most this "
        "(calibration.json "
        "from 'elt calibrate')",
    )
    p.add_argument(
        "--quality",
        type=finite_float,
        default=None,
        metavar="FD_CLS",
        help="pick the cheapest calibrated point with FD_cls at most this",
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="calibration.json or the folder holding it (default: the run directory of --ckpt, "
        "or where 'elt calibrate --out DIR' last wrote for it)",
    )
    p.add_argument("--num", type=count, default=100, help="samples per loop count (default 100)")
    p.add_argument(
        "--classes",
        type=class_list,
        default=None,
        metavar="NAMES",
        help="sample only these classes, in turn: class names or numbers, comma-separated "
        "(e.g. circle,square; default: every class)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--steps",
        type=steps_int,
        default=None,
        help="sampling steps (default: the config's sampling.steps)",
    )
    p.add_argument(
        "--guidance",
        type=finite_float,
        default=None,
        help="classifier-free guidance scale s: output = uncond + s·(cond − uncond), 1 = "
        "conditional only, "
        "0 = unconditional (default: the config's sampling.guidance)",
    )
    p.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="an int seed makes the samples deterministic (default 0)",
    )
    p.add_argument("--batch-size", type=batch_size, default=256)
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda, cuda:N or auto (under torchrun: cuda:LOCAL_RANK)",
    )
    p.add_argument("--raw-weights", action="store_true", help="use raw weights instead of the EMA")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the fixed-loop sampling steps (sampling.compile=true): inductor on a "
        "CPU, "
        "CUDA graphs on a GPU; compiled once per batch size and loop count",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="sampling settings, e.g. sampling.precision=bf16, masked.temperature_base=4.5 or "
        "diffusion.sampler=ddpm (the diffusion solver: ddim | ddpm | euler)",
    )
    p.set_defaults(func=cmd_sample)


# -- info ------------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from elt.inference.checkpoints import (
        load_config_of,
        load_generator,
        resolve_checkpoint,
        verify_checkpoint,
    )

    ckpt = resolve_checkpoint(args.ckpt)
    verify_checkpoint(ckpt)  # every file it reports on: sizes, weights, training state
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
        "gflops_per_sample": {
            str(k): float(f"{generator.gflops_per_sample(loops=k):.6g}")
            for k in range(1, backbone.loops + 1)
        },
        **data_info(cfg, ckpt, generator),
    }
    print(json.dumps(info, indent=2))
    return 0


def data_info(cfg, ckpt, generator) -> dict:
    """The data a checkpoint was trained on (name, root, image size, channels, classes with their
    names) and its training steps (done: the step folder's number, total: train.steps)."""
    import re

    from omegaconf import OmegaConf

    def key(name):
        return OmegaConf.select(cfg, f"data.{name}", default=None)

    done = re.fullmatch(r"step_(\d+)", Path(ckpt).name)
    return {
        "data": {
            "name": key("name"),
            "root": key("root"),
            "image_size": key("image_size"),
            "channels": key("channels"),
            "frames": key("frames") or None,
            "num_classes": getattr(generator, "num_classes", key("num_classes")),
            "class_names": getattr(generator, "class_names", None),
        },
        "train_steps": {
            "done": int(done.group(1)) if done else None,
            "total": OmegaConf.select(cfg, "train.steps", default=None),
        },
    }


def add_info(sub) -> None:
    p = sub.add_parser(
        "info", help="describe a checkpoint", description="Print what a checkpoint holds."
    )
    p.add_argument(
        "ckpt", help="checkpoint or run directory, or a shipped model (demo:masked, ...)"
    )
    p.set_defaults(func=cmd_info)


# -- export ----------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from elt.inference.export import export_inference

    here = Path.cwd().resolve()
    if Path(args.out).resolve() == here and not any(
        here.iterdir()
    ):  # (a full one is refused as not empty)
        raise UserError(
            f"--out {args.out!r} is the current folder; export writes a folder of its own: give a "
            "new "
            "name, e.g. --out exported"
        )
    hub_only = [f"--{k}" for k in ("eval", "license", "name") if getattr(args, k) is not None]
    if hub_only and args.format != "hub":
        raise UserError(
            f"{', '.join(hub_only)}: only with --format hub (they shape the model card); "
            "allowed with --format elt: --fp32 and key=value sampling settings"
        )
    out = export_inference(
        args.ckpt,
        args.out,
        half=not args.fp32,
        sampling_overrides=args.overrides,
        format=args.format,
        eval_path=args.eval,
        license=args.license,
        name=args.name,
    )
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    kind = "Hub folder" if args.format == "hub" else "inference checkpoint"
    print(f"wrote {kind} {out} ({size:.1f} MiB); load it with elt.load({str(out)!r})")
    return 0


def add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write an inference-only checkpoint (EMA weights, fp16)",
        description="Write config.yaml + EMA weights (fp16 unless --fp32) to OUT: what elt.load, "
        "elt sample and elt eval need, without optimizer state; key=value sampling "
        "settings become the export's defaults. --format hub writes a Hugging Face Hub folder "
        "with a model card instead (elt.load and --ckpt take it, or its Hub repo id).",
    )
    p.add_argument(
        "--ckpt",
        required=True,
        help="checkpoint or run directory, or a shipped model (demo:masked, ...)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    p.add_argument(
        "--format",
        choices=["elt", "hub"],
        default="elt",
        help="elt: config.yaml + model.safetensors; hub: a Hugging Face Hub folder "
        "(config.json, model.safetensors, references.json, README.md model card)",
    )
    p.add_argument(
        "--eval",
        default=None,
        metavar="EVAL_JSON",
        help="--format hub: the 'elt eval' result whose table goes into the model card (default: "
        "an eval.json next to the checkpoint or in its run directory)",
    )
    p.add_argument(
        "--license", default=None, help="--format hub: the card's license (default apache-2.0)"
    )
    p.add_argument(
        "--name",
        default=None,
        help="--format hub: the card's title and load snippets, e.g. the Hub repo id OWNER/NAME",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="the export's default sampling settings (sampling.guidance=2, "
        "masked.temperature_base=1.5, "
        "...; sampling keys only)",
    )
    p.set_defaults(func=cmd_export)


def add_parsers(sub) -> None:
    for add in (add_train, add_sample, add_info, add_export):
        add(sub)
