"""Writing checkpoints: one directory per save, written atomically (the layout:
:mod:`elt.inference.files`; reading them back: :mod:`elt.inference.checkpoints`).

A checkpoint is written to a temporary sibling directory (``.tmp_step_*``), flushed to disk and
renamed into place, so a write killed at any point (even ``kill -9``) never leaves a half-written
checkpoint under a valid name: the previous one stays the newest valid checkpoint. A write that
fails (disk full, file-size limit) removes its temporary directory and is one line. Stale temporary
directories are removed by the next save.

Every manifest records the run that wrote it (a random id, kept across resumes): a save never
replaces a step folder of another run (a fresh start in a finished run's folder), and symbolic links
inside a run (step folders, checkpoint files) are never followed."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from elt import config as config_lib
from elt.errors import CheckpointError, UserError
from elt.fileio import (
    OutputError,
    check_not_in_package,
    fsync_dir,
    write_failure,
    write_text,
)
from elt.inference.checkpoints import (
    first_non_finite,
    is_complete,
    read_latest,
    read_training_state,
)
from elt.inference.files import (
    CONFIG_FILE,
    EMA_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    STATE_FILE,
    ordinary_mode,
)

TMP_PREFIX = ".tmp_step_"


class NonFiniteWeightsError(UserError):
    """Weights hold NaN/Inf: never written as a checkpoint, never loaded as one."""


# -- which run wrote a checkpoint ------------------------------------------------------------------
_RUN_IDS: dict[
    str, str
] = {}  # resolved run directory -> the id of the run this process writes there


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


def load_training_state(ckpt: str | Path) -> dict[str, Any] | None:
    """``state.pt`` (:func:`~elt.inference.checkpoints.read_training_state`: a damaged or foreign
    file is a one-line error); saves into the run that wrote ``ckpt`` then continue that run."""
    loaded = read_training_state(ckpt)
    if loaded is not None and Path(ckpt).parent.name == "checkpoints":
        continue_run(Path(ckpt).parent.parent, ckpt)
    return loaded
