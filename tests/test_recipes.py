"""The paper-scale recipes (src/elt/configs/imagenet256_* / ucf101_*): built on the meta device,
their transformer parameter counts match the paper's tables and their forward FLOPs match a
first-principles count; baselines are the iso-FLOP stacks of their ELT rows."""

import re
from functools import cache
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from elt.config import CONFIG_DIR
from elt.recipes import (
    build_on_meta,
    forward_flops,
    load_recipe,
    recipe_names,
    transformer_parameters,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
TABLE_HEADING = "### Every recipe setting against its source"
# YAML keys that place files, size loaders or schedule logging/checkpoints, not the training recipe
LOGISTICS = {
    "paradigm",
    "data.root",
    "data.num_workers",
    "tokenizer.pretrained_path",
    "tokenizer.path",
    "tokenizer.encode_batch_size",
    "tokenizer.eval_items",
    "diffusion.vae_path",
    "diffusion.latent_cache",
    "train.out_dir",
    "logging.every",
    "logging.sample_every",
    "checkpoint.every",
    "checkpoint.keep",
    "logging.sample_loops",
    "distributed.strategy",
    # elt's own fsq3d tokenizer training (no anchor: MAGVIT's tokenizer is not loadable; a table row
    # says so)
    "tokenizer.channels",
    "tokenizer.steps",
    "tokenizer.batch_size",
    "tokenizer.lr",
    "tokenizer.warmup_steps",
}
# settings the YAML files may leave at their defaults, which the table must still cover
ALWAYS_IN_TABLE = (
    "model.mlp_ratio",
    "model.dropout",
    "model.attention_dropout",
    "optimizer.weight_decay_exempt",
)

# The paper's parameter counts (docs: shared/docs/paper.md §4), as printed, and the unit of the last
# digit
PAPER_PARAMS = {
    "imagenet256_masked_maskgit_l": (303e6, 1e6),
    "imagenet256_masked_maskgit_xl": (446e6, 1e6),
    "imagenet256_masked_elt_l_8x3": (101e6, 1e6),
    "imagenet256_masked_elt_l_12x2": (152e6, 1e6),
    "imagenet256_masked_elt_xl_7x4": (111e6, 1e6),
    "imagenet256_diffusion_dit_32": (2.1e9, 0.1e9),
    "imagenet256_diffusion_dit_16": (1.1e9, 0.1e9),
    "imagenet256_diffusion_elt_16x2": (1.1e9, 0.1e9),
    "imagenet256_diffusion_elt_8x4": (539e6, 1e6),
    "imagenet256_diffusion_elt_4x8": (271e6, 1e6),
    "ucf101_masked_magvit_l": (306e6, 1e6),
    "ucf101_masked_elt_l_6x4": (76e6, 1e6),
}
# Each baseline against the ELT rows it is the iso-FLOP (same depth N·L, same width) stack of
ISO_FLOP = {
    "imagenet256_masked_maskgit_l": [
        "imagenet256_masked_elt_l_8x3",
        "imagenet256_masked_elt_l_12x2",
    ],
    "imagenet256_masked_maskgit_xl": ["imagenet256_masked_elt_xl_7x4"],
    "imagenet256_diffusion_dit_32": [
        "imagenet256_diffusion_elt_8x4",
        "imagenet256_diffusion_elt_16x2",
        "imagenet256_diffusion_elt_4x8",
    ],
    "ucf101_masked_magvit_l": ["ucf101_masked_elt_l_6x4"],
}


def analytic_forward_flops(cfg) -> float:
    """One network evaluation per sample from first principles, 2 FLOPs per multiply-add, matmuls
    only.

    Per layer application on T tokens of width d with MLP width r·d: QKV 3d², output d², MLP 2r·d²
    weights → 2·T·(4 + 2r)·d²; attention scores QKᵀ and the weighted sum AV → 2·2·T²·d. The trunk
    applies N·L layers. Masked: T = token grid + 1 class token, head d → V on the grid tokens.
    Diffusion (adaLN-Zero): each layer application also maps the conditioning vector d → 6d; plus
    the patch embedding p → d and the final layer (adaLN d → 2d, linear d → p) on T tokens, and the
    timestep MLP 256 → d → d."""
    m = cfg.model
    d, r = m.width, m.mlp_ratio
    depth = m.unique_layers * m.loops
    side = cfg.data.image_size
    if cfg.paradigm == "masked":
        if cfg.data.frames:
            grid = (cfg.data.frames // cfg.tokenizer.temporal_downsample) * (
                side // cfg.tokenizer.downsample
            ) ** 2
        else:
            grid = (side // cfg.tokenizer.downsample) ** 2
        vocab = 1024
        tokens = grid + 1
        layer = 2 * tokens * (4 + 2 * r) * d * d + 4 * tokens * tokens * d
        return depth * layer + 2 * grid * d * vocab
    latent_side, latent_channels = side // 8, 4  # SD-VAE
    tokens = (latent_side // cfg.diffusion.patch_size) ** 2
    patch = latent_channels * cfg.diffusion.patch_size**2
    layer = 2 * tokens * (4 + 2 * r) * d * d + 4 * tokens * tokens * d + 2 * d * 6 * d
    outside = (
        2 * tokens * patch * d + 2 * (256 * d + d * d) + 2 * d * 2 * d + 2 * tokens * d * patch
    )
    return depth * layer + outside


@cache
def built(name):
    """(config, meta generator, forward FLOPs per sample at L_max), once per recipe for the whole
    module."""
    cfg = load_recipe(name)
    generator = build_on_meta(cfg)
    return cfg, generator, forward_flops(generator)


def test_every_paper_row_has_a_recipe():
    assert sorted(PAPER_PARAMS) == recipe_names()


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_recipe_on_meta_matches_the_paper_and_the_analytic_flops(name):
    cfg, generator, measured = built(name)
    assert all(p.is_meta for p in generator.backbone.parameters())
    params = transformer_parameters(generator)
    stated, last_digit = PAPER_PARAMS[name]
    # within 2%, or (for figures printed with 2 significant digits, e.g. "1.1B") within their
    # rounding
    assert abs(params - stated) <= max(0.02 * stated, last_digit / 2), (name, params / 1e6)
    assert measured == pytest.approx(analytic_forward_flops(cfg), rel=1e-9), name
    assert cfg.train.precision == "bf16"
    assert cfg.model.class_dropout == pytest.approx(0.1)


def test_paper_settings_in_the_recipes():
    for name in recipe_names():
        cfg = load_recipe(name)
        if "diffusion" in name:
            assert (cfg.train.steps, cfg.train.batch_size, cfg.sampling.steps) == (
                500_000,
                512,
                512,
            )
            assert (cfg.diffusion.process, cfg.diffusion.prediction, cfg.diffusion.weighting) == (
                "ddpm",
                "x0",
                "sigmoid",
            )
            assert cfg.sampling.guidance == 3.0 and cfg.diffusion.space == "latent"
        elif name.startswith("ucf101"):
            assert cfg.sampling.steps == 12 and cfg.sampling.guidance == 1.0  # no CFG for video
            assert (cfg.data.frames, cfg.data.image_size) == (16, 128)
        else:
            assert cfg.sampling.steps == 24
            assert cfg.train.steps == 270 * (
                1_281_167 // cfg.train.batch_size
            )  # 270 epochs of whole batches
        assert cfg.ilsd.mode == ("unique" if cfg.model.loops == 1 else "ilsd")


def test_baselines_are_the_iso_flop_stacks():
    for baseline, rows in ISO_FLOP.items():
        for row in rows:
            assert built(row)[2] == pytest.approx(built(baseline)[2], rel=1e-12), row
    # FLOPs grow linearly in the loop count (one checkpoint, any L)
    elt = built("imagenet256_masked_elt_l_8x3")[1]
    per_loop = forward_flops(elt, loops=2) - forward_flops(elt, loops=1)
    assert forward_flops(elt, loops=4) - forward_flops(elt, loops=1) == pytest.approx(
        3 * per_loop, rel=1e-12
    )


def test_anchor_settings_in_the_recipes():
    """The settings the anchors' own files give (docs/recipes.md has the file of each)."""
    for name in recipe_names():
        cfg = load_recipe(name)
        t, m, o, s = cfg.train, cfg.model, cfg.optimizer, cfg.lr_schedule
        if (
            "diffusion" in name
        ):  # DiT train.py: constant lr 1e-4, no warm-up, no clipping, EMA 0.9999, no dropout
            assert (s.kind, s.warmup_steps, o.grad_clip, t.ema_decay) == (
                "constant",
                0,
                0.0,
                0.9999,
            ), name
            assert (m.dropout, m.attention_dropout, o.weight_decay) == (0.0, 0.0, 0.0), name
        elif name.startswith(
            "ucf101"
        ):  # MAGVIT maskgvt_ucf101_config.py, maskgvt_train_lib.py, maskgvt_trainer.py
            assert (s.kind, s.min_ratio, s.warmup_steps, o.grad_clip) == (
                "cosine",
                0.0,
                5000,
                1.0,
            ), name
            assert t.steps == 2000 * (9_537 // t.batch_size) and t.ema_decay == 0.0, name
            assert list(o.weight_decay_exempt) == ["bias", "norm", "embedding"], name
            assert cfg.masked.label_smoothing == pytest.approx(1e-4) and (
                m.dropout,
                m.attention_dropout,
            ) == (0.1, 0.1)
        else:  # MaskGIT maskgit_class_cond_config.py / base_config.py
            assert (s.kind, s.warmup_steps, t.ema_decay) == ("constant", 5000, 0.999), name
            assert cfg.masked.label_smoothing == pytest.approx(0.1) and (
                m.dropout,
                m.attention_dropout,
            ) == (0.1, 0.1)
        # the recipe's dropout reaches every block it builds
        blocks = built(name)[1].backbone.blocks
        assert {(b.dropout, b.attn.dropout) for b in blocks} == {
            (m.dropout, m.attention_dropout)
        }, name


def recipe_table() -> list[dict]:
    """The rows of docs/recipes.md's table of every recipe setting against its source."""
    text = DOC.read_text(encoding="utf-8")
    assert TABLE_HEADING in text, f"{DOC} lost its section {TABLE_HEADING!r}"
    lines = text.split(TABLE_HEADING, 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| setting |"))
    rows = []
    for line in lines[first + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 6, line
        setting, recipes, ours, anchor, source, status = cells
        key = re.fullmatch(r"`([a-z_]+\.[a-z_]+)`", setting)
        value = re.fullmatch(r"`([^`]*)`", ours)
        rows.append(
            {
                "line": line,
                "key": key.group(1) if key else None,
                "prefixes": re.findall(r"`([a-z0-9_]+)`", recipes),
                "value": yaml.safe_load(value.group(1)) if value else None,
                "checked": bool(value),
                "status": status,
            }
        )
    return rows


def rows_for(name: str, rows: list[dict]) -> list[dict]:
    return [r for r in rows if any(name.startswith(p) for p in r["prefixes"])]


def test_recipe_table_in_the_docs_matches_the_yaml():
    """Every row naming a config key states the value each matching recipe has (so the table cannot
    drift), every row names recipes that exist, and every training setting of every recipe has a
    row."""
    rows = recipe_table()
    names = recipe_names()
    for row in rows:
        assert row["prefixes"] and all(
            any(n.startswith(p) for n in names) for p in row["prefixes"]
        ), row["line"]
        assert row["status"].split(" ")[0].strip("*:") in {
            "match",
            "paper",
            "fixed",
            "deviation",
            "assumption",
        }, row["line"]
        if row["key"] is None or not row["checked"]:
            continue
        for name in names:
            if any(name.startswith(p) for p in row["prefixes"]):
                ours = OmegaConf.select(load_recipe(name), row["key"])
                ours = OmegaConf.to_container(ours) if OmegaConf.is_config(ours) else ours
                if isinstance(ours, float) or isinstance(row["value"], float):
                    assert ours == pytest.approx(row["value"], rel=1e-12), (name, row["line"])
                else:
                    assert ours == row["value"], (name, row["line"])
    for name in names:
        mine = {r["key"] for r in rows_for(name, rows) if r["key"]}
        raw = yaml.safe_load((Path(CONFIG_DIR) / f"{name}.yaml").read_text(encoding="utf-8"))
        keys = {
            f"{section}.{key}"
            for section, values in raw.items()
            if isinstance(values, dict)
            for key in values
        }
        missing = sorted((keys - LOGISTICS) - mine) + [k for k in ALWAYS_IN_TABLE if k not in mine]
        assert not missing, f"docs/recipes.md has no row for {missing} of {name}"
