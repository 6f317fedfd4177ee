"""Checkpoints: one directory per save, written atomically.

    RUN/checkpoints/step_0001000/
        config.yaml         the full run config: the checkpoint knows its architecture
        model.safetensors   raw weights
        ema.safetensors     EMA weights (sampling uses these by default)
        state.pt            optimizer, schedules, step, RNG states (loaded with weights_only=True)
    RUN/checkpoints/latest  name of the newest complete checkpoint

A checkpoint is written to a temporary sibling directory and renamed into place, so a killed write
never leaves a half-written checkpoint under a valid name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from elt import config as config_lib
from elt.core.generator import LoopedGenerator

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"


class CheckpointError(FileNotFoundError):
    """No usable checkpoint where one was expected."""


def _contiguous_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: str | Path, step: int, cfg: DictConfig, model: torch.nn.Module,
                    ema: torch.nn.Module | None = None, state: dict[str, Any] | None = None,
                    keep: int = 3) -> Path:
    """Write ``RUN/checkpoints/step_<step>`` atomically and point ``latest`` at it."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / CONFIG_FILE).write_text(config_lib.to_yaml(cfg))
    save_file(_contiguous_state(model), str(tmp / MODEL_FILE), metadata={"step": str(step)})
    if ema is not None:
        save_file(_contiguous_state(ema), str(tmp / EMA_FILE), metadata={"step": str(step)})
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_atomic(root / "latest", final.name)
    _prune(root, keep)
    return final


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    for item in path.iterdir():
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    complete = sorted(p for p in root.glob("step_*") if is_complete(p))
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def is_complete(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / MODEL_FILE).is_file()


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (→ its newest complete checkpoint)."""
    path = Path(path)
    if is_complete(path):
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = root / "latest"
    if latest.is_file() and is_complete(root / latest.read_text().strip()):
        return root / latest.read_text().strip()
    complete = sorted(p for p in root.glob("step_*") if is_complete(p)) if root.is_dir() else []
    if complete:
        return complete[-1]
    raise CheckpointError(f"no checkpoint at {str(path)!r}: expected a directory with {CONFIG_FILE} and "
                          f"{MODEL_FILE}, or a run directory with checkpoints/step_*")


def load_config_of(path: str | Path) -> DictConfig:
    return config_lib.from_yaml_file(resolve_checkpoint(path) / CONFIG_FILE)


def load_generator(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> LoopedGenerator:
    """Rebuild the generator a checkpoint describes and load its (EMA by default) weights; eval mode."""
    from elt import registry  # the registry imports paradigms lazily

    ckpt = resolve_checkpoint(path)
    cfg = config_lib.from_yaml_file(ckpt / CONFIG_FILE)
    generator = registry.build_generator(cfg)
    weights = ckpt / EMA_FILE if ema and (ckpt / EMA_FILE).is_file() else ckpt / MODEL_FILE
    missing, unexpected = generator.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match the architecture in {ckpt / CONFIG_FILE}: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return generator.to(device).eval()


def load_training_state(ckpt: str | Path) -> dict[str, Any] | None:
    state = Path(ckpt) / STATE_FILE
    return torch.load(state, map_location="cpu", weights_only=True) if state.is_file() else None
