"""Per-GPU training memory from the exact shape account (elt.train.memory), on the meta device: no
GPU needed.

    PYTHONPATH=src python benchmarks/fsdp_memory_account.py [--world 8] [--out FILE.json]

1. ELT-XL 7N×4L (imagenet256_masked_elt_xl_7x4) at 8 ranks, bf16: FSDP2 per block vs the one-unit
   wrap of the looped core, at several per-GPU micro-batches, with and without per-loop activation
   checkpointing.
2. Every shipped recipe at its default global batch / 8 ranks (the figure docs/recipes.md quotes).
Prints two tables and writes JSON. Figures are estimates (see the module docstring of
elt.train.memory)."""

import argparse
from pathlib import Path

from elt.fileio import write_json
from elt.recipes import build_on_meta, load_recipe, recipe_names
from elt.train.memory import fsdp_account

GIB = 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/fsdp_memory_account.json")
    args = parser.parse_args()
    world = args.world

    xl = build_on_meta(load_recipe("imagenet256_masked_elt_xl_7x4"))
    rows = []
    print(f"ELT-XL 7N×4L, {world} ranks, bf16, AdamW + EMA (GiB per GPU)")
    print(
        f"{'micro':>5} {'ckpt':>5} | {'one-unit':>9} {'per-block':>9} {'ratio':>6} | "
        f"{'model mem 1-unit':>16} "
        f"{'per-block':>9} {'ratio':>6} | {'activations':>11}"
    )
    for micro in (1, 2, 4, 8, 32):
        for ckpt in (False, True):
            one = fsdp_account(xl, world, "backbone", micro_batch=micro, checkpoint_loops=ckpt)
            block = fsdp_account(xl, world, "block", micro_batch=micro, checkpoint_loops=ckpt)
            reuse = fsdp_account(
                xl,
                world,
                "block",
                reshard_after_forward=False,
                micro_batch=micro,
                checkpoint_loops=ckpt,
            )
            row = {
                "micro_batch": micro,
                "checkpoint_loops": ckpt,
                "one_unit": one.as_dict(),
                "per_block": block.as_dict(),
                "per_block_reuse_gather": reuse.as_dict(),
                "peak_ratio": block.peak / one.peak,
                "model_memory_ratio": block.model_memory / one.model_memory,
            }
            rows.append(row)
            print(
                f"{micro:>5} {str(ckpt):>5} | {one.peak / GIB:>9.3f} {block.peak / GIB:>9.3f} "
                f"{row['peak_ratio']:>6.1%} | {one.model_memory / GIB:>16.3f} "
                f"{block.model_memory / GIB:>9.3f} "
                f"{row['model_memory_ratio']:>6.1%} | {one.activations / GIB:>11.3f}"
            )

    recipes = []
    print(
        f"\nEvery recipe at its global batch over {world} ranks, as configured (GiB per GPU, bf16)"
    )
    print(
        f"{'recipe':<32} {'params':>8} {'micro':>5} {'wrap':>9} {'peak':>7} {'ckpt peak':>9} "
        f"{'1-unit peak':>11} "
        f"{'grid':>6}"
    )
    for name in recipe_names():
        cfg = load_recipe(name)
        generator = build_on_meta(cfg)
        micro = cfg.train.batch_size // world
        unit = "block" if cfg.distributed.strategy == "fsdp" else "ddp"
        plain = fsdp_account(generator, world, unit, micro_batch=micro)
        ckpt = fsdp_account(generator, world, unit, micro_batch=micro, checkpoint_loops=True)
        one = fsdp_account(generator, world, "backbone", micro_batch=micro)
        recipes.append(
            {
                "recipe": name,
                "micro_batch": micro,
                "wrap": unit,
                "account": plain.as_dict(),
                "account_checkpoint_loops": ckpt.as_dict(),
                "one_unit": one.as_dict(),
            }
        )
        print(
            f"{name:<32} {plain.params / 1e6:>7.0f}M {micro:>5} {unit:>9} {plain.peak / GIB:>7.1f} "
            f"{ckpt.peak / GIB:>9.1f} {one.peak / GIB:>11.1f} {plain.grid / GIB:>6.1f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"world": world, "elt_xl_7x4": rows, "recipes": recipes})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
