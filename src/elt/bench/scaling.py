"""``elt bench scaling``: how sampling time grows with batch, loops, tokens and steps, for both
paradigms, with the fixed and per-unit costs fitted.

The models are the demo configs' shapes (``fmnist_diffusion``: 3N×4L, width 192, patch 8, DDIM
with classifier-free guidance s = 2; ``fmnist_masked``: 3N×4L, width 192, FSQ tokens, MaskGIT
decoding), built from the config with random weights, so the token grid can be changed: the image
size is set to grid side × patch (diffusion) or × the tokenizer's downsampling (masked). What is
timed is ``generator.generate`` end to end (noise or all-mask start, every step, the tokenizer's
decode, uint8 images on the host): what a user waits for.

Each axis varies one quantity around a base point (the demo grid, L = L_max, ``--base-batch``,
``--sample-steps``); the points of one axis are timed interleaved in one process (medians), and
``time = fixed + per_unit · x`` is fitted by least squares: ordinary for loops and steps (evenly
spaced), relative (weights 1/time², every point's relative error counts alike) for batch and tokens,
whose points are spaced ×4 and whose largest would otherwise decide the line alone. The tokens axis
also holds attention, quadratic in the tokens: its line is a secant, and its residuals say how far
from linear the cost is. One JSON file and, where matplotlib is importable, one PNG per paradigm
(a 2×2 grid: measured points and the fitted line)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from elt.bench.timing import time_interleaved

PARADIGMS = {"diffusion": "fmnist_diffusion", "masked": "fmnist_masked"}
AXES = ("batch", "loops", "tokens", "steps")
UNITS = {"batch": "sample", "loops": "loop", "tokens": "token", "steps": "step"}
RELATIVE_FIT = {"batch": True, "loops": False, "tokens": True, "steps": False}
DEFAULTS = {"batches": [1, 4, 16, 64, 256], "grids": [8, 16, 32], "steps": [1, 2, 4, 8, 16]}
BASE_BATCH, BASE_STEPS = 4, 4
SMOKE = {"batches": [1, 2, 4], "grids": [4, 8], "steps": [1, 2, 3]}
SMOKE_OVERRIDES = [
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=2",
    "tokenizer.levels=[5,5,5]",
    "tokenizer.channels=8",
]
NEGATIVE_FIXED = "fixed cost < 0: noise or curvature at these sizes, not a real figure"
NEGATIVE_SLOPE = "cost per unit < 0: noise at these sizes, not a real figure"


# -- the fit ---------------------------------------------------------------------------------------
def fit_cost(xs: list[float], ys: list[float], relative: bool = False) -> dict[str, Any]:
    """Least-squares ``y = fixed + per_unit · x``; ``relative`` weights each point by ``1/y²`` (its
    relative error counts, not its absolute one). With the fitted values, each point's relative
    residual and the largest one."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"a line fit needs at least 2 points of (x, y), got {len(xs)}")
    weights = [1.0 / (y * y) if relative and y > 0 else 1.0 for y in ys]
    total = sum(weights)
    mx = sum(w * x for w, x in zip(weights, xs, strict=True)) / total
    my = sum(w * y for w, y in zip(weights, ys, strict=True)) / total
    var = sum(w * (x - mx) ** 2 for w, x in zip(weights, xs, strict=True))
    cov = sum(w * (x - mx) * (y - my) for w, x, y in zip(weights, xs, ys, strict=True))
    slope = cov / var if var else 0.0
    fixed = my - slope * mx
    predicted = [fixed + slope * x for x in xs]
    residuals = [(p - y) / y if y else 0.0 for p, y in zip(predicted, ys, strict=True)]
    fit = {
        "fixed_ms": fixed,
        "ms_per_unit": slope,
        "kind": "relative least squares" if relative else "least squares",
        "predicted_ms": predicted,
        "relative_residuals": residuals,
        "max_abs_relative_residual": max(abs(r) for r in residuals),
    }
    if fixed < 0 or slope < 0:
        fit["note"] = NEGATIVE_FIXED if fixed < 0 else NEGATIVE_SLOPE
    return fit


# -- the models ------------------------------------------------------------------------------------
def grid_side(cfg) -> int:
    """The token grid's side at this config: image size ÷ patch (diffusion) or ÷ downsampling."""
    return int(cfg.data.image_size) // cell_pixels(cfg)


def cell_pixels(cfg) -> int:
    if cfg.paradigm == "diffusion":
        return int(cfg.diffusion.patch_size)
    return int(cfg.tokenizer.downsample)


def scaling_config(paradigm: str, precision: str, smoke: bool, side: int | None = None):
    """The demo config of ``paradigm`` (input re-injection as the demo has it), sampling at
    ``precision``, with a ``side × side`` token grid (None: the demo's)."""
    from elt.config import load_config

    overrides = [f"sampling.precision={precision}", "sampling.compile=false"]
    overrides += SMOKE_OVERRIDES if smoke else []
    cfg = load_config(PARADIGMS[paradigm], overrides)
    if side is not None and side != grid_side(cfg):
        cfg = load_config(
            PARADIGMS[paradigm], [*overrides, f"data.image_size={side * cell_pixels(cfg)}"]
        )
    return cfg


def build(cfg, device: torch.device):
    from elt import registry
    from elt.bench.peers import randomise_zero_parameters

    torch.manual_seed(0)
    generator = registry.build_generator(cfg)
    randomise_zero_parameters(generator)  # adaLN-Zero at zero would make the outputs constant
    return generator.to(device).eval()


def sample_fn(generator, batch: int, loops: int, steps: int) -> Callable[[], Any]:
    labels = [i % generator.num_classes for i in range(batch)]
    return lambda: generator.generate(labels, loops=loops, steps=steps, seed=0)


# -- the benchmark ---------------------------------------------------------------------------------
def axis_values(args: argparse.Namespace, trained_loops: int, demo_side: int) -> dict[str, list]:
    sizes = SMOKE if args.smoke else DEFAULTS
    loops = args.loops_list or list(range(1, 2 * trained_loops + 1))
    grids = args.grids or sizes["grids"]
    return {
        "batch": list(dict.fromkeys(args.batches or sizes["batches"])),
        "loops": list(dict.fromkeys(loops)),
        "tokens": sorted({demo_side, *grids}),
        "steps": list(dict.fromkeys(args.steps_list or sizes["steps"])),
    }


def bench_axis(
    paradigm: str,
    axis: str,
    values: list[int],
    base: dict[str, int],
    generator,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Time every point of one axis (the others at ``base``), interleaved; fit the line."""
    generators = {}
    points = []
    for value in values:
        point = {**base, axis: value} if axis != "tokens" else {**base, "grid": value}
        if axis == "tokens":
            cfg = scaling_config(paradigm, args.precision, args.smoke, value)
            generators[value] = build(cfg, device) if value != base["grid"] else generator
        points.append(point)
    fns, gflops = {}, []
    for value, point in zip(values, points, strict=True):
        model = generators.get(value, generator)
        fns[str(value)] = sample_fn(model, point["batch"], point["loops"], point["steps"])
        gflops.append(
            point["batch"] * model.gflops_per_sample(loops=point["loops"], steps=point["steps"])
        )
    seconds = time_interleaved(fns, device, args.warmup, args.repeats)
    ms = [1000 * seconds[str(v)] for v in values]
    xs = [float(v * v if axis == "tokens" else v) for v in values]
    fit = fit_cost(xs, ms, relative=RELATIVE_FIT[axis])
    del generators, fns
    return {
        "axis": axis,
        "unit": UNITS[axis],
        "values": values,
        "x": xs,  # tokens: grid cells (side²)
        "ms": ms,
        "gflop": gflops,
        "points": points,
        "fit": fit,
    }


def bench_scaling(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    results = {}
    for paradigm in args.paradigms:
        cfg = scaling_config(paradigm, args.precision, args.smoke)
        generator = build(cfg, device)
        demo_side = grid_side(cfg)
        values = axis_values(args, generator.trained_loops, demo_side)
        base = {
            "batch": args.base_batch,
            "loops": generator.trained_loops,
            "steps": args.sample_steps or BASE_STEPS,
            "grid": demo_side,
        }
        guidance = generator.sampling_settings(None, None)[1]
        backbone = generator.backbone
        results[paradigm] = {
            "config": PARADIGMS[paradigm],
            "model": {
                "width": backbone.dim,
                "heads": backbone.blocks[0].attn.heads,
                "unique_layers": backbone.unique_layers,
                "max_loops": generator.trained_loops,
                "demo_grid": demo_side,
                "guidance": guidance,
                "params": sum(p.numel() for p in generator.parameters()),
            },
            "base": base,
            "axes": {},
        }
        for axis in AXES:
            row = bench_axis(paradigm, axis, values[axis], base, generator, args, device)
            results[paradigm]["axes"][axis] = row
            print_axis(paradigm, row, flush=True)
        results[paradigm]["base_ms_by_axis"] = base_times(results[paradigm])
        del generator
    from elt.bench.peers import load_average

    return {
        "paradigms": results,
        "load": load_average(),
        "note": "time of generator.generate (all steps, the tokenizer's decode, uint8 on the host) "
        "per call of the whole batch; fit: ms = fixed_ms + ms_per_unit · x (tokens: x = grid "
        "cells)",
    }


def base_times(entry: dict[str, Any]) -> dict[str, float]:
    """The base point's time in each axis that holds it: the axes are timed one after the other, so
    their spread is the drift of the machine between axes (within an axis, points interleave)."""
    base, times = entry["base"], {}
    for axis, row in entry["axes"].items():
        key = base["grid" if axis == "tokens" else axis]
        if key in row["values"]:
            times[axis] = row["ms"][row["values"].index(key)]
    return times


# -- output ----------------------------------------------------------------------------------------
def format_fit(fit: dict[str, Any], unit: str) -> str:
    text = f"fixed {fit['fixed_ms']:.2f} ms + {fit['ms_per_unit']:.4g} ms per {unit}"
    text += f" (max residual {fit['max_abs_relative_residual']:.0%})"
    return text + (f"; {fit['note']}" if "note" in fit else "")


def print_axis(paradigm: str, row: dict[str, Any], flush: bool = False) -> None:
    axis, fit = row["axis"], row["fit"]
    label = "grid" if axis == "tokens" else axis
    print(f"{paradigm} — {axis}: {format_fit(fit, row['unit'])}", flush=flush)
    print(f"  {label:>6} {'ms':>10} {'fitted ms':>10} {'residual':>8} {'GFLOP':>8}", flush=flush)
    for value, ms, predicted, residual, gflop in zip(
        row["values"],
        row["ms"],
        fit["predicted_ms"],
        fit["relative_residuals"],
        row["gflop"],
        strict=True,
    ):
        shown = f"{value}x{value}" if axis == "tokens" else str(value)
        print(
            f"  {shown:>6} {ms:>10.2f} {predicted:>10.2f} {residual:>+8.1%} {gflop:>8.3g}",
            flush=flush,
        )


def print_scaling(result: dict[str, Any]) -> None:
    print(
        f"\nsampling cost — {result['device']}, threads {result['threads']}, torch "
        f"{result['torch']}, precision {result['config']['precision']}, load {result.get('load')}"
    )
    print(
        f"{'paradigm':<10} {'axis':<7} {'base':<28} {'fixed ms':>9} {'per unit':>16} {'max res':>8}"
    )
    for paradigm, entry in result["paradigms"].items():
        b = entry["base"]
        for axis, row in entry["axes"].items():
            fit = row["fit"]
            others = {k: v for k, v in b.items() if k != ("grid" if axis == "tokens" else axis)}
            base = ", ".join(f"{k} {v}" for k, v in others.items())
            print(
                f"{paradigm:<10} {axis:<7} {base:<28} {fit['fixed_ms']:>9.2f} "
                f"{fit['ms_per_unit']:>9.4g} ms/{row['unit']:<5} "
                f"{fit['max_abs_relative_residual']:>7.0%}"
            )
    for paradigm, entry in result["paradigms"].items():
        times = base_times(entry)
        if len(times) > 1:
            shown = ", ".join(f"{axis} {ms:.1f}" for axis, ms in times.items())
            print(
                f"{paradigm}: the base point in each axis (ms): {shown} — spread "
                f"{max(times.values()) / min(times.values()):.2f}x (drift between axes)"
            )


def write_plots(result: dict[str, Any], out: Path, tag: str = "") -> list[str]:
    """One PNG per paradigm (``scaling_PARADIGM[_TAG].png``): a 2×2 grid of measured points and
    the fitted line; none (with a note) where matplotlib is not importable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        print("scaling: matplotlib is not importable, no plots written")
        return []
    from elt.fileio import write_via

    paths = []
    for paradigm, entry in result["paradigms"].items():
        fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
        base = entry["base"]
        for ax, axis in zip(axes.flat, AXES, strict=True):
            row = entry["axes"][axis]
            xs, fit = row["x"], row["fit"]
            log = axis in ("batch", "tokens")
            lo, hi = min(xs), max(xs)
            dense = (
                [lo * (hi / lo) ** (i / 99) for i in range(100)]
                if log
                else [lo + (hi - lo) * i / 99 for i in range(100)]
            )
            line = [fit["fixed_ms"] + fit["ms_per_unit"] * x for x in dense]
            keep = [(x, y) for x, y in zip(dense, line, strict=True) if y > 0 or not log]
            ax.plot([x for x, _ in keep], [y for _, y in keep], "-", color="tab:blue", label="fit")
            ax.plot(xs, row["ms"], "o", color="tab:orange", label="measured (median)")
            if log:
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(ticker.NullFormatter())
                ax.xaxis.set_minor_formatter(ticker.NullFormatter())
                ax.set_xticks(xs)
                ax.set_xticklabels(
                    [
                        f"{int(x)}\n{v}×{v}" if axis == "tokens" else f"{int(x)}"
                        for x, v in zip(xs, row["values"], strict=True)
                    ]
                )
            others = {k: v for k, v in base.items() if k != ("grid" if axis == "tokens" else axis)}
            shown = ", ".join(
                f"{k} {v}x{v}" if k == "grid" else f"{k} {v}" for k, v in others.items()
            )
            xlabel = "tokens (grid cells)" if axis == "tokens" else axis
            ax.set_xlabel(xlabel)
            ax.set_ylabel("ms per call")
            sign = "+" if fit["ms_per_unit"] >= 0 else "−"
            ax.set_title(
                f"{axis}: {fit['fixed_ms']:.1f} ms {sign} {abs(fit['ms_per_unit']):.3g} ms/"
                f"{row['unit']}\n({shown})",
                fontsize=9,
            )
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        m = entry["model"]
        fig.suptitle(
            f"{paradigm} ({entry['config']} shape: {m['unique_layers']}N×{m['max_loops']}L, width "
            f"{m['width']}), {result['config']['precision']}, {result['device']}, "
            f"threads {result['threads']}",
            fontsize=10,
        )
        fig.tight_layout()
        path = out / f"scaling_{paradigm}{('_' + tag) if tag else ''}.png"
        try:
            write_via(path, lambda tmp, fig=fig: fig.savefig(tmp, dpi=100))
        finally:
            plt.close(fig)
        paths.append(str(path))
    return paths


def check_scaling_args(args: argparse.Namespace) -> None:
    from elt.errors import UserError

    for paradigm in args.paradigms:
        if paradigm not in PARADIGMS:
            raise UserError(f"--paradigms: {paradigm!r} is not one of {', '.join(PARADIGMS)}")
    for value in args.loops_list or []:
        if not isinstance(value, int):
            raise UserError(
                f"--loops-list: scaling takes loop counts, not {value!r} (e.g. 1-8 or 1,2,4,8)"
            )
    for option, values in (
        ("--batches", args.batches),
        ("--grids", args.grids),
        ("--steps-list", args.steps_list),
        ("--loops-list", args.loops_list),
    ):
        if values is not None and len(set(values)) < 2:
            raise UserError(f"{option}: a line fit needs at least 2 different values, got {values}")


def replot(path: str) -> list[str]:
    """Draw the PNGs of a ``scaling.json`` again (e.g. one written where matplotlib was missing),
    next to it: ``python -m elt.bench.scaling results/benchmarks/scaling.json``."""
    import json

    json_path = Path(path)
    result = json.loads(json_path.read_text())
    tag = json_path.stem[len("scaling_") :] if json_path.stem.startswith("scaling_") else ""
    return write_plots(result, json_path.parent, tag)


if __name__ == "__main__":
    import sys

    for written in replot(sys.argv[1]) if len(sys.argv) == 2 else []:
        print(f"wrote {written}")
    if len(sys.argv) != 2:
        sys.exit("usage: python -m elt.bench.scaling SCALING.json")
