"""The paradigm registry: paradigms register themselves here, and the config, trainer, checkpoints
and sampling reach them only through it, so the lower layers never import a paradigm.

A paradigm is one package that calls :func:`register_paradigm` when imported, naming

  * its config section (a dataclass; the section is named after the paradigm, e.g. ``masked:``),
    which owns the paradigm's keys, checks and choices through optional class attributes:
    ``RULES`` (one :mod:`elt.limits` rule per field), ``validate(cfg)`` (a classmethod: relations
    between its keys and the shared ones, run by :func:`elt.config.validate` when the paradigm is
    the config's), ``SAMPLING_KEYS`` (its fields a checkpoint may be sampled with differently),
    ``SAMPLING_DEFAULTS`` (its values of the ``sampling:`` keys left null) and ``RENAMED_KEYS``
    (old field -> (new dotted key, conversion or None): how its checkpoints saved by earlier
    versions are read);
  * its task module (imported only when a model is built), which provides - ``build_generator(cfg)
      -> LoopedGenerator`` — the architecture alone (used to load checkpoints); -
      ``prepare_data(cfg, generator, run_dir, progress=True) -> torch.utils.data.Dataset`` —
      training items that ``generator.training_loss`` accepts once collated (may train and cache a
      tokenizer first, with progress bars unless ``progress`` is false).

The built-in paradigms (``elt.masked``, ``elt.diffusion``) are found by package name; other packages
are found through the ``elt.paradigms`` entry-point group (value: the package that registers
itself), or by calling :func:`register_paradigm` directly."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from elt.core.generator import LoopedGenerator
from elt.core.looped import LoopedTransformer
from elt.errors import ConfigError

BUILTIN_PACKAGES = ("elt.masked", "elt.diffusion")
DEFAULT_PARADIGM = BUILTIN_PACKAGES[0].rpartition(".")[2]  # a config that names none
ENTRY_POINT_GROUP = "elt.paradigms"


@dataclass(frozen=True)
class Paradigm:
    name: str
    task: (
        str | ModuleType | Any
    )  # module path (imported lazily), or an object with build_generator/prepare_data
    config: type | None = None  # dataclass of the paradigm's config section (None: no section)

    def task_module(self):
        return importlib.import_module(self.task) if isinstance(self.task, str) else self.task

    def validate(self, cfg: DictConfig) -> None:
        """The paradigm's own checks of a whole config (its config class's ``validate``, if any)."""
        check = getattr(self.config, "validate", None)
        if check is not None:
            check(cfg)


_PARADIGMS: dict[str, Paradigm] = {}
_discovered = False


def register_paradigm(
    name: str, task: str | ModuleType | Any, config: type | None = None
) -> Paradigm:
    """Make ``paradigm: name`` known to configs, the trainer, checkpoints and sampling (replaces an
    earlier registration of the same name)."""
    paradigm = Paradigm(name, task, config)
    _PARADIGMS[name] = paradigm
    return paradigm


def unregister_paradigm(name: str) -> None:
    _PARADIGMS.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(entry.value.split(":")[0])


def paradigms() -> dict[str, Paradigm]:
    """Every registered paradigm by name (the built-in ones and entry points are imported on first
    use)."""
    _discover()
    builtin = [package.rpartition(".")[2] for package in BUILTIN_PACKAGES]
    order = sorted(
        _PARADIGMS, key=lambda name: builtin.index(name) if name in builtin else len(builtin)
    )
    return {name: _PARADIGMS[name] for name in order}  # built-in ones first, the rest as registered


def get_paradigm(name: str) -> Paradigm:
    known = paradigms()
    if name not in known:
        raise ConfigError(f"unknown paradigm {name!r}; allowed: {', '.join(known)}")
    return known[name]


def task_module(paradigm: str):
    return get_paradigm(paradigm).task_module()


def build_generator(cfg: DictConfig) -> LoopedGenerator:
    unresolved = [
        key
        for key in ("image_size", "channels", "num_classes")
        if OmegaConf.select(cfg, f"data.{key}", default=0) is None
    ]
    if unresolved:  # a folder config's null keys: filled from the data by the training commands
        raise ConfigError(
            f"data.{unresolved[0]} is null (taken from the data by elt train, elt prepare and elt "
            f"tokenizer train); set data.{unresolved[0]} to build a model without reading the data"
        )
    return task_module(cfg.paradigm).build_generator(cfg)


def prepare_data(cfg: DictConfig, generator: LoopedGenerator, run_dir: Path, progress: bool = True):
    return task_module(cfg.paradigm).prepare_data(cfg, generator, run_dir, progress=progress)


def backbone_shape(cfg: DictConfig) -> tuple[int, int]:
    """(unique_layers, loops) actually built: ``ilsd.mode=unique`` unrolls N×L into N·L unique
    layers."""
    if cfg.ilsd.mode == "unique":
        return cfg.model.unique_layers * cfg.model.loops, 1
    return cfg.model.unique_layers, cfg.model.loops


_BACKBONE_DEVICE: ContextVar[str | None] = ContextVar("backbone_device", default=None)


@contextmanager
def backbone_on(device: str | None) -> Iterator[None]:
    """Build the looped cores made inside this block on ``device`` (``"meta"``: shapes only, no
    memory and no random draws; FSDP materialises them shard by shard). The rest of a generator
    (embeddings, head, frozen tokenizer or VAE) is built as usual."""
    token = _BACKBONE_DEVICE.set(device)
    try:
        yield
    finally:
        _BACKBONE_DEVICE.reset(token)


def build_backbone(cfg: DictConfig, cond_dim: int | None = None) -> LoopedTransformer:
    """The looped core as a config describes it (both paradigms build theirs here); on the device
    :func:`backbone_on` names, if any."""
    device = _BACKBONE_DEVICE.get()
    if device is not None:
        with torch.device(device), backbone_on(None):
            return build_backbone(cfg, cond_dim)
    unique_layers, loops = backbone_shape(cfg)
    m = cfg.model
    return LoopedTransformer(
        dim=m.width,
        unique_layers=unique_layers,
        loops=loops,
        heads=m.heads,
        mlp_ratio=m.mlp_ratio,
        cond_dim=cond_dim,
        loop_embedding=m.loop_embedding,
        loop_norm=m.loop_norm,
        checkpoint_loops=m.checkpoint_loops,
        input_injection=m.input_injection,
        dropout=m.dropout,
        attention_dropout=m.attention_dropout,
    )
