"""Reading checkpoints: which folder a path means, whether it is complete, its config, its weights,
and the generator it describes.

A path is a checkpoint directory, a run directory (→ the checkpoint ``latest`` names, else the
highest-numbered complete one), a shipped model's name (``demo:masked``) or an inference export.
:func:`resolve_checkpoint` skips checkpoints whose files do not match their manifest, with a warning
naming the damaged step and the one used; symbolic links inside a run (step folders, checkpoint
files, ``latest``) are never followed. Writing checkpoints is :mod:`elt.train.checkpoint`'s job."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file

from elt import config as config_lib
from elt.core.generator import LoopedGenerator
from elt.errors import CheckpointError
from elt.inference import hub
from elt.inference.demo_models import DEMO_SCHEME, demo_checkpoint
from elt.inference.files import (
    CHECKPOINT_FILES,
    CONFIG_FILE,
    EMA_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    STATE_FILE,
    STEP_NAME,
)

_WARNED: set[str] = set()


def first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """Name of the first floating-point tensor holding NaN/Inf, or ``None`` (one pass over the
    weights, a fraction of a training step)."""
    for name, tensor in state.items():
        if (
            torch.is_tensor(tensor)
            and tensor.is_floating_point()
            and not bool(torch.isfinite(tensor).all())
        ):
            return name
    return None


def is_complete(path: Path) -> bool:
    """A finished checkpoint: config and weights present and, when it has a manifest (every
    checkpoint written by this version), every listed file present with the recorded size."""
    return damage_of(path) is None


def damage_of(path: Path) -> str | None:
    """What is wrong with a checkpoint folder (one phrase), or ``None`` when it is complete: a file
    missing, a size that differs from its manifest, an unreadable manifest, a symbolic link among
    its files."""
    if hub.is_hub_folder(Path(path)):
        return hub.damage_of(Path(path))
    path = Path(path)
    for name in CHECKPOINT_FILES:
        if (path / name).is_symlink():
            return f"{name} is a symbolic link"
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (path / name).is_file():
            return f"{name} is missing"
    manifest = path / MANIFEST_FILE
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text())["files"]
        for name, size in files.items():
            item = path / name
            if not item.is_file():
                return f"{name} is missing"
            if item.stat().st_size != size:
                return f"{name} has {item.stat().st_size} bytes, its manifest records {size}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST_FILE} is unreadable"
    return None


def _looks_like_checkpoint(path: Path) -> bool:
    return any((path / name).exists() or (path / name).is_symlink() for name in CHECKPOINT_FILES)


def _step_folders(root: Path, links: list[Path] | None = None) -> list[Path]:
    """``step_N`` folders of a checkpoints directory, newest first; symbolic links are skipped (a
    step folder of an untrusted run must not lead outside it) and listed in ``links``."""
    if not root.is_dir():
        return []
    folders = []
    for p in sorted(root.glob("step_*"), reverse=True):
        if not STEP_NAME.fullmatch(p.name):
            continue
        if p.is_symlink():
            if links is not None:
                links.append(p)
            continue
        if p.is_dir():
            folders.append(p)
    return folders


def checkpoints_newest_first(path: str | Path) -> list[Path]:
    """Complete checkpoints of a run (or checkpoints) directory, newest first (no symbolic
    links)."""
    path = Path(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    return [p for p in _step_folders(root) if is_complete(p)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (→ the checkpoint ``latest`` names, which is the
    last one written — after resuming from an older checkpoint, newer-numbered ones may be a
    discarded branch — else the highest-numbered complete one), or a shipped model's name
    (``demo:masked``).

    When that newest checkpoint is damaged, the newest complete one before it is used with a warning
    naming both; a damaged checkpoint folder given by name is a one-line
    :class:`CheckpointError`."""
    if isinstance(path, str) and path.startswith(DEMO_SCHEME):
        return demo_checkpoint(path)
    hub_folder = hub.local_folder(path)  # a Hub folder, or a Hub repo id through the HF cache
    if hub_folder is not None:
        return hub_folder
    path = Path(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    links: list[Path] = []
    folders = _step_folders(root, links)
    if not folders and _looks_like_checkpoint(path):
        why = damage_of(path)
        if why is not None:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is damaged ({why}); use another checkpoint"
            )
        return path
    newest = _latest_name(root)
    newest = (
        root / newest
        if newest and (root / newest) in folders
        else (folders[0] if folders else None)
    )
    ignored = (
        f" ({', '.join(p.name for p in links[:3])}: symbolic links, not followed)" if links else ""
    )
    if newest is None:
        raise CheckpointError(
            f"no checkpoint at {str(path)!r}{ignored}: expected a directory with {CONFIG_FILE} "
            f"and {MODEL_FILE}, or a run directory with checkpoints/step_*"
        )
    if links:
        warn_once(
            f"ignoring {', '.join(str(p) for p in links[:3])}: a step folder must not be a "
            "symbolic link"
        )
    why = damage_of(newest)
    if why is None:
        return newest
    older = [p for p in folders if p.name < newest.name and is_complete(p)]
    if not older:
        raise CheckpointError(
            f"the newest checkpoint {str(newest)!r} is damaged ({why}) and no complete one "
            "precedes it"
        )
    warn_once(f"checkpoint {newest} is damaged ({why}); using {older[0].name} instead")
    return older[0]


def _latest_name(root: Path) -> str | None:
    """The bare ``step_NNNNNNN`` name ``root/latest`` holds, or ``None`` (missing, unreadable, a
    link, or a name that leads elsewhere: an untrusted run directory cannot point outside it)."""
    latest = root / "latest"
    if latest.is_symlink():
        warn_once(f"ignoring {latest}: it is a symbolic link")
        return None
    try:
        name = latest.read_text().strip() if latest.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return None
    if not STEP_NAME.fullmatch(name):
        if name:
            warn_once(f"ignoring {latest}: it must name a step_NNNNNNN folder next to it")
        return None
    return name


def read_latest(root: Path) -> Path | None:
    """The complete checkpoint ``root/latest`` names, or ``None``. The pointer must be a bare
    ``step_NNNNNNN`` name inside ``root`` (an untrusted run directory cannot point elsewhere)."""
    name = _latest_name(root)
    if name is None:
        return None
    target = root / name
    if target.is_symlink() or not is_complete(target):
        return None
    return target


def warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warn(message)


def warn(message: str) -> None:
    print(f"elt: warning: {message}", file=sys.stderr)


def config_file(ckpt: Path) -> Path:
    """The config of a resolved checkpoint: ``config.yaml``, or a Hub folder's ``config.json``
    (:mod:`elt.inference.hub`; JSON is YAML, so both read the same way)."""
    ckpt = Path(ckpt)
    if not (ckpt / CONFIG_FILE).is_file() and hub.is_hub_folder(ckpt):
        return ckpt / hub.CONFIG_JSON
    return ckpt / CONFIG_FILE


def load_config_of(path: str | Path) -> DictConfig:
    return config_lib.from_yaml_file(config_file(resolve_checkpoint(path)))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file as a state dict; a damaged file is a one-line :class:`CheckpointError`."""
    try:
        return load_file(str(path))
    except (
        Exception
    ) as exc:  # safetensors raises its own error type for empty/truncated/garbage files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{str(path)!r} is damaged or not a safetensors weights file ({reason}); use "
            "another checkpoint"
        ) from None


def load_state_into(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    weights: Path,
    config: Path,
    strict: bool = False,
) -> None:
    """``module.load_state_dict`` with size mismatches and missing keys as one-line errors."""
    current = module.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(current[k].shape)}"
        for k, v in state.items()
        if k in current and torch.is_tensor(v) and tuple(v.shape) != tuple(current[k].shape)
    ]
    missing = [k for k in current if k not in state]
    unexpected = [k for k in state if k not in current]
    if wrong or unexpected or (strict and missing) or (missing and not state):
        detail = (
            f"wrong sizes {wrong[:2]}"
            if wrong
            else f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
        raise CheckpointError(
            f"{str(weights)!r} does not match the architecture in {str(config)!r}: {detail}"
        )
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise CheckpointError(
            f"{str(weights)!r} does not match the architecture in {str(config)!r}: "
            f"missing {result.missing_keys[:3]}"
        )


def load_generator(
    path: str | Path,
    ema: bool = True,
    device: str | torch.device = "cpu",
    overrides: list[str] | tuple[str, ...] = (),
) -> LoopedGenerator:
    """Rebuild the generator a checkpoint describes and load its (EMA by default) weights; eval
    mode. ``overrides`` (``"masked.temperature_base=4.5"``, ...) change sampling settings only
    (:func:`elt.config.sampling_keys`). Damaged, mis-sized or non-finite weights are a one-line
    error."""
    from elt import registry  # the registry imports paradigms lazily

    ckpt = resolve_checkpoint(path)
    cfg = config_lib.from_yaml_file(config_file(ckpt), sampling_overrides=overrides)
    generator = registry.build_generator(cfg)
    weights = ckpt / EMA_FILE if ema and (ckpt / EMA_FILE).is_file() else ckpt / MODEL_FILE
    state = load_weights(weights)
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(
            f"{str(weights)!r} holds NaN/Inf weights ({bad}); sampling from it would give blank "
            "images: use an earlier checkpoint of the run"
        )
    load_state_into(generator, state, weights, config_file(ckpt))
    if not isinstance(device, torch.device):
        from elt.runtime import resolve_device

        device = resolve_device(
            str(device)
        )  # an unknown or missing device is one line, not a traceback
    return generator.to(device).eval()


def read_training_state(ckpt: str | Path) -> dict[str, Any] | None:
    """``state.pt`` loaded with ``weights_only=True`` (``None`` when the checkpoint has none); a
    damaged or foreign file is a one-line error (never the advice to load it unsafely)."""
    state = Path(ckpt) / STATE_FILE
    if not state.is_file():
        return None
    if state.is_symlink():
        raise CheckpointError(
            f"{str(state)!r} is a symbolic link; elt does not follow links inside a checkpoint"
        )
    try:
        return torch.load(state, map_location="cpu", weights_only=True)
    except Exception as exc:
        kind = "empty" if state.stat().st_size == 0 else "damaged or not an elt training state"
        raise CheckpointError(
            f"{str(state)!r} is {kind} ({type(exc).__name__}); resume from another checkpoint"
        ) from None


def verify_checkpoint(ckpt: str | Path) -> None:
    """Check every file of a checkpoint (what ``elt info`` reports on): sizes against the manifest,
    each safetensors file's header and tensors, the training state. A damaged file is a one-line
    error."""
    ckpt = Path(ckpt)
    why = damage_of(ckpt)
    if why is not None:
        raise CheckpointError(
            f"checkpoint {str(ckpt)!r} is damaged ({why}); use another checkpoint"
        )
    for name in (MODEL_FILE, EMA_FILE):
        if (ckpt / name).is_file():
            load_weights(ckpt / name)
    read_training_state(ckpt)
