"""I3D logits for FVD (Fréchet Video Distance), from a TorchScript file the user supplies.

The preferred file is StyleGAN-V's ``i3d_torchscript.pt`` (Kinetics-400 I3D, bit-compatible with the
TF-hub model of the original FVD code). Its contract, which we follow:

    module(videos, rescale=True, resize=True, return_features=True) -> N×400
    videos: float N×3×T×H×W with values in [0, 255]; ``rescale`` maps them to [-1, 1], ``resize`` to
        224².

A TorchScript module whose ``forward`` takes only the videos is called with float N×3×T×H×W in [-1,
1] (I3D's native range) at the size given. FVD is the Fréchet distance between Gaussians fitted to
these 400-d outputs (logits before the softmax). The weights path comes from ``--i3d`` or
``$ELT_I3D_WEIGHTS``; nothing is downloaded. The file's full SHA-256 must be :data:`I3D_SHA256`
(StyleGAN-V's file, 51,235,320 bytes) before it is loaded; another TorchScript file is accepted only
when ``$ELT_I3D_SHA256`` names its SHA-256 (a deliberate choice, recorded in the results'
provenance).

Protocol we recommend stating with any FVD: real clips from the UCF-101 train split, 16 frames at
stride 1, 128×128 (resized to 224 inside I3D), 2048 generated vs 2048 real clips (StyleGAN-V's
protocol)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from elt.eval.classifier import Features
from elt.eval.inception import WeightsNotFoundError, check_sha256
from elt.runtime import resolve_device

I3D_ENV = "ELT_I3D_WEIGHTS"
I3D_FILE = "i3d_torchscript.pt"
I3D_SOURCE = "StyleGAN-V's i3d_torchscript.pt (see its FVD metric code)"
I3D_SHA256 = "bec6519f66ea534e953026b4ae2c65553c17bf105611c746d904657e5860a5e2"
I3D_SHA256_ENV = "ELT_I3D_SHA256"


def resolve_i3d_weights(path: str | Path | None = None) -> Path:
    candidate = path or os.environ.get(I3D_ENV)
    if not candidate:
        raise WeightsNotFoundError(
            f"FVD needs I3D weights as TorchScript ({I3D_FILE}): pass --i3d PATH or set "
            f"{I3D_ENV}=PATH; get {I3D_SOURCE}"
        )
    if not Path(candidate).is_file():
        raise WeightsNotFoundError(
            f"I3D weights {candidate} not found; pass --i3d PATH or set {I3D_ENV}=PATH "
            f"to {I3D_SOURCE}"
        )
    return Path(candidate)


def to_float_ncthw(videos: np.ndarray) -> torch.Tensor:
    """uint8 N×T×H×W×C (C = 1 or 3) → float N×3×T×H×W in [0, 255] (grey repeated to RGB)."""
    x = torch.as_tensor(np.asarray(videos))
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 videos, got {x.dtype}")
    if x.ndim != 5 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected videos N×T×H×W×C with C = 1 or 3, got shape {tuple(x.shape)}")
    x = x.permute(0, 4, 1, 2, 3).float()
    return x.expand(-1, 3, -1, -1, -1) if x.shape[1] == 1 else x


class I3DFeatures:
    """400-d I3D logits of uint8 videos, from a TorchScript module."""

    name = "i3d-torchscript"

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        sha256: str | None = None,
    ):
        """``sha256``: the expected full SHA-256 (default ``$ELT_I3D_SHA256``, else
        :data:`I3D_SHA256`)."""
        path = resolve_i3d_weights(weights)
        self.weights_path = path
        self.digest = check_sha256(path, sha256 or os.environ.get(I3D_SHA256_ENV) or I3D_SHA256)
        self.device = resolve_device(str(device))
        with (
            warnings.catch_warnings()
        ):  # torch >= 2.14 deprecates TorchScript; the reference I3D file is one
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(path), map_location=self.device).eval()
        names = [a.name for a in self.model.forward.schema.arguments]
        self.stylegan_v_contract = {"rescale", "resize", "return_features"} <= set(names)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, videos: np.ndarray, progress: bool = False) -> Features:
        outputs = []
        for start in tqdm(
            range(0, len(videos), self.batch_size), desc="i3d", disable=not progress, leave=False
        ):
            x = to_float_ncthw(videos[start : start + self.batch_size]).to(self.device)
            if self.stylegan_v_contract:
                y = self.model(x, rescale=True, resize=True, return_features=True)
            else:
                y = self.model(x / 127.5 - 1.0)
            if y.ndim != 2 or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"{self.weights_path} returned shape {tuple(y.shape)}, expected N×400 logits"
                )
            outputs.append(y.float().cpu())
        return Features(torch.cat(outputs).numpy())

    def provenance(self) -> dict:
        return {
            "extractor": self.name,
            "sha256": self.digest,
            "weights": str(self.weights_path),
            "contract": "stylegan-v" if self.stylegan_v_contract else "plain [-1, 1]",
        }
