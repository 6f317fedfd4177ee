"""Adapter for a pretrained VQ tokenizer stored as a diffusers ``VQModel`` folder (``config.json`` +
weights).

For ImageNet-scale work the masked generator should run on a strong pretrained tokenizer rather than
the small FSQ one. Hub downloads are not assumed: the folder is a local path
(``tokenizer.pretrained_path``). The adapter gives the :mod:`elt.tokenizers` interface: ``encode``
maps each latent position to the index of its nearest codebook vector, ``decode`` looks the vectors
up and runs diffusers' post-quant conv and decoder. Needs the ``latent`` extra (``pip install
'elt-looped[latent]'``, i.e. diffusers)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


def _vq_model_class():
    try:
        from diffusers import VQModel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "tokenizer.kind=pretrained_vq needs diffusers: pip install 'elt-looped[latent]'"
        ) from exc
    return VQModel


def _config_file(path: str | Path) -> Path:
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"no diffusers VQModel at {str(path)!r} (expected {config}); set "
            "tokenizer.pretrained_path to a local folder saved with VQModel.save_pretrained"
        )
    return config


class PretrainedVQTokenizer(nn.Module):
    """A diffusers ``VQModel`` seen as an image ↔ token-grid tokenizer.

    Build the architecture with :meth:`from_folder` (``weights=False`` gives random weights of the
    same layout, which is what a checkpoint is loaded into), or load the weights as well with
    ``weights=True``."""

    kind = "pretrained_vq"

    def __init__(self, vq_model: nn.Module, image_size: int):
        super().__init__()
        config = vq_model.config
        self.vq = vq_model
        self.image_size = image_size
        self.image_channels = int(config.in_channels)
        self.downsample = 2 ** (len(config.block_out_channels) - 1)
        if image_size % self.downsample:
            raise ValueError(
                f"data.image_size={image_size} is not divisible by the VQ model's downsampling "
                f"factor {self.downsample}"
            )
        self._decode_gflops: float | None = None

    @classmethod
    def from_folder(
        cls, path: str | Path, image_size: int, weights: bool = True
    ) -> PretrainedVQTokenizer:
        VQModel = _vq_model_class()
        config_path = _config_file(path)
        if weights:
            model = VQModel.from_pretrained(str(path), local_files_only=True)
        else:
            model = VQModel.from_config(json.loads(config_path.read_text()))
        return cls(model.eval(), image_size)

    @property
    def codebook(self) -> torch.Tensor:
        return self.vq.quantize.embedding.weight

    @property
    def codebook_size(self) -> int:
        return int(self.codebook.shape[0])

    @property
    def token_grid(self) -> tuple[int, int]:
        side = self.image_size // self.downsample
        return side, side

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images B×C×S×S in [-1, 1] → nearest-codebook indices B×h×w."""
        if images.ndim != 4 or images.shape[1] != self.image_channels:
            raise ValueError(
                f"the VQ model expects B×{self.image_channels}×H×W images, got "
                f"{tuple(images.shape)}"
            )
        latents = self.vq.encode(images).latents  # B×D×h×w, after quant_conv (bf16 under autocast)
        b, d, h, w = latents.shape
        with torch.autocast(
            latents.device.type, enabled=False
        ):  # the nearest code: distances in fp32
            flat = latents.permute(0, 2, 3, 1).reshape(-1, d).float()
            codebook = self.codebook.float()
            distances = (
                flat.pow(2).sum(1, keepdim=True)
                - 2 * flat @ codebook.t()
                + codebook.pow(2).sum(1)[None]
            )
            return distances.argmin(dim=1).view(b, h, w)

    def quantized(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"token indices must lie in 0..{self.codebook_size - 1}")
        return self.codebook[indices].permute(0, 3, 1, 2)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices B×h×w → images B×C×S×S in [-1, 1]."""
        quant = self.quantized(indices).to(self.codebook.dtype)
        spatial = quant if self.vq.config.norm_type == "spatial" else None
        return self.vq.decoder(self.vq.post_quant_conv(quant), spatial).clamp(-1, 1)

    def decode_gflops(self) -> float:
        if self._decode_gflops is None:
            from elt.tokenizers.fsq import count_gflops

            h, w = self.token_grid

            class _Decode(nn.Module):
                def __init__(self, tokenizer):
                    super().__init__()
                    self.tokenizer = tokenizer

                def forward(self, indices):
                    return self.tokenizer.decode(indices)

            self._decode_gflops = count_gflops(
                _Decode(self), torch.zeros(1, h, w, dtype=torch.long)
            )
        return self._decode_gflops
