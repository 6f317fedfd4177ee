"""Resident memory of masked-token training over many steps: it must level off, not grow with the
step count.

A masked training step once scored only the masked positions (``logits[mask]``); the masked count
changes every step, and tensors of a new size each step fragmented the CPU allocator's heap until a
4500-step video run held 8.6 GB. The loss now pads the masked positions to one of 16 sizes. This
benchmark trains the shipped video config (at a smaller width by default) on random tokens and
prints the process RSS every ``--every`` steps, then the growth per step: the least-squares slope of
RSS against the step after the first row (RSS swings by 100-200 MiB as the allocator takes and
returns memory, so two endpoints alone mislead). It writes the rows as JSON.

    python benchmarks/masked_memory_growth.py [--config fmnist_video_masked --steps 400 --width 64]

Meaningful on Linux, where the current RSS is read (elsewhere ``rss_bytes`` gives the peak so far).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from elt.config import load_config
from elt.eval.sweep import rss_bytes
from elt.fileio import write_json
from elt.registry import build_generator


def growth_per_step(rows: list[dict]) -> float:
    """MiB per step: least-squares slope of ``rss_mib`` against ``step`` over the rows after the
    first."""
    import numpy as np

    steps = np.array([r["step"] for r in rows[1:]], float)
    rss = np.array([r["rss_mib"] for r in rows[1:]], float)
    return float(np.polyfit(steps, rss, 1)[0]) if len(steps) > 1 else 0.0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="fmnist_video_masked")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/cpu/masked_memory_growth.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = build_generator(load_config(args.config, [f"model.width={args.width}"]))
    generator.train()
    optimizer = torch.optim.AdamW(generator.parameters(), lr=1e-3)
    loops = generator.trained_loops
    rows = []
    for step in range(args.steps + 1):
        tokens = torch.randint(0, generator.codebook_size, (args.batch, generator.seq_len))
        labels = torch.randint(0, generator.num_classes, (args.batch,))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            terms = generator.training_loss(
                (tokens, labels), student_loops=1 + step % (loops - 1), lam=0.5
            )
        terms.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % args.every == 0:
            rows.append({"step": step, "rss_mib": rss_bytes() / 2**20})
            print(f"step {step:5d}   RSS {rows[-1]['rss_mib']:8.0f} MiB", flush=True)
    growth = growth_per_step(rows)
    print(
        f"growth (least-squares slope after the first row): {growth:.2f} MiB/step "
        "(the old logits[mask] loss: ~4 MiB/step at these settings)"
    )
    result = {
        "config": args.config,
        "width": args.width,
        "batch": args.batch,
        "threads": args.threads,
        "seq_len": generator.seq_len,
        "rows": rows,
        "growth_mib_per_step": growth,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    return result


if __name__ == "__main__":
    main()
