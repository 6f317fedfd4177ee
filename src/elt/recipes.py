"""Paper-scale recipes: the shipped ImageNet-256 / UCF-101 configs and their shape-only accounts.

A recipe is a shipped config (``src/elt/configs/<name>.yaml``) that reproduces one row of the
paper's tables. Its model can be built on the meta device (no memory, no weights, no tokenizer/VAE
folder needed: a shape-only stand-in replaces them) to count parameters, to measure forward FLOPs
with PyTorch's own FLOP counter, and to account training memory per GPU (:mod:`elt.train.memory`).

"Transformer parameters" are the looped blocks plus the output head (what maps hidden states to
predictions); input embeddings (token / patch / class / timestep embedders, position tables) are
left out, as in the parameter counts of MaskGIT/DiT-style tables."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from elt.config import CONFIG_DIR, PRETRAINED_TOKENIZER_KINDS, load_config
from elt.registry import build_backbone

RECIPE_PREFIXES = ("imagenet256_", "ucf101_")
META = torch.device("meta")
SD_VAE_DOWNSAMPLE, SD_VAE_CHANNELS = 8, 4  # Stable Diffusion v1.x VAE: 256² RGB → 4×32×32 latents
MASKGIT_VQ_CODES = 1024  # the MaskGIT VQGAN's codebook (the paper: "codebook 1024")


def recipe_names() -> list[str]:
    return sorted(
        p.stem for p in Path(CONFIG_DIR).glob("*.yaml") if p.stem.startswith(RECIPE_PREFIXES)
    )


def load_recipe(name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    return load_config(name, list(overrides))


class ShapeTokenizer(nn.Module):
    """Stands in for a pretrained VQ tokenizer when only shapes matter (meta-device accounts)."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.image_size = int(cfg.data.image_size)
        self.image_channels = int(cfg.data.channels)
        side = self.image_size // int(cfg.tokenizer.downsample)
        self.token_grid = (side, side)
        self.codebook_size = (
            MASKGIT_VQ_CODES
            if cfg.tokenizer.kind in PRETRAINED_TOKENIZER_KINDS
            else math.prod(cfg.tokenizer.levels)
        )

    def decode_gflops(self) -> float:
        return 0.0


def build_on_meta(cfg: DictConfig) -> nn.Module:
    """The recipe's generator with every parameter on the meta device (shapes only). The pretrained
    VQ tokenizer / VAE are not loaded: their output shapes come from the config (VQ:
    ``tokenizer.downsample``,
    VAE: the SD-VAE's 8× downsampling to 4 channels)."""
    with META:
        if cfg.paradigm == "masked":
            from elt.masked.model import MaskedGenerator

            if cfg.tokenizer.kind in PRETRAINED_TOKENIZER_KINDS:
                tokenizer = ShapeTokenizer(cfg)
            else:
                from elt.masked.task import build_tokenizer

                tokenizer = build_tokenizer(cfg)
            generator = MaskedGenerator(cfg, tokenizer)
        elif cfg.paradigm == "diffusion":
            from elt.diffusion.model import DiffusionGenerator
            from elt.diffusion.process import process_from_config

            side = cfg.data.image_size
            frames = (cfg.data.frames,) if cfg.data.frames else ()
            if cfg.diffusion.space == "latent":
                shape = (
                    SD_VAE_CHANNELS,
                    *frames,
                    side // SD_VAE_DOWNSAMPLE,
                    side // SD_VAE_DOWNSAMPLE,
                )
            else:
                shape = (cfg.data.channels, *frames, side, side)
            generator = DiffusionGenerator(
                cfg,
                build_backbone(cfg, cond_dim=cfg.model.width),
                process_from_config(cfg.diffusion),
                shape,
            )
        else:
            raise ValueError(f"no meta-device build for paradigm {cfg.paradigm!r}")
    return generator.to(META)


def head_module(generator: nn.Module) -> nn.Module:
    """The output head of either paradigm (masked: ``head``; diffusion: ``final``)."""
    head = getattr(generator, "final", None)
    return head if isinstance(head, nn.Module) else generator.head


def transformer_parameters(generator: nn.Module) -> int:
    """Parameters of the looped blocks plus the output head (the count the paper's tables give)."""
    modules = [generator.backbone, head_module(generator)]
    return sum(p.numel() for m in modules for p in m.parameters())


def sequence_length(generator: nn.Module) -> int:
    """Tokens the transformer attends over (masked: the token grid + the class token)."""
    if hasattr(generator, "seq_len"):
        return int(generator.seq_len) + 1
    return int(generator.tokens)


def forward_flops(generator: nn.Module, loops: int | None = None, batch: int = 1) -> float:
    """FLOPs of one network evaluation per sample, counted by ``torch.utils.flop_counter`` on the
    meta device (matmuls and attention; 2 FLOPs per multiply-add).

    Counted as a training forward computes it (gradients on; meta tensors cost no memory): every
    loop maps the conditioning through each block's adaLN, the architecture's FLOPs, which the
    iso-FLOP comparisons of the recipes are about. Sampling computes those terms once per pass
    instead (:meth:`elt.core.looped.LoopedTransformer.modulation_memos`), a little less."""
    from torch.utils.flop_counter import FlopCounterMode

    generator.eval()
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        labels = torch.zeros(batch, dtype=torch.long, device=META)
        if hasattr(generator, "seq_len"):
            tokens = torch.zeros(batch, generator.seq_len, dtype=torch.long, device=META)
            generator.logits(tokens, labels, loops=loops)
        else:
            z = torch.zeros(batch, *generator.data_shape, device=META)
            generator(z, torch.zeros(batch, device=META), labels, loops=loops)
    return counter.get_total_flops() / batch
