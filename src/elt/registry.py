"""Maps a config's ``paradigm`` to the module that builds it, imported lazily so the paradigms stay apart.

Each paradigm package provides ``elt.<paradigm>.task`` with:
  * ``build_generator(cfg) -> LoopedGenerator`` — the architecture alone (used to load checkpoints);
  * ``prepare_data(cfg, generator, run_dir, progress=True) -> torch.utils.data.Dataset`` — training items
    that ``generator.training_loss`` accepts once collated (may train and cache a tokenizer first, with
    progress bars unless ``progress`` is false).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from omegaconf import DictConfig

from elt.core.generator import LoopedGenerator
from elt.core.looped import LoopedTransformer

TASK_MODULES = {"masked": "elt.masked.task", "diffusion": "elt.diffusion.task"}


def task_module(paradigm: str) -> ModuleType:
    if paradigm not in TASK_MODULES:
        raise ValueError(f"unknown paradigm {paradigm!r}; allowed: {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[paradigm])


def build_generator(cfg: DictConfig) -> LoopedGenerator:
    return task_module(cfg.paradigm).build_generator(cfg)


def prepare_data(cfg: DictConfig, generator: LoopedGenerator, run_dir: Path, progress: bool = True):
    return task_module(cfg.paradigm).prepare_data(cfg, generator, run_dir, progress=progress)


def backbone_shape(cfg: DictConfig) -> tuple[int, int]:
    """(unique_layers, loops) actually built: ``ilsd.mode=unique`` unrolls N×L into N·L unique layers."""
    if cfg.ilsd.mode == "unique":
        return cfg.model.unique_layers * cfg.model.loops, 1
    return cfg.model.unique_layers, cfg.model.loops


def build_backbone(cfg: DictConfig, cond_dim: int | None = None) -> LoopedTransformer:
    """The looped core as a config describes it (both paradigms build theirs here)."""
    unique_layers, loops = backbone_shape(cfg)
    m = cfg.model
    return LoopedTransformer(dim=m.width, unique_layers=unique_layers, loops=loops, heads=m.heads,
                             mlp_ratio=m.mlp_ratio, cond_dim=cond_dim, loop_embedding=m.loop_embedding,
                             loop_norm=m.loop_norm, checkpoint_loops=m.checkpoint_loops)
