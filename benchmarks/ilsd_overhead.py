"""Training-step time of ILSD vs vanilla looping vs a unique (non-looped) stack of equal FLOPs.

All three run the same token model (looped core + linear head, cross-entropy over a codebook like
the masked paradigm), measured interleaved in one process so the ratios are fair. Prints a table and
writes JSON. ILSD adds one head application and two loss terms to a vanilla step; the paper reports
equal step time.

    python benchmarks/ilsd_overhead.py \\
        [--width 256 --unique-layers 4 --loops 4 --tokens 64 --batch 32]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from elt.core.ilsd import StudentLoopSampler, ilsd_lambda, ilsd_loss
from elt.core.looped import LoopedTransformer
from elt.fileio import write_json


class TokenModel(nn.Module):
    def __init__(self, width, unique_layers, loops, tokens, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab + 1, width)
        self.pos = nn.Parameter(torch.zeros(1, tokens, width))
        self.backbone = LoopedTransformer(width, unique_layers, loops, heads=max(2, width // 64))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def logits(self, h):
        return self.head(self.norm(h))


def make_step(mode, args, device):
    loops = 1 if mode == "unique" else args.loops
    layers = args.unique_layers * args.loops if mode == "unique" else args.unique_layers
    torch.manual_seed(0)
    model = TokenModel(args.width, layers, loops, args.tokens, args.vocab).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sampler = StudentLoopSampler(args.loops, seed=0) if mode == "ilsd" else None
    tokens = torch.randint(0, args.vocab, (args.batch, args.tokens), device=device)
    step_index = [0]

    def step():
        student_loops = sampler.sample() if sampler else None
        out = model.backbone(
            model.embed(tokens) + model.pos, exit_loops=[student_loops] if student_loops else []
        )
        teacher = model.logits(out.final)
        student = model.logits(out.exits[student_loops]) if student_loops else None
        terms = ilsd_loss(
            teacher,
            student,
            lambda z: F.cross_entropy(z.flatten(0, 1), tokens.flatten()),
            lambda s, t: -(t.softmax(-1) * s.log_softmax(-1)).sum(-1).mean(),
            ilsd_lambda(step_index[0], 1000),
            student_loops,
        )
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        step_index[0] += 1
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step, sum(p.numel() for p in model.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--unique-layers", type=int, default=4)
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="benchmarks/results/ilsd_overhead.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    modes = ["vanilla", "ilsd", "unique"]
    steps, params = {}, {}
    for mode in modes:
        steps[mode], params[mode] = make_step(mode, args, device)
        for _ in range(args.warmup):
            steps[mode]()
    times = {mode: [] for mode in modes}
    for _ in range(args.repeats):  # interleaved: drifts in machine load hit every mode alike
        for mode in modes:
            start = time.perf_counter()
            steps[mode]()
            times[mode].append(time.perf_counter() - start)
    median = {mode: statistics.median(t) for mode, t in times.items()}
    rows = [
        {
            "mode": m,
            "params": params[m],
            "median_step_s": median[m],
            "ratio_vs_vanilla": median[m] / median["vanilla"],
        }
        for m in modes
    ]
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    print(
        f"ILSD overhead — {args.unique_layers}N×{args.loops}L, width {args.width}, {args.tokens} "
        "tokens, "
        f"batch {args.batch}, device {device_name}, threads {torch.get_num_threads()}"
    )
    print(f"{'mode':<8} {'params':>10} {'step (ms)':>10} {'vs vanilla':>11}")
    for r in rows:
        print(
            f"{r['mode']:<8} {r['params']:>10,} {1000 * r['median_step_s']:>10.1f} "
            f"{r['ratio_vs_vanilla']:>10.3f}x"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        out,
        {
            "config": vars(args),
            "device": device_name,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "rows": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
