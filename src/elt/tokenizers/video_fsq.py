"""A small trainable video tokenizer: (2+1)D conv encoder → FSQ → (2+1)D conv decoder.

Clips ``B×C×T×H×W`` in [-1, 1] become token grids ``B×t×h×w`` with ``t = T / temporal_downsample``
and ``h = w = H / downsample`` (16×64×64 → 4×8×8 by default), compressing time as well as space so a
masked generator sees 256 tokens per clip rather than 1024.

Design, chosen for a CPU budget of minutes:

* Resolution changes are non-overlapping patchify convolutions (kernel = stride) going down and
  their transposes going up: a re-arrangement plus a linear map. Nothing else runs at full
  resolution (the first layer patchifies the pixels, the last one un-patchifies to pixels, as
  ViT-VQGAN's linear patch head does), because any convolution at 16×64×64 would cost more than the
  whole rest of the network.
* Time is halved in the first ``log2(temporal_downsample)`` stages, so every later layer works on
  fewer frames; space is halved in every stage.
* Residual blocks are factorised (2+1)D: a 1×3×3 spatial convolution then a 3×1×1 temporal one,
  12·c² MACs per position instead of 54·c² for two full 3×3×3 convolutions. Blocks run only below
  full resolution, and most of the width sits at the token grid (widths halve per stage upwards, as
  in :class:`~elt.tokenizers.fsq.FSQTokenizer`).
* Temporal convolutions are centred (not causal): clips are encoded whole, never streamed.
* Quantisation is the same :class:`~elt.tokenizers.fsq.FSQ` as the image tokenizer (no codebook
  losses).

The interface matches :class:`~elt.tokenizers.fsq.FSQTokenizer` (``kind``, ``codebook_size``,
``token_grid``, ``encode``, ``decode``, ``reconstruct``, ``decode_gflops``, ``architecture``), so
``fsq.save_tokenizer`` / ``fsq.load_tokenizer`` and the tokenizer training loop work unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from elt.tokenizers.fsq import FSQ, FSQCodec, stage_widths


class ResBlock3d(nn.Module):
    """x + temporal(SiLU(spatial(SiLU(x)))): a (2+1)D residual block without normalisation.

    The second convolution starts at zero so each block begins as the identity (stable from step 0).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.spatial = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.temporal.weight)
        nn.init.zeros_(self.temporal.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.temporal(F.silu(self.spatial(F.silu(x))))


def stage_strides(spatial_stages: int, temporal_stages: int) -> list[tuple[int, int, int]]:
    """(time, height, width) stride of each down stage, full resolution first: time halves early."""
    return [(2 if i < temporal_stages else 1, 2, 2) for i in range(spatial_stages)]


class VideoEncoder(nn.Module):
    """Patchify down-stages (pixels → first stage directly), a residual block after each, more at
    the grid."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        spatial_stages: int,
        temporal_stages: int,
        latent_dim: int,
        token_blocks: int = 3,
    ):
        super().__init__()
        widths = [in_channels, *stage_widths(channels, spatial_stages)[1:]]
        strides = stage_strides(spatial_stages, temporal_stages)
        layers: list[nn.Module] = []
        for i, stride in enumerate(strides):
            layers += [
                nn.Conv3d(widths[i], widths[i + 1], stride, stride=stride),
                ResBlock3d(widths[i + 1]),
            ]
        layers += [ResBlock3d(widths[-1]) for _ in range(token_blocks - 1)]
        # normalised features keep the latent in FSQ's unsaturated range: without it the
        # unnormalised residual stream grows in the first steps, tanh saturates and the encoder
        # stops learning
        layers += [
            nn.GroupNorm(_groups(widths[-1]), widths[-1]),
            nn.SiLU(),
            nn.Conv3d(widths[-1], latent_dim, 1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VideoDecoder(nn.Module):
    """The mirror image: transposed patchify up-stages, the last one straight to pixels."""

    def __init__(
        self,
        out_channels: int,
        channels: int,
        spatial_stages: int,
        temporal_stages: int,
        latent_dim: int,
        token_blocks: int = 3,
    ):
        super().__init__()
        widths = [out_channels, *stage_widths(channels, spatial_stages)[1:]]
        strides = stage_strides(spatial_stages, temporal_stages)
        layers: list[nn.Module] = [nn.Conv3d(latent_dim, widths[-1], 3, padding=1)]
        layers += [ResBlock3d(widths[-1]) for _ in range(token_blocks)]
        for i in reversed(range(spatial_stages)):
            if i == 0:
                layers.append(nn.SiLU())
            layers.append(
                nn.ConvTranspose3d(widths[i + 1], widths[i], strides[i], stride=strides[i])
            )
            if i > 0:
                layers.append(ResBlock3d(widths[i]))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _log2_exact(value: int, key: str) -> int:
    stages = int(round(math.log2(value))) if value >= 1 else -1
    if value < 1 or 2**stages != value:
        raise ValueError(f"{key} must be a power of two, got {value}")
    return stages


class VideoFSQTokenizer(FSQCodec):
    """Clips (B×C×T×S×S in [-1, 1]) ↔ token grids (B×t×h×w, ints < codebook_size).

    Args:
        frames: clip length T (divisible by ``temporal_downsample``).
        image_size: frame side S (divisible by ``downsample``).
        image_channels: C (1 grey, 3 RGB).
        levels: FSQ levels per latent channel (``[8, 5, 5, 5]`` → 1000 codes).
        downsample: spatial reduction, a power of two.
        temporal_downsample: temporal reduction, a power of two no larger than ``downsample`` (time
            is reduced in the first stages of the spatial pyramid).
        channels: width at the token grid (halved per stage towards full resolution, at least 16).
    """

    kind = "fsq3d"

    def __init__(
        self,
        frames: int = 16,
        image_size: int = 64,
        image_channels: int = 1,
        levels: Sequence[int] = (8, 5, 5, 5),
        downsample: int = 8,
        temporal_downsample: int = 4,
        channels: int = 64,
    ):
        super().__init__()
        spatial_stages = _log2_exact(downsample, "tokenizer.downsample")
        temporal_stages = _log2_exact(temporal_downsample, "tokenizer.temporal_downsample")
        if temporal_stages > spatial_stages:
            raise ValueError(
                f"tokenizer.temporal_downsample={temporal_downsample} may not exceed "
                f"tokenizer.downsample={downsample}"
            )
        if image_size % downsample:
            raise ValueError(
                f"data.image_size={image_size} is not divisible by "
                f"tokenizer.downsample={downsample}"
            )
        if frames % temporal_downsample:
            raise ValueError(
                f"data.frames={frames} is not divisible by "
                f"tokenizer.temporal_downsample={temporal_downsample}"
            )
        self.frames = frames
        self.image_size = image_size
        self.image_channels = image_channels
        self.downsample = downsample
        self.temporal_downsample = temporal_downsample
        self.channels = channels
        self.quantizer = FSQ(levels)
        self.encoder = VideoEncoder(
            image_channels, channels, spatial_stages, temporal_stages, self.quantizer.dim
        )
        self.decoder = VideoDecoder(
            image_channels, channels, spatial_stages, temporal_stages, self.quantizer.dim
        )

    @property
    def token_grid(self) -> tuple[int, int, int]:
        side = self.image_size // self.downsample
        return self.frames // self.temporal_downsample, side, side

    def check_input(self, videos: torch.Tensor) -> None:
        want = (self.image_channels, self.frames, self.image_size, self.image_size)
        if videos.ndim != 5 or tuple(videos.shape[1:]) != want:
            raise ValueError(
                f"tokenizer expects videos B×{'×'.join(map(str, want))} (B×C×T×H×W), "
                f"got {tuple(videos.shape)}"
            )

    def architecture(self) -> dict:
        """What must match for saved weights to load (written next to the weights)."""
        return {
            "kind": self.kind,
            "frames": self.frames,
            "image_size": self.image_size,
            "image_channels": self.image_channels,
            "levels": list(self.quantizer.levels_list),
            "downsample": self.downsample,
            "temporal_downsample": self.temporal_downsample,
            "channels": self.channels,
        }
