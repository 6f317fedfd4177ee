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
    (damaged, another format, other tensors) as one line naming it and ``option``."""
    try:
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
                f"{model.name} makes {size}×{size}×{channels} images; use --metrics inception "
                "--reference REF (or fvd for video)"
            )
