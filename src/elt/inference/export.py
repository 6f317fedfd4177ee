"""Inference-only checkpoints (``elt export``): the config and the EMA weights (fp16 by default),
what ``elt.load`` needs, at a fraction of a training checkpoint's size."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from elt import config as config_lib
from elt.errors import CheckpointError, UserError
from elt.fileio import OutputError, atomic_dir
from elt.inference import hub
from elt.inference.checkpoints import (
    config_file,
    first_non_finite,
    is_complete,
    load_weights,
    resolve_checkpoint,
)
from elt.inference.files import (
    CONFIG_FILE,
    EMA_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    STATE_FILE,
    ordinary_mode,
)

EXPORT_FORMATS = ("elt", "hub")


def is_export(path: Path) -> bool:
    """A folder written by :func:`export_inference` (config + weights, no training state)."""
    if hub.is_hub_folder(path):
        return True
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
    format: str = "elt",
    *,
    eval_path: str | Path | None = None,
    license: str | None = None,
    name: str | None = None,
) -> Path:
    """Write an inference-only checkpoint: ``config.yaml`` and the EMA weights (fp16 when ``half``)
    as ``model.safetensors`` — what ``elt.load`` needs, at a fraction of a training checkpoint's
    size. ``sampling_overrides`` (``"sampling.guidance=2"``, ...; :func:`elt.config.sampling_keys`
    only) become the export's default sampling settings.

    ``format="hub"`` writes a Hub folder instead (:mod:`elt.inference.hub`: ``config.json``,
    ``model.safetensors``, ``references.json`` and a ``README.md`` model card with ``license``, the
    GFLOPs per loop count and the rows of ``eval_path`` — default: an ``eval.json`` next to the
    checkpoint or in its run — under the title ``name``, e.g. the repository id).

    The folder is built under a temporary name and renamed; ``out_dir`` must not be the source
    checkpoint, another checkpoint or a non-empty folder (an earlier export is replaced)."""
    from elt.fileio import check_output_dir

    if format not in EXPORT_FORMATS:
        raise UserError(
            f"export format {format!r} is not known; allowed: {', '.join(EXPORT_FORMATS)}"
        )
    ckpt = resolve_checkpoint(path)
    out = Path(out_dir)
    check_export_target(ckpt, out)
    check_output_dir(out, "--out")
    cfg = config_lib.from_yaml_file(
        config_file(ckpt), sampling_overrides
    )  # valid, plain (no interpolations)
    evaluation = (
        hub.eval_rows(eval_path if eval_path is not None else hub.find_eval(ckpt), source=str(path))
        if format == "hub"
        else []
    )
    weights = ckpt / EMA_FILE if (ckpt / EMA_FILE).is_file() else ckpt / MODEL_FILE
    state = load_weights(weights)
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(
            f"{str(weights)!r} holds NaN/Inf weights ({bad}); export an earlier checkpoint"
        )
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    metadata = {"exported_from": str(ckpt), "weights": weights.name}
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "hub":
        return hub.write_folder(
            out,
            cfg,
            state,
            metadata=metadata,
            name=name,
            evaluation=evaluation,
            license=license or hub.DEFAULT_LICENSE,
        )
    config_text = (
        config_lib.to_yaml(cfg)
        if sampling_overrides or config_file(ckpt).name != CONFIG_FILE
        else (ckpt / CONFIG_FILE).read_text()
    )
    with atomic_dir(out, replace=True) as tmp:
        (tmp / CONFIG_FILE).write_text(config_text)
        save_file(state, str(tmp / MODEL_FILE), metadata=metadata)
        ordinary_mode(tmp / MODEL_FILE)
    return out
