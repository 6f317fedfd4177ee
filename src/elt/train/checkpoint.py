"""Checkpoints: one directory per save, written atomically.

    RUN/checkpoints/step_0001000/
        config.yaml         the full run config: the checkpoint knows its architecture
        model.safetensors   raw weights
        ema.safetensors     EMA weights (sampling uses these by default)
        state.pt            optimizer, schedules, step, data position, RNG states (weights_only=True)
        manifest.json       byte size of every file above, written last
    RUN/checkpoints/latest  name of the newest complete checkpoint

A checkpoint is written to a temporary sibling directory (``.tmp_step_*``), flushed to disk and renamed
into place, so a write killed at any point (even ``kill -9``) never leaves a half-written checkpoint
under a valid name: the previous one stays the newest valid checkpoint. ``resolve_checkpoint`` skips
directories whose files do not match their manifest; stale temporary directories are removed by the
next save.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from elt import config as config_lib
from elt.core.generator import LoopedGenerator
from elt.errors import CheckpointError

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
TMP_PREFIX = ".tmp_step_"
DEMO_SCHEME = "demo:"
DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"


def demo_models() -> dict[str, Path]:
    """The models shipped in the package, by name: ``demo:NAME`` is accepted wherever a checkpoint is."""
    if not DEMO_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(DEMO_DIR.iterdir()) if (p / CONFIG_FILE).is_file() and (p / MODEL_FILE).is_file()}


def demo_checkpoint(name: str) -> Path:
    """``demo:masked`` → the shipped model's directory; an unknown name lists the shipped ones."""
    models = demo_models()
    key = name[len(DEMO_SCHEME):] if name.startswith(DEMO_SCHEME) else name
    if key not in models:
        shipped = ", ".join(DEMO_SCHEME + n for n in models) or "none in this install"
        raise CheckpointError(f"unknown demo model {name!r}; shipped: {shipped}")
    return models[key]


def ordinary_mode(path: str | Path) -> None:
    """Give a file the mode ``open()`` would (0666 less the umask): safetensors writes 0600, which hides
    checkpoints from the other users of a shared run directory."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _contiguous_state(module: torch.nn.Module | dict) -> dict[str, torch.Tensor]:
    state = module if isinstance(module, dict) else module.state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(run_dir: str | Path, step: int, cfg: DictConfig, model: torch.nn.Module | dict,
                    ema: torch.nn.Module | dict | None = None, state: dict[str, Any] | None = None,
                    keep: int = 3) -> Path:
    """Write ``RUN/checkpoints/step_<step>`` atomically and point ``latest`` at it.

    ``model``/``ema`` are modules or already-gathered state dicts; ``keep`` > 0 keeps that many newest.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    final = root / f"step_{step:07d}"
    tmp = root / f"{TMP_PREFIX}{step:07d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / CONFIG_FILE).write_text(config_lib.to_yaml(cfg))
    save_file(_contiguous_state(model), str(tmp / MODEL_FILE), metadata={"step": str(step)})
    if ema is not None:
        save_file(_contiguous_state(ema), str(tmp / EMA_FILE), metadata={"step": str(step)})
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    for item in tmp.iterdir():
        ordinary_mode(item)
    sizes = {item.name: item.stat().st_size for item in sorted(tmp.iterdir())}
    (tmp / MANIFEST_FILE).write_text(json.dumps({"step": step, "files": sizes}, indent=1))
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_atomic(root / "latest", final.name)
    _fsync_path(root)
    _prune(root, keep, final)
    return final


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    for item in path.iterdir():
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_path(path)


def _fsync_path(path: Path) -> None:
    """Flush a directory entry (a rename into it) to disk; not possible on every platform."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_tmp(root: Path) -> None:
    """Temporary directories of writes that were killed (any process) are garbage."""
    for stale in root.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _prune(root: Path, keep: int, current: Path) -> None:
    """Keep ``current`` and the ``keep - 1`` newest before it. Higher-numbered checkpoints (left by a
    run that was resumed from an earlier one) are never deleted automatically."""
    if keep <= 0:
        return
    older = sorted(p for p in root.glob("step_*") if p.name < current.name and is_complete(p))
    for old in older[:max(0, len(older) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def is_complete(path: Path) -> bool:
    """A finished checkpoint: config and weights present and, when it has a manifest (every checkpoint
    written by this version), every listed file present with the recorded size."""
    path = Path(path)
    if not ((path / CONFIG_FILE).is_file() and (path / MODEL_FILE).is_file()):
        return False
    manifest = path / MANIFEST_FILE
    if not manifest.is_file():
        return True
    try:
        files = json.loads(manifest.read_text())["files"]
        return all((path / name).is_file() and (path / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def checkpoints_newest_first(path: str | Path) -> list[Path]:
    """Complete checkpoints of a run (or checkpoints) directory, newest first."""
    path = Path(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step_*") if is_complete(p)), reverse=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (→ the checkpoint ``latest`` names, which is the last
    one written — after resuming from an older checkpoint, newer-numbered ones may be a discarded
    branch — else the highest-numbered complete one), or a shipped model's name (``demo:masked``)."""
    if isinstance(path, str) and path.startswith(DEMO_SCHEME):
        return demo_checkpoint(path)
    path = Path(path)
    if is_complete(path):
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = root / "latest"
    if latest.is_file() and is_complete(root / latest.read_text().strip()):
        return root / latest.read_text().strip()
    complete = checkpoints_newest_first(root)
    if complete:
        return complete[0]
    raise CheckpointError(f"no checkpoint at {str(path)!r}: expected a directory with {CONFIG_FILE} and "
                          f"{MODEL_FILE}, or a run directory with checkpoints/step_*")


def warn(message: str) -> None:
    print(f"elt: warning: {message}", file=sys.stderr)


def load_config_of(path: str | Path) -> DictConfig:
    return config_lib.from_yaml_file(resolve_checkpoint(path) / CONFIG_FILE)


def load_generator(path: str | Path, ema: bool = True, device: str | torch.device = "cpu",
                   overrides: list[str] | tuple[str, ...] = ()) -> LoopedGenerator:
    """Rebuild the generator a checkpoint describes and load its (EMA by default) weights; eval mode.
    ``overrides`` (``"masked.temperature_base=4.5"``, ...) change sampling settings only
    (:data:`elt.config.SAMPLING_KEYS`)."""
    from elt import registry  # the registry imports paradigms lazily

    ckpt = resolve_checkpoint(path)
    cfg = config_lib.from_yaml_file(ckpt / CONFIG_FILE, sampling_overrides=overrides)
    generator = registry.build_generator(cfg)
    weights = ckpt / EMA_FILE if ema and (ckpt / EMA_FILE).is_file() else ckpt / MODEL_FILE
    missing, unexpected = generator.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match the architecture in {ckpt / CONFIG_FILE}: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return generator.to(device).eval()


def export_inference(path: str | Path, out_dir: str | Path, half: bool = True) -> Path:
    """Write an inference-only checkpoint: ``config.yaml`` and the EMA weights (fp16 when ``half``) as
    ``model.safetensors`` — what ``elt.load`` needs, at a fraction of a training checkpoint's size."""
    ckpt = resolve_checkpoint(path)
    weights = ckpt / EMA_FILE if (ckpt / EMA_FILE).is_file() else ckpt / MODEL_FILE
    state = load_file(str(weights))
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text((ckpt / CONFIG_FILE).read_text())
    save_file(state, str(out / MODEL_FILE), metadata={"exported_from": str(ckpt), "weights": weights.name})
    ordinary_mode(out / MODEL_FILE)
    return out


def load_training_state(ckpt: str | Path) -> dict[str, Any] | None:
    state = Path(ckpt) / STATE_FILE
    return torch.load(state, map_location="cpu", weights_only=True) if state.is_file() else None
