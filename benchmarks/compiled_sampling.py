"""Compiled sampling (``sampling.compile=true`` / ``elt sample --compile``) against eager, and bf16
against fp32.

For each shipped demo model (diffusion: DDIM with guidance; masked: MaskGIT decoding), at each batch
size and
precision: the eager sampler and the compiled one, timed interleaved in one process (medians of
``--repeats`` calls, after a first call that compiles), plus how far the compiled samples are from
the eager ones (diffusion: max |latent difference| and uint8 image levels; masked: share of tokens
that differ). Targets: compiled ≥ 1.5× eager at batch 1 and ≥ 1.1× at batch 64. bf16 (CPU autocast)
is reported against fp32 for speed (eager and compiled); its effect on FD_cls is not measured here.
Prints a table and writes JSON.

    python benchmarks/compiled_sampling.py \\
        [--batches 1,8,64 --precisions fp32,bf16 --steps 5 --repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def variant(generator, precision: str, compiled: bool):
    """The same modules with their own sampling settings."""
    g = copy.copy(generator)
    g.config = copy.deepcopy(generator.config)
    g.config.sampling.precision = precision
    g.config.sampling.compile = compiled
    return g


def sampler(generator, paradigm: str, batch: int, steps: int):
    labels = [i % generator.num_classes for i in range(batch)]
    if paradigm == "diffusion":
        return lambda: generator.sample_latents(labels, steps=steps, seed=0)
    return lambda: generator.generate_tokens(labels, steps=steps, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument(
        "--steps", type=int, default=5, help="sampling steps (the per-step cost is what changes)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--paradigm", choices=("both", "masked", "diffusion"), default="both")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks that the script runs"
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "compiled_sampling.json")
    )
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    precisions = args.precisions.split(",")
    if args.smoke:
        batches, precisions, args.steps, args.repeats = [1], ["fp32"], 2, 1
    torch.set_num_threads(args.threads)

    from elt.demo import shipped_models
    from elt.inference.checkpoints import load_generator

    models = shipped_models()
    paradigms = ("diffusion", "masked") if args.paradigm == "both" else (args.paradigm,)
    rows = []
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for paradigm in paradigms:
        generator = load_generator(models[paradigm]).eval()
        for batch in batches:
            fns, outputs, first = {}, {}, {}
            for precision in precisions:
                for compiled in (False, True):
                    name = f"{precision} {'compiled' if compiled else 'eager'}"
                    fns[name] = sampler(
                        variant(generator, precision, compiled), paradigm, batch, args.steps
                    )
                    start = time.perf_counter()
                    outputs[name] = fns[name]()  # compiles
                    first[name] = time.perf_counter() - start
            times: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(args.repeats):
                for name, fn in fns.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
            for precision in precisions:
                eager, compiled = outputs[f"{precision} eager"], outputs[f"{precision} compiled"]
                row = {
                    "model": paradigm,
                    "batch": batch,
                    "precision": precision,
                    "steps": args.steps,
                    "eager_ms": ms[f"{precision} eager"],
                    "compiled_ms": ms[f"{precision} compiled"],
                    "speedup": ms[f"{precision} eager"] / ms[f"{precision} compiled"],
                    "first_call_s": first[f"{precision} compiled"],
                    "vs_fp32_eager": ms["fp32 eager"] / ms[f"{precision} eager"]
                    if "fp32" in precisions
                    else None,
                    "vs_fp32_compiled": (
                        ms["fp32 compiled"] / ms[f"{precision} compiled"]
                        if "fp32" in precisions
                        else None
                    ),
                    "all_ms": {
                        k: [1000 * v for v in times[k]]
                        for k in (f"{precision} eager", f"{precision} compiled")
                    },
                }
                if paradigm == "diffusion":
                    row["max_abs_latent_diff"] = float((compiled - eager).abs().max())
                    to8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round()  # noqa: E731
                    row["max_image_level_diff"] = float((to8(compiled) - to8(eager)).abs().max())
                else:
                    row["tokens_differing"] = float((compiled != eager).float().mean())
                row["target"] = 1.5 if batch == 1 else 1.1 if batch >= 64 else None
                row["meets_target"] = (
                    None if row["target"] is None else row["speedup"] >= row["target"]
                )
                rows.append(row)
                print(
                    f"{paradigm:<9} batch {batch:>3} {precision}: eager {row['eager_ms']:9.1f} ms  "
                    "compiled "
                    f"{row['compiled_ms']:9.1f} ms  {row['speedup']:.2f}x  (bf16 vs fp32 eager "
                    f"{row['vs_fp32_eager'] or float('nan'):.2f}x)  first call "
                    f"{row['first_call_s']:.0f} s  "
                    f"diff {row.get('max_abs_latent_diff', row.get('tokens_differing')):.2e}",
                    flush=True,
                )
    record = {
        "rows": rows,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "smoke": args.smoke,
        "started": started_at,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python benchmarks/compiled_sampling.py "
        + " ".join(
            f"--{k} {v}"
            for k, v in (
                ("batches", ",".join(map(str, batches))),
                ("precisions", ",".join(precisions)),
                ("steps", args.steps),
                ("repeats", args.repeats),
                ("threads", args.threads),
            )
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from elt.fileio import write_json

    write_json(out, json.loads(json.dumps(record, default=float)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
