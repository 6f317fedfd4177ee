"""Every shipped paper-scale recipe at its real width on synthetic data, on one device: training
step time, tokens/s, MFU and peak memory, and the inference throughput of each ELT against its
iso-FLOP baseline at batch 8 (the paper's Table 3 setting). Writes recipes.json, prints two tables.

    PYTHONPATH=src python benchmarks/recipe_throughput.py [--out DIR] [--budget-s 240] [--smoke]

Training: the recipe's generator (masked: MaskGIT over 16×16 VQ tokens, or 4×16×16 video tokens;
diffusion: DiT over 4×32×32 SD-VAE latents) built with its real width/depth and random weights — the
pretrained VQ/VAE are not needed, the batches are synthetic tokens/latents — AdamW (fused on CUDA),
bf16 autocast, ILSD as configured, ``--steps`` steps per recipe at ``--batch`` samples (fewer when
the time budget runs short; the JSON says how many). MFU counts the model FLOPs measured by torch's
FLOP counter on the meta device ×3. ``--budget-s`` bounds the whole script (benchmarks/gpu_suite.sh
passes what is left of its 10 minutes): recipes that do not fit are listed as skipped. ``--smoke``:
tiny widths, 2 steps, runs on a CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from elt.fileio import write_json
from elt.recipes import build_on_meta, forward_flops, load_recipe, recipe_names
from elt.runtime import autocast_context
from elt.train.perf import device_name, peak_flops

PAIRS = {  # ELT recipe → its iso-FLOP baseline
    "imagenet256_masked_elt_l_8x3": "imagenet256_masked_maskgit_l",
    "imagenet256_masked_elt_l_12x2": "imagenet256_masked_maskgit_l",
    "imagenet256_masked_elt_xl_7x4": "imagenet256_masked_maskgit_xl",
    "imagenet256_diffusion_elt_8x4": "imagenet256_diffusion_dit_32",
    "imagenet256_diffusion_elt_16x2": "imagenet256_diffusion_dit_32",
    "imagenet256_diffusion_elt_4x8": "imagenet256_diffusion_dit_32",
    "ucf101_masked_elt_l_6x4": "ucf101_masked_magvit_l",
}
SMOKE = ["model.width=32", "model.heads=2", "train.precision=fp32"]
SMOKE_PAIRS = (
    "imagenet256_masked_elt_xl_7x4",
    "imagenet256_diffusion_elt_4x8",
    "ucf101_masked_elt_l_6x4",
)


def smoke_overrides(name: str) -> list[str]:
    size = 32 if "diffusion" in name else (64 if name.startswith("imagenet") else 32)
    return [*SMOKE, f"data.image_size={size}", "tokenizer.channels=8"]


def materialize(name: str, device: torch.device, smoke: bool):
    """The recipe's generator with random weights on ``device`` (built on meta first: no host
    copy)."""
    cfg = load_recipe(name, smoke_overrides(name) if smoke else [])
    generator = build_on_meta(cfg)
    flops = forward_flops(generator)
    generator = generator.to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in generator.parameters():
            param.normal_(0.0, 0.02)
        for buffer in generator.buffers():
            if buffer.is_floating_point():
                buffer.zero_()
    tokenizer = getattr(generator, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.requires_grad_(False)
    return cfg, generator, flops


def synthetic_batch(generator, batch: int, device: torch.device):
    labels = torch.randint(0, generator.num_classes, (batch,), device=device)
    if hasattr(generator, "seq_len"):
        return torch.randint(
            0, generator.codebook_size, (batch, generator.seq_len), device=device
        ), labels
    return torch.randn(batch, *generator.data_shape, device=device), labels


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_recipe(
    name: str,
    device: torch.device,
    batch: int,
    steps: int,
    warmup: int,
    smoke: bool,
    deadline: float,
) -> dict:
    cfg, generator, flops = materialize(name, device, smoke)
    precision = "fp32" if smoke else "bf16"
    params = [p for p in generator.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=1e-5, **({"fused": True} if device.type == "cuda" else {})
    )
    data = synthetic_batch(generator, batch, device)
    loops = cfg.model.loops
    student = max(1, loops - 1) if cfg.ilsd.mode == "ilsd" else None
    generator.train()

    def step() -> None:
        with autocast_context(device, precision):
            terms = generator.training_loss(data, student, 0.5)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    done, started = 0, time.perf_counter()
    while done < steps and (done < 2 or time.perf_counter() < deadline):
        step()
        done += 1
        if done in (1, 2, 5) or done % 10 == 0:
            sync(device)
    sync(device)
    elapsed = time.perf_counter() - started
    step_s = elapsed / done
    tokens = int(generator.seq_len) + 1 if hasattr(generator, "seq_len") else int(generator.tokens)
    peak = peak_flops(device, precision == "bf16")
    row = {
        "recipe": name,
        "params": sum(p.numel() for p in params),
        "batch": batch,
        "steps": done,
        "step_s": step_s,
        "samples_per_s": batch / step_s,
        "tokens_per_s": batch * tokens / step_s,
        "train_flops_per_sample": 3 * flops,
        "mfu": (3 * flops * batch / step_s / peak) if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
    }
    return row  # the model and optimizer are freed with this frame (empty_cache in main)


@torch.no_grad()
def inference_rate(name: str, device: torch.device, batch: int, repeats: int, smoke: bool) -> dict:
    cfg, generator, flops = materialize(name, device, smoke)
    generator.eval()
    data, labels = synthetic_batch(generator, batch, device)
    precision = "fp32" if smoke else "bf16"

    def call() -> None:
        with autocast_context(device, precision):
            if hasattr(generator, "seq_len"):
                generator.logits(data, labels)
            else:
                generator(data, torch.rand(batch, device=device), labels)

    for _ in range(3):
        call()
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    sync(device)
    seconds = (time.perf_counter() - started) / repeats
    return {
        "recipe": name,
        "batch": batch,
        "ms_per_call": seconds * 1e3,
        "samples_per_s": batch / seconds,
        "gflops_per_sample": flops / 1e9,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/gpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="training samples per step")
    parser.add_argument(
        "--budget-s", type=float, default=300.0, help="wall-clock bound for the whole script"
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    steps, warmup, batch = (2, 1, 2) if args.smoke else (args.steps, args.warmup, args.batch)
    pairs = {k: v for k, v in PAIRS.items() if k in SMOKE_PAIRS} if args.smoke else PAIRS
    names = (
        sorted(set(pairs) | set(pairs.values())) if args.smoke else recipe_names()
    )  # smoke: one per family
    # the inference comparison first (short: at most a third of the budget), then training with what
    # is left; a model not started before its share of the budget is gone is listed as skipped
    infer, skipped = [], []
    minimum = 0.0 if args.smoke else 15.0  # the least time worth starting a model with
    infer_until = started + args.budget_s / 3
    for name in sorted(set(pairs) | set(pairs.values())):
        if time.perf_counter() >= infer_until:
            skipped.append(f"{name} (inference: time budget)")
            continue
        infer.append(
            inference_rate(
                name, device, 2 if args.smoke else 8, 2 if args.smoke else 20, args.smoke
            )
        )
    rates = {row["recipe"]: row for row in infer}
    comparison = [
        {
            "elt": elt,
            "baseline": base,
            "elt_samples_per_s": rates[elt]["samples_per_s"],
            "baseline_samples_per_s": rates[base]["samples_per_s"],
            "speedup": rates[elt]["samples_per_s"] / rates[base]["samples_per_s"],
            "flop_ratio": rates[elt]["gflops_per_sample"] / rates[base]["gflops_per_sample"],
        }
        for elt, base in pairs.items()
        if elt in rates and base in rates
    ]
    train = []
    for index, name in enumerate(names):
        left = args.budget_s - (time.perf_counter() - started)
        share = left / (len(names) - index)
        if left <= minimum:
            skipped.append(name)
            continue
        try:
            train.append(
                train_recipe(
                    name,
                    device,
                    batch,
                    steps,
                    warmup,
                    args.smoke,
                    deadline=time.perf_counter() + 0.7 * share,
                )
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
        except torch.OutOfMemoryError:
            skipped.append(f"{name} (out of memory at batch {batch})")
            torch.cuda.empty_cache()
    print(
        f"recipes at real width, synthetic data, {device_name(device)}, batch {batch}, "
        f"{'fp32' if args.smoke else 'bf16'}"
    )
    print(
        f"{'recipe':<32} {'params':>8} {'steps':>5} {'step ms':>8} {'tokens/s':>10} {'MFU':>6} "
        f"{'peak GiB':>8}"
    )
    for r in train:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "n/a"
        print(
            f"{r['recipe']:<32} {r['params'] / 1e6:>7.0f}M {r['steps']:>5} "
            f"{r['step_s'] * 1e3:>8.1f} "
            f"{r['tokens_per_s']:>10.0f} {mfu:>6} {mem:>8}"
        )
    if skipped:
        print(f"skipped (time budget or memory): {', '.join(skipped)}")
    print(
        f"\nELT vs its iso-FLOP baseline, one network evaluation at batch {2 if args.smoke else 8}"
    )
    print(
        f"{'ELT':<32} {'baseline':<30} {'ELT/s':>8} {'base/s':>8} {'speed-up':>8} "
        f"{'FLOP ratio':>10}"
    )
    for c in comparison:
        print(
            f"{c['elt']:<32} {c['baseline']:<30} {c['elt_samples_per_s']:>8.1f} "
            f"{c['baseline_samples_per_s']:>8.1f} "
            f"{c['speedup']:>7.2f}x {c['flop_ratio']:>10.2f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "device": device_name(device),
        "torch": torch.__version__,
        "smoke": args.smoke,
        "batch": batch,
        "train": train,
        "skipped": skipped,
        "inference": infer,
        "comparison": comparison,
        "seconds": time.perf_counter() - started,
    }
    write_json(out / "recipes.json", record)
    print(f"wrote {out / 'recipes.json'} ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
