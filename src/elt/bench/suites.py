"""``elt bench`` benchmarks: training step, sampling, memory and the real Trainer, on synthetic
models; the GPU suite; tables and JSON with provenance. (The command line is
:mod:`elt.cli.bench`.)"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from elt import registry
from elt.bench.models import MODES, BenchModel, SyntheticParadigm, build_model, make_train_step
from elt.bench.peers import bench_peers, print_peers
from elt.bench.scaling import BASE_STEPS as SCALING_BASE_STEPS
from elt.bench.scaling import bench_scaling, check_scaling_args, print_scaling, write_plots
from elt.bench.timing import fit_line, memory_row, time_interleaved
from elt.errors import UserError
from elt.fileio import write_json
from elt.runtime import autocast_context, resolve_device
from elt.train.perf import device_name, peak_flops

SMOKE = {
    "width": 32,
    "heads": 2,
    "unique_layers": 2,
    "loops": 3,
    "tokens": 16,
    "batch": 4,
    "vocab": 64,
    "warmup": 1,
    "repeats": 2,
    "sample_steps": 2,
    "loops_list": [1, 2, 3],
    "batches": [1, 4],
}


# -- benchmarks ------------------------------------------------------------------------------------
def bench_train(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    steps, flops = {}, {}
    for mode in MODES:
        model = build_model(args, mode, device, checkpoint_loops=args.checkpoint_loops)
        steps[mode], _ = make_train_step(model, mode, args, device)
        flops[mode] = (
            model.train_flops_per_sample(),
            sum(p.numel() for p in model.parameters()),
            model.sequence_length,
        )
    median = time_interleaved(steps, device, args.warmup, args.repeats)
    del steps  # free the models before measuring memory one at a time
    peak = peak_flops(device, args.precision == "bf16")
    rows = []
    for mode in MODES:
        flops_per_sample, params, seq = flops[mode]
        samples_per_s = args.batch / median[mode]
        rows.append(
            {
                "mode": mode,
                "params": params,
                "step_ms": 1000 * median[mode],
                "ratio_vs_vanilla": median[mode] / median["vanilla"],
                "samples_per_s": samples_per_s,
                "tokens_per_s": samples_per_s * seq,
                "tflops": flops_per_sample * samples_per_s / 1e12,
                "mfu": flops_per_sample * samples_per_s / peak if peak else None,
            }
        )
    if device.type == "cuda":
        for mode in MODES:
            rows[MODES.index(mode)]["peak_mem_mib"] = memory_row(
                args, mode, device, args.checkpoint_loops
            )["measured_peak_mib"]
    return {"rows": rows, "peak_tflops": peak / 1e12 if peak else None}


def synthetic_sampling_fn(
    model: BenchModel, batch: int, loops: int, steps: int, device: torch.device, precision: str
) -> Callable[[], None]:
    """``steps`` no-grad forward passes at ``loops`` loops: the work of an iterative sampler."""
    data = model.make_batch(batch, device)

    @torch.no_grad()
    def run() -> None:
        with autocast_context(device, precision):
            for _ in range(steps):
                model.head(model.states(data, loops=loops).final)

    return run


def checkpoint_sampling_fn(
    generator, batch: int, loops: int, steps: int | None
) -> Callable[[], None]:
    labels = [i % generator.num_classes for i in range(batch)]
    return lambda: generator.generate(labels, loops=loops, steps=steps, seed=0)


MODEL_FLAGS = (
    "kind",
    "width",
    "heads",
    "unique_layers",
    "loops",
    "tokens",
    "vocab",
)  # the synthetic model's


def checkpoint_model(generator, path: str) -> dict[str, Any]:
    """What a checkpoint is, from its own config: the model the sampling table describes."""
    cfg, model = generator.config, generator.config.model
    return {
        "source": f"checkpoint {path}",
        "paradigm": cfg.paradigm,
        "mode": cfg.ilsd.mode,
        "width": model.width,
        "heads": model.heads,
        "unique_layers": model.unique_layers,
        "loops": generator.trained_loops,
        "params": sum(p.numel() for p in generator.parameters()),
    }


def bench_sampling(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    generator = None
    if args.ckpt:
        from elt.inference.checkpoints import load_generator

        generator = load_generator(args.ckpt, device=device)
        described = checkpoint_model(generator, args.ckpt)
    else:
        model = build_model(args, "vanilla", device).eval()
        described = {
            "source": "synthetic",
            "paradigm": args.kind,
            "mode": "vanilla",
            "width": args.width,
            "heads": args.heads,
            "unique_layers": args.unique_layers,
            "loops": args.loops,
            "params": sum(p.numel() for p in model.parameters()),
        }

    def runner(batch: int, loops: int) -> Callable[[], None]:
        if generator is not None:
            return checkpoint_sampling_fn(
                generator, batch, loops, args.sample_steps if args.sample_steps else None
            )
        return synthetic_sampling_fn(
            model, batch, loops, args.sample_steps or 8, device, args.precision
        )

    trained = described["loops"]  # the batch table's L: the model's L_max
    batches = list(dict.fromkeys(args.batches))
    points = [
        (b, L) for b in batches for L in args.loops_list
    ]  # the loop table at every batch size of --batches
    points += [(b, trained) for b in batches if (b, trained) not in points]  # the batch table
    seconds = time_interleaved(
        {f"{b}x{L}": runner(b, L) for b, L in points}, device, args.warmup, args.repeats
    )
    ms = {(b, L): 1000 * seconds[f"{b}x{L}"] for b, L in points}
    first = args.loops_list[0]
    loops_rows = [
        {
            "loops": L,
            "batch": b,
            "ms": ms[b, L],
            "images_per_s": 1000 * b / ms[b, L],
            "ratio_vs_first": ms[b, L] / ms[b, first],
        }
        for b in batches
        for L in args.loops_list
    ]
    batch_rows = [
        {
            "batch": b,
            "loops": trained,
            "ms": ms[b, trained],
            "images_per_s": 1000 * b / ms[b, trained],
        }
        for b in batches
    ]
    largest, longest = (
        max(batches),
        max(args.loops_list),
    )  # the fit at the largest batch: the least noisy
    intercept, slope = fit_line(
        [float(L) for L in args.loops_list], [ms[largest, L] for L in args.loops_list]
    )
    return {
        "model": described,
        "by_loops": loops_rows,
        "by_batch": batch_rows,
        "per_loop": per_loop_fit(intercept, slope, longest, ms[largest, longest], largest),
        "sampler": f"checkpoint {args.ckpt}"
        if generator is not None
        else f"synthetic {args.kind}: {args.sample_steps or 8} forward passes per sample",
    }


NEGATIVE_FIXED = "fixed cost < 0: noise at this size, not a real figure"


def per_loop_fit(
    fixed_ms: float, ms_per_loop: float, longest: int, ms_at_longest: float, batch: int
) -> dict[str, Any]:
    """The line fit of sampling time vs loops (per batch of ``batch``); a negative fixed cost
    (timing noise at smoke sizes) gets a caveat, and the loops' share of the time (over 100% then)
    is left out."""
    fit = {
        "ms_per_loop": ms_per_loop,
        "fixed_ms": fixed_ms,
        "loop_share_at_max": ms_per_loop * longest / ms_at_longest,
        "longest": longest,
        "batch": batch,
    }
    if fixed_ms < 0:
        fit.update(loop_share_at_max=None, note=NEGATIVE_FIXED)
    return fit


def format_per_loop(fit: dict[str, Any]) -> str:
    if fit["fixed_ms"] < 0:
        per_loop = f"{fit['ms_per_loop']:.2f} ms"
        return f"cost of each loop at batch {fit['batch']}: {per_loop} ({NEGATIVE_FIXED})"
    return (
        f"cost of each loop at batch {fit['batch']}: {fit['ms_per_loop']:.2f} ms (fixed "
        f"{fit['fixed_ms']:.2f} ms; "
        f"loops are {fit['loop_share_at_max']:.0%} of the time at L={fit['longest']})"
    )


def bench_memory(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    rows = [
        memory_row(args, "ilsd", device, False),
        memory_row(args, "unique", device, False),
        memory_row(args, "ilsd", device, True),
    ]
    unique = rows[1]
    for row in rows:
        row["accounted_vs_unique"] = row["accounted_mib"] / unique["accounted_mib"]
        if "measured_peak_mib" in row:
            row["measured_vs_unique"] = row["measured_peak_mib"] / unique["measured_peak_mib"]
    return {"rows": rows}


def bench_trainer(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import tempfile

    from elt.config import load_config
    from elt.train.trainer import Trainer

    registry.register_paradigm("synthetic", SyntheticParadigm(args.kind, args.tokens, args.vocab))
    steps = 2 * args.repeats  # a warm-up window (compilation, allocator), then the timed window
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(
            None,
            [
                "paradigm=synthetic",
                f"model.width={args.width}",
                f"model.heads={args.heads}",
                f"model.unique_layers={args.unique_layers}",
                f"model.loops={args.loops}",
                f"model.checkpoint_loops={args.checkpoint_loops}",
                "data.num_classes=1000",
                f"data.limit={max(4 * args.batch, 64)}",
                f"train.batch_size={args.batch}",
                f"train.steps={steps}",
                f"logging.every={args.repeats}",
                f"train.compile={args.compile}",
                f"train.device={device}",
                f"train.out_dir={run_dir}",
                f"train.precision={args.precision}",
                "logging.samples_per_class=1",
                "logging.tensorboard=false",
                "checkpoint.handle_signals=false",
                "checkpoint.every=0",
                f"train.threads={torch.get_num_threads()}",
            ],
        )
        try:
            trainer = Trainer(cfg, progress=False, compile_backend=args.compile_backend)
            trainer.fit()
        finally:
            registry.unregister_paradigm("synthetic")
        records = [
            json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()
        ]
    last = records[-1]  # the window after warm-up (compilation happens in the first)
    keep = (
        "samples_per_s",
        "tokens_per_s",
        "step_s",
        "mfu",
        "mem_peak_gib",
        "mem_reserved_gib",
        "rss_peak_mib",
        "loss",
    )
    return {
        "rows": [
            {
                "steps_timed": last["step"] - (records[-2]["step"] if len(records) > 1 else 0),
                **{k: last.get(k) for k in keep},
                "flops_per_sample": trainer.flops_per_sample,
            }
        ],
        "peak_tflops": trainer.peak / 1e12 if trainer.peak else None,
    }


def print_trainer(result: dict[str, Any]) -> None:
    c, r = result["config"], result["rows"][0]
    print(
        f"Trainer — {c['kind']} {c['unique_layers']}N×{c['loops']}L ILSD, width {c['width']}, "
        f"{c['tokens']} tokens, "
        f"batch {c['batch']}, {c['precision']}, compile={c['compile']}, {result['device']}"
    )
    memory = (
        f"{r['mem_peak_gib']:.2f} GiB"
        if r.get("mem_peak_gib") is not None
        else f"RSS {fmt(r.get('rss_peak_mib'), '.0f')} MiB"
    )
    print(
        f"{r['samples_per_s']:.1f} samples/s, {r['tokens_per_s']:.0f} tokens/s, step "
        f"{1000 * r['step_s']:.2f} ms, "
        f"MFU {fmt(r['mfu'], '.1%')}, peak memory {memory} (last {r['steps_timed']} steps)"
    )


# -- output ----------------------------------------------------------------------------------------
def command_line(name: str, args: argparse.Namespace) -> str:
    """The benchmark as one explicit command (every size spelled out), to rerun it exactly."""
    parts: list[Any] = ["elt", "bench", name]
    if name == "peers":
        parts += [
            "--peer-configs",
            ",".join(args.peer_configs),
            "--batches",
            ",".join(map(str, args.batches)),
            "--precisions",
            ",".join(args.precisions),
            "--modes",
            ",".join(args.modes),
            "--sample-steps",
            args.sample_steps,
            "--device",
            args.device,
            "--threads",
            torch.get_num_threads(),
            "--warmup",
            args.warmup,
            "--repeats",
            args.repeats,
        ] + (["--smoke"] if args.smoke else [])
        return " ".join(str(p) for p in parts)
    if name == "scaling":
        parts += ["--paradigms", ",".join(args.paradigms)]
        for option, values in (
            ("--batches", args.batches),
            ("--loops-list", args.loops_list),
            ("--grids", args.grids),
            ("--steps-list", args.steps_list),
        ):
            if values:
                parts += [option, ",".join(map(str, values))]
        parts += [
            "--base-batch",
            args.base_batch,
            "--sample-steps",
            args.sample_steps or SCALING_BASE_STEPS,
            "--precision",
            args.precision,
            "--device",
            args.device,
            "--threads",
            torch.get_num_threads(),
            "--warmup",
            args.warmup,
            "--repeats",
            args.repeats,
        ] + (["--smoke"] if args.smoke else [])
        return " ".join(str(p) for p in parts)
    if not (
        name == "sampling" and args.ckpt
    ):  # with a checkpoint, it is the model: no synthetic model's flags
        parts += [
            "--kind",
            args.kind,
            "--width",
            args.width,
            "--heads",
            args.heads,
            "--unique-layers",
            args.unique_layers,
            "--max-loops",
            args.loops,
            "--tokens",
            args.tokens,
        ]
        if args.kind == "masked":
            parts += ["--vocab", args.vocab]
    parts += (
        [] if name == "sampling" else ["--batch", args.batch]
    )  # sampling: the sizes of --batches
    parts += [
        "--precision",
        args.precision,
        "--device",
        args.device,
        "--threads",
        torch.get_num_threads(),
        "--warmup",
        args.warmup,
        "--repeats",
        args.repeats,
    ]
    if name == "sampling":
        parts += [
            "--loops-list",
            ",".join(map(str, args.loops_list)),
            "--batches",
            ",".join(map(str, args.batches)),
        ]
        parts += ["--sample-steps", args.sample_steps] + (
            ["--ckpt", args.ckpt] if args.ckpt else []
        )
    if args.compile:
        parts += ["--compile", "--compile-backend", args.compile_backend]
    if args.checkpoint_loops:
        parts.append("--checkpoint-loops")
    return " ".join(str(p) for p in parts)


def provenance(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    skip = {"func", *(MODEL_FLAGS if name == "sampling" and args.ckpt else ())}
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "command": command_line(name, args),
        "config": {k: v for k, v in vars(args).items() if k not in skip},
    }


def fmt(value: Any, spec: str) -> str:
    """Format a number, or "n/a" (right-aligned to the same width) where there is none."""
    if value is None:
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return format("n/a", f">{width}")
    return format(value, spec)


def print_train(result: dict[str, Any]) -> None:
    c = result["config"]
    print(
        f"training step — {c['kind']} {c['unique_layers']}N×{c['loops']}L vs unique "
        f"{c['unique_layers'] * c['loops']}"
        f"N×1L, width {c['width']}, {c['tokens']} tokens, batch {c['batch']}, {c['precision']}, "
        f"compile={c['compile']}, {result['device']}, threads {result['threads']}"
    )
    print(
        f"{'mode':<8} {'params':>11} {'step ms':>9} {'vs vanilla':>10} {'samples/s':>10} "
        f"{'tokens/s':>11} "
        f"{'TFLOP/s':>8} {'MFU':>6} {'peak MiB':>9}"
    )
    for r in result["rows"]:
        print(
            f"{r['mode']:<8} {r['params']:>11,} {r['step_ms']:>9.2f} "
            f"{r['ratio_vs_vanilla']:>9.3f}x "
            f"{r['samples_per_s']:>10.1f} {r['tokens_per_s']:>11.0f} {r['tflops']:>8.3f} "
            f"{fmt(r['mfu'], '>6.1%')} {fmt(r.get('peak_mem_mib'), '>9.0f')}"
        )


def print_sampling(result: dict[str, Any]) -> None:
    c, m = result["config"], result["model"]
    print(
        f"sampling — {result['sampler']}, {m['paradigm']} {m['unique_layers']}N×{m['loops']}L "
        f"{m['mode']}, "
        f"width {m['width']}, {m['params']:,} parameters, {result['device']}, threads "
        f"{result['threads']}"
    )
    print(
        f"{'loops':>5} {'batch':>5} {'ms':>9} {'images/s':>9} "
        f"{'vs L=' + str(c['loops_list'][0]):>8}"
    )
    for r in result["by_loops"]:
        print(
            f"{r['loops']:>5} {r['batch']:>5} {r['ms']:>9.2f} {r['images_per_s']:>9.1f} "
            f"{r['ratio_vs_first']:>7.2f}x"
        )
    print(f"{'batch':>5} {'loops':>5} {'ms':>9} {'images/s':>9}")
    for r in result["by_batch"]:
        print(f"{r['batch']:>5} {r['loops']:>5} {r['ms']:>9.2f} {r['images_per_s']:>9.1f}")
    print(format_per_loop(result["per_loop"]))


def print_memory(result: dict[str, Any]) -> None:
    c = result["config"]
    print(
        f"training memory — {c['kind']} {c['unique_layers']}N×{c['loops']}L vs unique, width "
        f"{c['width']}, "
        f"{c['tokens']} tokens, batch {c['batch']}, {c['precision']}, {result['device']}"
    )
    print(
        f"{'mode':<8} {'ckpt':>5} {'params MiB':>10} {'grads':>7} {'Adam':>7} {'activ.':>8} "
        f"{'accounted':>9} "
        f"{'vs unique':>9} {'measured':>9} {'vs unique':>9}"
    )
    for r in result["rows"]:
        print(
            f"{r['mode']:<8} {str(r['checkpoint_loops']):>5} {r['param_mib']:>10.1f} "
            f"{r['grad_mib']:>7.1f} "
            f"{r['adam_mib']:>7.1f} {r['activation_mib']:>8.1f} {r['accounted_mib']:>9.1f} "
            f"{r['accounted_vs_unique']:>8.2f}x {fmt(r.get('measured_peak_mib'), '>9.1f')} "
            f"{fmt(r.get('measured_vs_unique'), '>8.2f')}"
        )


BENCHMARKS = {
    "train": (bench_train, print_train),
    "sampling": (bench_sampling, print_sampling),
    "memory": (bench_memory, print_memory),
    "trainer": (bench_trainer, print_trainer),
    "peers": (bench_peers, print_peers),
    "scaling": (bench_scaling, print_scaling),
}
ALL = ("train", "sampling", "memory")


def run_benchmark(name: str, args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    function, printer = BENCHMARKS[name]
    result = {"benchmark": name, **provenance(name, args, device), **function(args, device)}
    printer(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if name == "scaling":
        result["plots"] = write_plots(result, out, args.tag)
        for plot in result["plots"]:
            print(f"wrote {plot}")
    path = out / f"{name}{('_' + args.tag) if args.tag else ''}.json"
    write_json(path, result)
    print(f"wrote {path}\n")
    return result


# -- the GPU suite ---------------------------------------------------------------------------------
SUITE_MODEL = {
    "width": 1024,
    "heads": 16,
    "unique_layers": 6,
    "loops": 4,
    "tokens": 256,
    "precision": "bf16",
    "batch": 64,
    "kind": "masked",
}
# the ImageNet recipes whose real widths the peer benchmark compares (--smoke: the same configs,
# tiny widths and 64-pixel images, so that the first GPU run takes the path the smoke run took)
SUITE_PEER_CONFIGS = ("imagenet256_diffusion_elt_8x4", "imagenet256_masked_elt_l_8x3")
SUITE = (  # (benchmark, tag, options)
    ("train", "", {"warmup": 5, "repeats": 20}),
    ("train", "compiled", {"warmup": 5, "repeats": 20, "compile": True}),
    (
        "sampling",
        "",
        {
            "batch": 32,
            "loops_list": [1, 2, 3, 4, 6, 8],
            "batches": [1, 8, 32, 128],
            "sample_steps": 8,
            "warmup": 2,
            "repeats": 5,
        },
    ),
    # sampling time of both paradigms (the demo shapes) against batch, loops, tokens and steps,
    # costs fitted, as in docs/benchmarks.md (scaling.json, scaling_diffusion/masked.png)
    ("scaling", "", {"warmup": 2, "repeats": 10}),
    ("memory", "", {}),
    ("trainer", "", {"repeats": 20}),
    ("trainer", "compiled", {"repeats": 20, "compile": True}),
    # elt vs diffusers' DiT and a plain nn.TransformerEncoder at the ImageNet recipes' real widths
    # (peers.json)
    (
        "peers",
        "",
        {
            "peer_configs": list(SUITE_PEER_CONFIGS),
            "batches": [1, 8, 64],
            "precisions": ["bf16"],
            "modes": ["eager", "compiled"],
            "sample_steps": 4,
            "warmup": 2,
            "repeats": 5,
        },
    ),
)


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info(device: torch.device) -> dict[str, Any]:
    """GPU, driver, versions, and whether SDPA takes the flash kernel for the suite's attention
    shape."""
    import subprocess

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device_name(device),
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
    }
    info["card"] = device_name(device) if device.type == "cuda" else f"no GPU (CPU: {info['cpu']})"
    if device.type != "cuda":
        return info
    info["memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    try:
        info["nvidia_smi"] = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,clocks.max.sm",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError as exc:
        info["nvidia_smi"] = str(exc)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads = SUITE_MODEL["heads"]
    q = torch.randn(
        8,
        heads,
        SUITE_MODEL["tokens"] + 1,
        SUITE_MODEL["width"] // heads,
        device=device,
        dtype=torch.bfloat16,
    )
    try:  # only the flash kernel allowed: succeeds iff the model's attention is flash-eligible
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            F.scaled_dot_product_attention(q, q, q)
        info["sdpa_flash"] = True
    except RuntimeError as exc:
        info["sdpa_flash"] = f"not used: {str(exc).splitlines()[0]}"
    return info


DEADLINE_ENV = (
    "ELT_SUITE_DEADLINE"  # seconds since the epoch: benchmarks that would start later are skipped
)


def suite_deadline() -> float | None:
    """The wall-clock deadline benchmarks/gpu_suite.sh gives the suite (``$ELT_SUITE_DEADLINE``), if
    any."""
    import os

    value = os.environ.get(DEADLINE_ENV)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise UserError(f"${DEADLINE_ENV} must be seconds since the epoch, got {value!r}") from None


def run_suite(args: argparse.Namespace) -> int:
    """Every benchmark of the suite in this process; a failing one is reported and the others still
    run. Past ``$ELT_SUITE_DEADLINE`` the remaining ones are skipped (listed; exit status 124)."""
    import copy
    import traceback

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    info = environment_info(device)
    write_json(out / "env.json", info)
    print(json.dumps(info, indent=2))
    print(f"suite: card {info['card']}, torch {info['torch']}\n", flush=True)
    failed, skipped, deadline = [], [], suite_deadline()
    for name, tag, options in SUITE:
        if deadline is not None and time.time() >= deadline:
            skipped.append(f"{name}{'_' + tag if tag else ''}")
            continue
        run_args = copy.copy(args)
        if not args.smoke:
            vars(run_args).update(SUITE_MODEL)
            vars(run_args).update(options)
        else:
            run_args.compile = options.get("compile", False)
            if (
                name == "peers"
            ):  # the ImageNet configs at tiny sizes, eager only: checks that it runs
                run_args.peer_configs = list(SUITE_PEER_CONFIGS)
                run_args.modes, run_args.precisions = ["eager"], ["fp32"]
        if name == "peers" and run_args.batches is None:
            run_args.batches = [1, 8, 64]
        run_args.tag = tag
        prepare_args(run_args)
        started = time.perf_counter()
        try:
            run_benchmark(name, run_args)
        except Exception:  # noqa: BLE001 - one broken benchmark must not cost the others
            traceback.print_exc()
            failed.append(f"{name}{'_' + tag if tag else ''}")
        print(f"   ({time.perf_counter() - started:.0f} s)\n")
    print(
        f"suite on {info['card']}: {len(SUITE) + 1 - len(failed) - len(skipped)} JSON files in "
        f"{out}; failed: "
        f"{', '.join(failed) or 'none'}; skipped at the deadline: {', '.join(skipped) or 'none'}"
    )
    return 1 if failed else (124 if skipped else 0)


def check_peer_args(args: argparse.Namespace) -> None:
    for option, values, allowed in (
        ("--precisions", args.precisions, ("fp32", "bf16")),
        ("--modes", args.modes, ("eager", "compiled")),
    ):
        for value in values:
            if value not in allowed:
                raise UserError(f"{option}: {value!r} is not one of {', '.join(allowed)}")
    if min(args.batches) < 1:
        raise UserError(f"--batches must be >= 1, got {args.batches}")


def prepare_args(args: argparse.Namespace) -> None:
    """Fill the defaults that depend on other options and check them."""
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.precision == "auto":
        args.precision = "bf16" if args.device.startswith("cuda") else "fp32"
    from elt.config import check_options
    from elt.fileio import check_output_dir

    check_options(
        at_least_one={
            "--width": args.width,
            "--heads": args.heads,
            "--unique-layers": args.unique_layers,
            "--max-loops": args.loops,
            "--tokens": args.tokens,
            "--vocab": args.vocab,
            "--batch": args.batch,
            "--repeats": args.repeats,
        },
        not_negative={"--sample-steps": args.sample_steps, "--warmup": args.warmup},
    )
    check_output_dir(args.out, "--out")
    if args.heads is None:
        args.heads = max(1, args.width // 64)
    if args.width % args.heads:
        raise UserError(f"--width {args.width} must be divisible by --heads {args.heads}")


def run(args: argparse.Namespace) -> int:
    """Run ``args.benchmark`` (a name, ``all`` or ``suite``) as parsed by ``elt bench``."""
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    scaling = args.benchmark == "scaling"  # many points of slow sampling runs: fewer calls each
    if args.warmup is None:
        args.warmup = 1 if scaling else 3
    if args.repeats is None:
        args.repeats = 5 if scaling else 10
    if args.benchmark == "suite":
        from elt.fileio import check_output_dir

        check_output_dir(args.out, "--out")
        resolve_device(args.device)
        if args.device == "auto":
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        return run_suite(args)
    if args.batches is None and args.benchmark != "scaling":  # scaling: its own axes
        args.batches = [1, 8, 64] if args.benchmark == "peers" else [1, 8, 32]
    if args.loops_list is None and args.benchmark != "scaling":
        args.loops_list = [1, 2, 3, 4]
    if args.benchmark == "peers":
        check_peer_args(args)
    if args.benchmark == "scaling":
        check_scaling_args(args)
        if args.precision == "auto":  # the precision the demo models sample in
            args.precision = "bf16"
    prepare_args(args)
    names = list(ALL) if args.benchmark == "all" else [args.benchmark]
    for name in names:
        run_benchmark(name, args)
    return 0
