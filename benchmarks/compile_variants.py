"""Why compiled sampling compiles the way it does on a CPU: one sampling step of each shipped demo
model (the guided network call with CFG s = 2, L = 4) eager and compiled three ways, interleaved in
one process:

- ``plain``: ``torch.compile`` with elt's inductor options but without freezing (every weight a
  graph input: what ``options={"freezing": True}`` alone gives, since Dynamo reads freezing from
  the global config when it traces);
- ``frozen, packed``: weights frozen into the code and pre-packed for MKL (fp32) / oneDNN (bf16)
  linear kernels (inductor's default with freezing);
- ``frozen``: weights frozen, left in ATen's layout (``cpp.weight_prepack`` off): what
  :func:`elt.core.generator.compile_step` does.

Medians of ``--repeats`` rounds; speed-ups against eager. Prints a table and writes JSON.

    python benchmarks/compile_variants.py [--batches 1,64 --precisions fp32,bf16 --repeats 9]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from elt.fileio import write_json

VARIANTS = {  # name → (freezing, weight pre-packing)
    "plain": (False, True),
    "frozen, packed": (True, True),
    "frozen": (True, False),
}


def step_and_inputs(generator, paradigm: str, batch: int):
    if paradigm == "diffusion":
        step = functools.partial(generator.guided, loops=4, guidance=2.0)
        inputs = (
            torch.randn(batch, *generator.data_shape, generator=torch.Generator().manual_seed(0)),
            torch.full((batch,), 0.5),
            torch.arange(batch) % generator.num_classes,
        )
    else:
        step = functools.partial(generator.guided_logits, loops=4, guidance=2.0)
        inputs = (
            torch.full((batch, generator.seq_len), generator.mask_id),
            torch.arange(batch) % generator.num_classes,
        )
    return step, inputs


def compiled_variant(step, inputs, freezing: bool, prepack: bool):
    """``step(*inputs)`` compiled with freezing and weight pre-packing as given: elt's own
    :func:`~elt.core.generator.compile_step` for the variant it uses, its recipe with the two
    switches changed for the others."""
    import torch._inductor.config as inductor

    from elt.core.generator import CPU_COMPILE_OPTIONS, _own_entry, compile_step

    if (freezing, prepack) == VARIANTS["frozen"]:
        return functools.partial(compile_step(step, torch.device("cpu")), *inputs)
    options = {**CPU_COMPILE_OPTIONS, "cpp.weight_prepack": prepack}
    compiled = torch.compile(_own_entry(step), fullgraph=True, dynamic=False, options=options)

    def run():
        with inductor.patch(freezing=freezing):
            return compiled(*inputs)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="batch 1, fp32, 2 rounds")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "compile_variants.json")
    )
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    precisions = args.precisions.split(",")
    if args.smoke:
        batches, precisions, args.repeats = [1], ["fp32"], 2
    torch.set_num_threads(args.threads)

    from elt.demo import shipped_models
    from elt.inference.checkpoints import load_generator
    from elt.runtime import autocast_context

    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    cpu = torch.device("cpu")
    rows = []
    print(f"{'model':<10}{'batch':>6} {'precision':<10}{'eager ms':>10}", end="")
    print("".join(f"{name:>18}" for name in VARIANTS))
    for paradigm in ("diffusion", "masked"):
        generator = load_generator(shipped_models()[paradigm]).eval()
        for batch in batches:
            step, inputs = step_and_inputs(generator, paradigm, batch)
            for precision in precisions:
                fns = {"eager": functools.partial(step, *inputs)}
                for name, (freezing, prepack) in VARIANTS.items():
                    fns[name] = compiled_variant(step, inputs, freezing, prepack)
                times: dict[str, list[float]] = {name: [] for name in fns}
                calls = 5 if batch < 64 else 1
                with torch.no_grad(), autocast_context(cpu, precision):
                    for fn in fns.values():  # compile, warm up
                        fn(), fn()
                    for _ in range(args.repeats):
                        for name, fn in fns.items():
                            start = time.perf_counter()
                            for _ in range(calls):
                                fn()
                            times[name].append(1000 * (time.perf_counter() - start) / calls)
                ms = {name: statistics.median(t) for name, t in times.items()}
                row = {
                    "model": paradigm,
                    "batch": batch,
                    "precision": precision,
                    "ms": ms,
                    "speedup": {name: ms["eager"] / ms[name] for name in VARIANTS},
                    "all_ms": times,
                }
                rows.append(row)
                print(f"{paradigm:<10}{batch:>6} {precision:<10}{ms['eager']:>10.2f}", end="")
                print(
                    "".join(
                        f"{ms[n]:>9.2f} ({row['speedup'][n]:.2f}x)".rjust(18) for n in VARIANTS
                    ),
                    flush=True,
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        out,
        {
            "rows": rows,
            "variants": {k: {"freezing": f, "weight_prepack": p} for k, (f, p) in VARIANTS.items()},
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "smoke": args.smoke,
            "started": started_at,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
