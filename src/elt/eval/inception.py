"""Inception-V3 features for the standard image metrics (FID, IS, precision/recall), through
torch-fidelity.

torch-fidelity's ``FeatureExtractorInceptionV3`` is the TF-2015 Inception graph ported to PyTorch
with the TF1 bilinear resize to 299×299, so its pool3 features and logits match the TensorFlow
evaluators (ADM's ``evaluator.py``) closely. We never let it download: the weights come from

  1. an explicit path (``--inception-weights`` / ``weights=``),
  2. else ``$ELT_INCEPTION_WEIGHTS``,
  3. else the torch.hub cache file
     ``<torch.hub.get_dir()>/checkpoints/weights-inception-2015-12-05-6726825d.pth`` (where
     torch-fidelity itself would have put it),

and their full SHA-256 must be :data:`INCEPTION_SHA256` (its first 8 digits are the ``6726825d``
torch.hub encodes in the file name) before torch-fidelity unpickles them. A missing file is one
error naming it and where to get it.

torch-fidelity imports torchvision at package import, so it needs a torchvision build matching the
installed torch (``pip install 'elt-looped[metrics]'`` with a matching pair, e.g. torch 2.14.1 +
torchvision 0.29.1)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from elt.errors import UserError
from elt.eval.classifier import Features, file_sha256
from elt.runtime import resolve_device

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
)
INCEPTION_SHA256 = (
    "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"  # 95,628,359 bytes
)
INCEPTION_ENV = "ELT_INCEPTION_WEIGHTS"


class WeightsNotFoundError(UserError, FileNotFoundError):
    """Pretrained feature-extractor weights are not on this machine (we never download them)."""


class WeightsHashError(UserError, ValueError):
    """A weights file is not the expected one (SHA-256 mismatch)."""


class MissingDependencyError(UserError, ImportError):
    """An optional package needed by a metric is not importable."""


def hub_cache_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def resolve_inception_weights(path: str | Path | None = None) -> Path:
    """Explicit path, else ``$ELT_INCEPTION_WEIGHTS``, else the torch.hub cache file; never
    downloads."""
    how_to = (
        f"download {INCEPTION_URL} and pass --inception-weights PATH, set {INCEPTION_ENV}=PATH, or "
        "put it "
        f"at {hub_cache_path()}"
    )
    for source, candidate in (
        ("--inception-weights", path),
        (INCEPTION_ENV, os.environ.get(INCEPTION_ENV)),
    ):
        if candidate:
            if not Path(candidate).is_file():
                raise WeightsNotFoundError(
                    f"Inception weights {INCEPTION_FILE} not found at {candidate} "
                    f"(from {source}); {how_to}"
                )
            return Path(candidate)
    if hub_cache_path().is_file():
        return hub_cache_path()
    raise WeightsNotFoundError(
        f"Inception weights {INCEPTION_FILE} not found (no --inception-weights, no "
        f"{INCEPTION_ENV}, nothing at {hub_cache_path()}); {how_to}"
    )


def check_sha256(path: str | Path, expected: str) -> str:
    """The file's SHA-256, after checking that it equals ``expected`` (all 64 hex digits)."""
    if len(expected) != 64:
        raise ValueError(f"expected a full SHA-256 (64 hex digits), got {expected!r}")
    digest = file_sha256(path)
    if digest != expected.lower():
        raise WeightsHashError(
            f"{path} has SHA-256 {digest[:16]}…, expected {expected[:16]}…: not the expected "
            "weights file (corrupt, truncated or a different conversion); it is not loaded"
        )
    return digest


def fidelity_inception_class():
    """torch-fidelity's Inception class, or one clear error saying what to install."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as exc:
        raise MissingDependencyError(
            "Inception metrics need torch-fidelity and a torchvision that matches torch "
            f"{torch.__version__} "
            "(pip install 'elt-looped[metrics]' torchvision==<matching version>); import failed: "
            f"{exc}"
        ) from exc
    return FeatureExtractorInceptionV3


def to_uint8_nchw_rgb(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×C (C = 1 or 3) or N×H×W → uint8 N×3×H×W (grey repeated to RGB)."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected images N×H×W×C with C = 1 or 3, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x.contiguous()


class InceptionFeatures:
    """pool3 (2048-d) features and the bias-free 1008-way logits (for IS) of uint8 images of any
    size."""

    name = "inception-v3-tf-2015 (torch-fidelity)"

    def __init__(
        self,
        weights: str | Path | None = None,
        sha256: str | None = INCEPTION_SHA256,
        device: str | torch.device = "cpu",
        batch_size: int = 100,
    ):
        """``sha256=None`` skips the hash check (only for tests with random weights of the same
        layout)."""
        path = resolve_inception_weights(weights)
        self.digest = check_sha256(path, sha256) if sha256 else file_sha256(path)
        cls = fidelity_inception_class()
        self.weights_path = path
        # The hash is verified above, so torch-fidelity's own (full-pickle) torch.load reads a known
        # file.
        self.device = resolve_device(str(device))
        self.model = (
            cls(
                "inception-v3-compat",
                ["2048", "logits_unbiased"],
                feature_extractor_weights_path=str(path),
            )
            .to(self.device)
            .eval()
        )
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: np.ndarray, progress: bool = False) -> Features:
        feats, logits = [], []
        for start in tqdm(
            range(0, len(images), self.batch_size),
            desc="inception",
            disable=not progress,
            leave=False,
        ):
            x = to_uint8_nchw_rgb(images[start : start + self.batch_size]).to(self.device)
            pool, unbiased = self.model(x)
            feats.append(pool.cpu())
            logits.append(unbiased.cpu())
        return Features(
            torch.cat(feats).numpy().astype(np.float32),
            torch.cat(logits).numpy().astype(np.float32),
        )

    def provenance(self) -> dict:
        return {
            "extractor": self.name,
            "sha256": self.digest,
            "weights": str(self.weights_path),
            "feature_dim": 2048,
            "resize": "TF1 bilinear to 299 (ADM-compatible)",
        }
