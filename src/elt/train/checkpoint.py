"""Checkpoints: one directory per save, written atomically.

    RUN/checkpoints/step_0001000/
        config.yaml         the full run config: the checkpoint knows its architecture
        model.safetensors   raw weights
        ema.safetensors     EMA weights (sampling uses these by default)
        state.pt            optimizer, schedules, step, data position, RNG states
                            (weights_only=True)
        manifest.json       byte size of every file above, written last
    RUN/checkpoints/latest  name of the newest complete checkpoint

A checkpoint is written to a temporary sibling directory (``.tmp_step_*``), flushed to disk and
renamed into place, so a write killed at any point (even ``kill -9``) never leaves a half-written
checkpoint under a valid name: the previous one stays the newest valid checkpoint. A write that
fails (disk full, file-size limit) removes its temporary directory and is one line.
``resolve_checkpoint`` skips directories whose files do not match their manifest, with a warning
naming the damaged step and the one used; stale temporary directories are removed by the next save.

Every manifest records the run that wrote it (a random id, kept across resumes): a save never
replaces a step folder of another run (a fresh start in a finished run's folder), and symbolic links
inside a run (step folders, checkpoint files) are never followed."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from elt import config as config_lib
from elt.core.generator import LoopedGenerator
from elt.errors import CheckpointError, UserError
from elt.fileio import (
    OutputError,
    atomic_dir,
    check_not_in_package,
    fsync_dir,
    write_failure,
    write_text,
)

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
TMP_PREFIX = ".tmp_step_"
DEMO_SCHEME = "demo:"
DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"


def demo_models() -> dict[str, Path]:
    """The models shipped in the package, by name: ``demo:NAME`` is accepted wherever a checkpoint
    is."""
    if not DEMO_DIR.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(DEMO_DIR.iterdir())
        if (p / CONFIG_FILE).is_file() and (p / MODEL_FILE).is_file()
    }


def demo_checkpoint(name: str) -> Path:
    """``demo:masked`` → the shipped model's directory; an unknown name lists the shipped ones."""
    models = demo_models()
    key = name[len(DEMO_SCHEME) :] if name.startswith(DEMO_SCHEME) else name
    if key not in models:
        shipped = ", ".join(DEMO_SCHEME + n for n in models) or "none in this install"
        raise CheckpointError(f"unknown demo model {name!r}; shipped: {shipped}")
    return models[key]


def ordinary_mode(path: str | Path) -> None:
    """Give a file the mode ``open()`` would (0666 less the umask): safetensors writes 0600, which
    hides checkpoints from the other users of a shared run directory."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


STEP_NAME = re.compile(r"step_\d{7,}")


class NonFiniteWeightsError(UserError):
    """Weights hold NaN/Inf: never written as a checkpoint, never loaded as one."""


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


# -- which run wrote a checkpoint ------------------------------------------------------------------
_RUN_IDS: dict[
    str, str
] = {}  # resolved run directory -> the id of the run this process writes there
_WARNED: set[str] = set()


def _run_key(run_dir: str | Path) -> str:
    return str(Path(run_dir).resolve())


def start_run(run_dir: str | Path) -> str:
    """A fresh run in ``run_dir``: a new id, recorded in every checkpoint this process saves
    there."""
    import uuid

    run_id = uuid.uuid4().hex[:16]
    _RUN_IDS[_run_key(run_dir)] = run_id
    return run_id


def continue_run(run_dir: str | Path, ckpt: str | Path) -> str:
    """Saves into ``run_dir`` continue the run that wrote ``ckpt`` (its id; ``""`` for a checkpoint
    of a version that recorded none)."""
    run_id = run_id_of(ckpt)
    _RUN_IDS[_run_key(run_dir)] = run_id
    return run_id


def run_id_of(ckpt: str | Path) -> str:
    """The id of the run that wrote ``ckpt`` (from its manifest); ``""`` when it has none or it is
    unreadable."""
    try:
        value = json.loads((Path(ckpt) / MANIFEST_FILE).read_text()).get("run", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def environment_reads(cfg: DictConfig) -> str | None:
    """The first config key whose value reads an environment variable (``${oc.env:...}``), or
    ``None``. elt never resolves such a value into a run's stored config (a secret would end up in
    every checkpoint)."""
    from omegaconf import OmegaConf

    def scan(data: Any, prefix: str) -> str | None:
        if isinstance(data, dict):
            items = data.items()
        elif isinstance(data, list):
            items = enumerate(data)
        else:
            return (
                prefix.rstrip(".")
                if isinstance(data, str) and "oc.env" in data and "${" in data
                else None
            )
        for key, value in items:
            found = scan(value, f"{prefix}{key}.")
            if found:
                return found
        return None

    return scan(OmegaConf.to_container(cfg, resolve=False), "")


def refuse_environment_reads(cfg: DictConfig) -> None:
    key = environment_reads(cfg)
    if key:
        raise UserError(
            f"config key {key!r} reads an environment variable (${{oc.env:...}}); elt does not "
            "resolve "
            "environment variables into a run's saved config: give the value itself (e.g. "
            f'{key}="$VARIABLE" expanded by the shell)'
        )


def _contiguous_state(module: torch.nn.Module | dict) -> dict[str, torch.Tensor]:
    state = module if isinstance(module, dict) else module.state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    cfg: DictConfig,
    model: torch.nn.Module | dict | Path,
    ema: torch.nn.Module | dict | Path | None = None,
    state: dict[str, Any] | None = None,
    keep: int = 3,
    extra_dirs: dict[str, Path] | None = None,
) -> Path:
    """Write ``RUN/checkpoints/step_<step>`` atomically and point ``latest`` at it. ``extra_dirs``
    (name → finished directory, e.g. DCP shards) are moved into the checkpoint before its manifest
    is written.

    ``model``/``ema`` are modules, already-gathered state dicts, or safetensors files already
    written (and checked finite) elsewhere on the same filesystem, which are moved in (FSDP streams
    them from the shards); ``keep`` > 0 keeps that many newest."""
    written = {
        name: source
        for name, source in ((MODEL_FILE, model), (EMA_FILE, ema))
        if isinstance(source, Path)
    }
    model_state = _contiguous_state(model) if MODEL_FILE not in written else {}
    ema_state = _contiguous_state(ema) if ema is not None and EMA_FILE not in written else None
    for label, weights in (("weights", model_state), ("EMA weights", ema_state or {})):
        bad = first_non_finite(weights)
        if bad is not None:
            raise NonFiniteWeightsError(
                f"the {label} hold NaN/Inf at step {step} ({bad}); no checkpoint was "
                "written (lower optimizer.lr or optimizer.grad_clip, or check the data; resume "
                "with --resume auto from the last finite checkpoint)"
            )
    refuse_environment_reads(cfg)
    root = Path(run_dir) / "checkpoints"
    check_not_in_package(root)
    final = root / f"step_{step:07d}"
    tmp = root / f"{TMP_PREFIX}{step:07d}_{os.getpid()}"
    run_id = _RUN_IDS.get(_run_key(run_dir)) or start_run(run_dir)
    if final.is_symlink() or final.exists():
        owner = run_id_of(final)
        if final.is_symlink() or owner != run_id:
            shown = (
                owner
                if re.fullmatch(r"[0-9a-f]{1,32}", owner)
                else "of an earlier version"
                if not owner
                else "with an unreadable id"
            )
            raise CheckpointError(
                f"{str(final)!r} belongs to another run (run {shown}); "
                "it is not replaced: continue that run with --resume auto, or choose a new "
                "train.out_dir"
            )
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(root)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        (tmp / CONFIG_FILE).write_text(config_lib.to_yaml(cfg))
        for name, source in written.items():
            os.replace(source, tmp / name)
        if MODEL_FILE not in written:
            save_file(model_state, str(tmp / MODEL_FILE), metadata={"step": str(step)})
        if ema_state is not None:
            save_file(ema_state, str(tmp / EMA_FILE), metadata={"step": str(step)})
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
        for name, folder in (extra_dirs or {}).items():
            os.replace(folder, tmp / name)
        for item in tmp.rglob("*"):
            if item.is_file():
                ordinary_mode(item)
        sizes = {
            str(item.relative_to(tmp)): item.stat().st_size
            for item in sorted(tmp.rglob("*"))
            if item.is_file()
        }
        (tmp / MANIFEST_FILE).write_text(
            json.dumps({"step": step, "run": run_id, "files": sizes}, indent=1)
        )
        _fsync_dir(tmp)
        old = None
        if (
            final.exists()
        ):  # a re-save of this run's step: swapped out once the new folder is in place
            old = root / f".old_{final.name}_{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        write_text(root / "latest", final.name)
        fsync_dir(root)
    except (
        Exception
    ) as exc:  # disk full, ...: nothing under a final name, the previous checkpoint stays newest
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OutputError):
            raise
        reason = write_failure(exc)
        if reason is None:
            raise
        kept = (
            "the previous checkpoint is kept (continue with --resume auto)"
            if read_latest(root) is not None
            else "no checkpoint was written"
        )
        raise OutputError(
            f"cannot write the checkpoint of step {step} to {str(final)!r}: {reason}; {kept}"
        ) from exc
    _prune(root, keep, final)
    return final


def _fsync_dir(path: Path) -> None:
    for item in path.iterdir():
        if item.is_dir():
            _fsync_dir(item)
            continue
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(path)


def _remove_stale_tmp(root: Path) -> None:
    """Temporary directories of writes that were killed (any process) are garbage."""
    for stale in [*root.glob(f"{TMP_PREFIX}*"), *root.glob(".old_step_*")]:
        shutil.rmtree(stale, ignore_errors=True)


def _prune(root: Path, keep: int, current: Path) -> None:
    """Keep ``current`` and the ``keep - 1`` newest before it. Higher-numbered checkpoints (left by
    a run that was resumed from an earlier one) are never deleted automatically."""
    if keep <= 0:
        return
    older = sorted(p for p in root.glob("step_*") if p.name < current.name and is_complete(p))
    for old in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def is_complete(path: Path) -> bool:
    """A finished checkpoint: config and weights present and, when it has a manifest (every
    checkpoint written by this version), every listed file present with the recorded size."""
    return damage_of(path) is None


CHECKPOINT_FILES = (CONFIG_FILE, MODEL_FILE, EMA_FILE, STATE_FILE, MANIFEST_FILE)


def damage_of(path: Path) -> str | None:
    """What is wrong with a checkpoint folder (one phrase), or ``None`` when it is complete: a file
    missing, a size that differs from its manifest, an unreadable manifest, a symbolic link among
    its files."""
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


def load_config_of(path: str | Path) -> DictConfig:
    return config_lib.from_yaml_file(resolve_checkpoint(path) / CONFIG_FILE)


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
    (:data:`elt.config.SAMPLING_KEYS`). Damaged, mis-sized or non-finite weights are a one-line
    error."""
    from elt import registry  # the registry imports paradigms lazily

    ckpt = resolve_checkpoint(path)
    cfg = config_lib.from_yaml_file(ckpt / CONFIG_FILE, sampling_overrides=overrides)
    generator = registry.build_generator(cfg)
    weights = ckpt / EMA_FILE if ema and (ckpt / EMA_FILE).is_file() else ckpt / MODEL_FILE
    state = load_weights(weights)
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(
            f"{str(weights)!r} holds NaN/Inf weights ({bad}); sampling from it would give blank "
            "images: use an earlier checkpoint of the run"
        )
    load_state_into(generator, state, weights, ckpt / CONFIG_FILE)
    if not isinstance(device, torch.device):
        from elt.runtime import resolve_device

        device = resolve_device(
            str(device)
        )  # an unknown or missing device is one line, not a traceback
    return generator.to(device).eval()


def is_export(path: Path) -> bool:
    """A folder written by :func:`export_inference` (config + weights, no training state)."""
    if not ((path / CONFIG_FILE).is_file() and (path / MODEL_FILE).is_file()):
        return False
    if (path / STATE_FILE).exists() or (path / MANIFEST_FILE).exists():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path / MODEL_FILE), "pt") as handle:
            return "exported_from" in (handle.metadata() or {})
    except Exception:
        return False


def check_export_target(ckpt: Path, out: Path) -> None:
    """Export never writes into its source, into another checkpoint or run, or over a non-empty
    folder (a previous export may be replaced)."""
    source, target = ckpt.resolve(), out.resolve()
    run = source.parent.parent if source.parent.name == "checkpoints" else source
    if (
        target == source
        or source.is_relative_to(target)
        or target.is_relative_to(source)
        or target.is_relative_to(run / "checkpoints")
    ):
        raise CheckpointError(
            f"--out {str(out)!r} is the checkpoint being exported (or inside/around it); "
            "export writes a new folder: choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"--out {str(out)!r} is an existing file, not a directory; choose another path"
        )
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        kind = (
            "a checkpoint"
            if is_complete(out) or (out / "checkpoints").is_dir() or (out / STATE_FILE).exists()
            else "a folder that is not empty"
        )
        raise CheckpointError(
            f"--out {str(out)!r} is {kind}; export only writes a new folder or replaces an "
            "earlier export: choose another --out"
        )


def export_inference(
    path: str | Path,
    out_dir: str | Path,
    half: bool = True,
    sampling_overrides: list[str] | tuple[str, ...] = (),
) -> Path:
    """Write an inference-only checkpoint: ``config.yaml`` and the EMA weights (fp16 when ``half``)
    as ``model.safetensors`` — what ``elt.load`` needs, at a fraction of a training checkpoint's
    size. ``sampling_overrides`` (``"sampling.guidance=2"``, ...; :data:`elt.config.SAMPLING_KEYS`
    only) become the export's default sampling settings.

    The folder is built under a temporary name and renamed; ``out_dir`` must not be the source
    checkpoint, another checkpoint or a non-empty folder (an earlier export is replaced)."""
    from elt.fileio import check_output_dir

    ckpt = resolve_checkpoint(path)
    out = Path(out_dir)
    check_export_target(ckpt, out)
    check_output_dir(out, "--out")
    cfg = config_lib.from_yaml_file(
        ckpt / CONFIG_FILE, sampling_overrides
    )  # valid, plain (no interpolations)
    weights = ckpt / EMA_FILE if (ckpt / EMA_FILE).is_file() else ckpt / MODEL_FILE
    state = load_weights(weights)
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(
            f"{str(weights)!r} holds NaN/Inf weights ({bad}); export an earlier checkpoint"
        )
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    config_text = (
        config_lib.to_yaml(cfg) if sampling_overrides else (ckpt / CONFIG_FILE).read_text()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, replace=True) as tmp:
        (tmp / CONFIG_FILE).write_text(config_text)
        save_file(
            state,
            str(tmp / MODEL_FILE),
            metadata={"exported_from": str(ckpt), "weights": weights.name},
        )
        ordinary_mode(tmp / MODEL_FILE)
    return out


def load_training_state(ckpt: str | Path) -> dict[str, Any] | None:
    """``state.pt`` loaded with ``weights_only=True``; a damaged or foreign file is a one-line error
    (never the advice to load it unsafely)."""
    state = Path(ckpt) / STATE_FILE
    if not state.is_file():
        return None
    if state.is_symlink():
        raise CheckpointError(
            f"{str(state)!r} is a symbolic link; elt does not follow links inside a checkpoint"
        )
    try:
        loaded = torch.load(state, map_location="cpu", weights_only=True)
    except Exception as exc:
        kind = "empty" if state.stat().st_size == 0 else "damaged or not an elt training state"
        raise CheckpointError(
            f"{str(state)!r} is {kind} ({type(exc).__name__}); resume from another checkpoint"
        ) from None
    if (
        Path(ckpt).parent.name == "checkpoints"
    ):  # saves into that run continue the run that wrote it
        continue_run(Path(ckpt).parent.parent, ckpt)
    return loaded


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
    load_training_state(ckpt)
