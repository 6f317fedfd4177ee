"""Input checks shared by the evaluation entry points (sweep, floor, classifier training, video
metrics, calibration): each runs before any slow work and names the bad value in one line
(:class:`~elt.errors.UserError`). Messages name the ``elt eval`` option that carries the value, so
the command line and the Python API (:mod:`elt.eval.run`) say the same thing."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from elt.errors import UserError
from elt.eval import classifier, suites
from elt.inference.checkpoints import resolve_checkpoint


@contextmanager
def user_errors() -> Iterator[None]:
    """A missing file met while evaluating (a samples file, a reference, weights) as one-line
    :class:`UserError`; the evaluation's own errors already are."""
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc


def load_classifier(path=None, device="cpu", option: str = "--classifier"):
    """:func:`elt.eval.classifier.load_classifier`, with a file that is not the classifier's weights
    (damaged, another format, other tensors) as one line naming it and ``option``. A folder
    written by ``elt eval train-classifier --data DIR`` loads that folder's classifier
    (:func:`elt.eval.folder_classifier.load_folder_classifier`)."""
    from elt.eval import folder_classifier

    try:
        if path is not None and (Path(path) / folder_classifier.RECORD_FILE).is_file():
            return folder_classifier.load_folder_classifier(path, device=device)
        return classifier.load_classifier(path, device=device)
    except classifier.ClassifierMissingError:
        raise
    except UserError as exc:  # a damaged or foreign file, named by the loader: say which option
        raise UserError(f"{option}: {exc}") from None
    except Exception as exc:  # safetensors' header errors, missing/unexpected tensors, unreadable
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(
            f"{option} {str(path)[:200]!r} is not the domain classifier's weights (a .safetensors "
            f"file written by 'elt eval train-classifier'): {reason}"
        ) from None


def knn_k(metrics: str) -> int:
    """The k of the suite's k-NN metrics (PRDC for domain, precision/recall for inception; 0:
    none)."""
    suite = {"domain": suites.DomainSuite, "inception": suites.InceptionSuite}.get(metrics)
    return int(inspect.signature(suite.__init__).parameters["k"].default) if suite else 0


def check_num(num: int, metrics: str = "domain", what: str = "--num") -> None:
    """Enough samples for the suite's statistics: more than k for the k-NN radii, at least 2 for a
    covariance."""
    need = max(knn_k(metrics) + 1, 2)
    if num < need:
        raise UserError(
            f"{what} {num} is too few samples for the {metrics} metrics (k-NN radii with k="
            f"{knn_k(metrics)} need more than k points); allowed: {what} {need} or more"
        )


def check_models(
    ckpts: Sequence[str], samples: Sequence[str | Path], names: Sequence[str], loops
) -> None:
    """Checkpoints, sample folders and legend names that pair up; every checkpoint found (a
    CheckpointError, one line) before any slow setup."""
    if not ckpts and not samples:
        raise UserError("give --ckpt DIR (repeatable) and/or --samples DIR written by 'elt sample'")
    if ckpts and samples and len(ckpts) != len(samples):
        raise UserError(
            f"--samples pairs with --ckpt by position: got {len(ckpts)} --ckpt and {len(samples)} "
            "--samples"
        )
    if names and len(names) != max(len(ckpts), len(samples)):
        raise UserError(
            f"--name given {len(names)} times for {max(len(ckpts), len(samples))} models"
        )
    if not ckpts and not loops:
        raise UserError("--loops is required when only --samples folders are given")
    for ckpt in ckpts:
        resolve_checkpoint(ckpt)


def check_domain_inputs(models) -> None:
    """Fail before sampling when a checkpoint does not make the 32×32 grey images the classifier
    takes."""
    for model in models:
        cfg = getattr(model.generator, "config", None)
        if cfg is None:
            continue
        size = OmegaConf.select(cfg, "data.image_size", default=None)
        channels = OmegaConf.select(cfg, "data.channels", default=None)
        if (size is not None and size not in (28, 32)) or (channels is not None and channels != 1):
            raise UserError(
                f"--metrics domain uses the Fashion-MNIST classifier (grey 28 or 32 px), but "
                f"{model.name} makes {size}×{size}×{channels} images; use --classifier CLS_DIR "
                "(train one on your folder: elt eval train-classifier --data DIR), or --metrics "
                "inception --reference REF (or fvd for video)"
            )


def folder_classifier_record(path) -> dict | None:
    """The record of a classifier written by ``elt eval train-classifier --data DIR`` when ``path``
    is its folder (read from its JSON, no weights loaded), else ``None``."""
    from elt.eval.folder_classifier import RECORD_FILE, read_record

    if path is None or not (Path(path) / RECORD_FILE).is_file():
        return None
    return read_record(path)


def check_fits_classifier(cfg, record: dict, model: str, option: str = "--classifier") -> None:
    """One line, before any sampling, when a model's images (size, channels, classes, and class
    names when both record them) are not what the folder classifier ``record`` takes."""

    def get(key):
        return OmegaConf.select(cfg, f"data.{key}", default=None)

    size, channels, classes = get("image_size"), get("channels"), get("num_classes")
    names, frames = get("class_names"), get("frames") or 0
    want = (record["image_size"], record["channels"], record["num_classes"])
    theirs = (size, channels, classes)
    mismatch = frames > 0 or any(
        a is not None and a != b for a, b in zip(theirs, want, strict=True)
    )
    if not mismatch and names and record.get("class_names"):
        mismatch = list(names) != list(record["class_names"])
    if not mismatch:
        return
    shown = ", ".join(record.get("class_names") or [])
    made = f"{size}×{size}×{channels} images in {classes} classes" + (
        f" ({', '.join(names)})" if names else ""
    )
    if frames:
        made = f"videos of {frames} frames"
    raise UserError(
        f"{option} {record.get('_dir', '')} takes {want[0]}×{want[0]}×{want[1]} images in "
        f"{want[2]} classes ({shown}), but {model} makes {made}; train one on the model's data "
        f"with 'elt eval train-classifier --data DIR --image-size {size} --out CLS_DIR'"
    )


def check_ckpts_fit_classifier(ckpts, classifier, option: str = "--classifier") -> dict | None:
    """:func:`check_fits_classifier` for every checkpoint's saved config (config.yaml only, no
    weights); returns the folder classifier's record (``None``: not a folder classifier)."""
    from elt.inference.checkpoints import load_config_of

    record = folder_classifier_record(classifier)
    if record is None:
        return None
    record = {**record, "_dir": str(classifier)}
    for ckpt in ckpts:
        check_fits_classifier(load_config_of(ckpt), record, str(ckpt), option)
    return record
