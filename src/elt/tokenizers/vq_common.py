"""What the pretrained VQ tokenizers share (the diffusers ``VQModel`` adapter and MaskGIT's VQGAN):
the nearest-codebook lookup, the token grid of an image size, the checks of images and token ids,
and the cached decoder GFLOPs."""

from __future__ import annotations

import torch
from torch import nn


def nearest_codes(features: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """B×D×h×w features → B×h×w indices of the nearest codebook rows (distances in fp32, also under
    autocast)."""
    b, d, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        flat = features.permute(0, 2, 3, 1).reshape(-1, d).float()
        codes = codebook.float()
        distances = (
            flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)[None]
        )
        return distances.argmin(dim=1).view(b, h, w)


class VQTokenizerBase(nn.Module):
    """Images B×C×S×S ↔ token grids B×(S/downsample)×(S/downsample); subclasses provide
    ``codebook_size``, ``encode``, ``decode`` and ``_count_decode_gflops``. ``name`` is how errors
    call the model (``"VQ model"``, ``"MaskGIT VQ model"``)."""

    def __init__(self, image_size: int, image_channels: int, downsample: int, name: str):
        super().__init__()
        self.image_size = int(image_size)
        self.image_channels = int(image_channels)
        self.downsample = int(downsample)
        self.name = name
        if self.image_size % self.downsample:
            raise ValueError(
                f"data.image_size={image_size} is not divisible by the {name}'s downsampling "
                f"factor {self.downsample}"
            )
        self._decode_gflops: float | None = None

    @property
    def token_grid(self) -> tuple[int, int]:
        side = self.image_size // self.downsample
        return side, side

    def check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != self.image_channels:
            raise ValueError(
                f"the {self.name} expects B×{self.image_channels}×H×W images, got "
                f"{tuple(images.shape)}"
            )

    def check_indices(self, indices: torch.Tensor) -> None:
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"token indices must lie in 0..{self.codebook_size - 1}")

    def decode_gflops(self) -> float:
        """GFLOPs of decoding one token grid (counted once, then cached)."""
        if self._decode_gflops is None:
            self._decode_gflops = self._count_decode_gflops()
        return self._decode_gflops

    def _count_decode_gflops(self) -> float:
        raise NotImplementedError
