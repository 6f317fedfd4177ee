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

from elt.tokenizers.vq_common import VQTokenizerBase, nearest_codes


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


class PretrainedVQTokenizer(VQTokenizerBase):
    """A diffusers ``VQModel`` seen as an image ↔ token-grid tokenizer.

    Build the architecture with :meth:`from_folder` (``weights=False`` gives random weights of the
    same layout, which is what a checkpoint is loaded into), or load the weights as well with
    ``weights=True``."""

    kind = "pretrained_vq"

    def __init__(self, vq_model: nn.Module, image_size: int):
        config = vq_model.config
        downsample = 2 ** (len(config.block_out_channels) - 1)
        super().__init__(image_size, config.in_channels, downsample, "VQ model")
        self.vq = vq_model

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

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images B×C×S×S in [-1, 1] → nearest-codebook indices B×h×w."""
        self.check_images(images)
        latents = self.vq.encode(images).latents  # B×D×h×w, after quant_conv (bf16 under autocast)
        return nearest_codes(latents, self.codebook)

    def quantized(self, indices: torch.Tensor) -> torch.Tensor:
        self.check_indices(indices)
        return self.codebook[indices].permute(0, 3, 1, 2)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices B×h×w → images B×C×S×S in [-1, 1]."""
        quant = self.quantized(indices).to(self.codebook.dtype)
        spatial = quant if self.vq.config.norm_type == "spatial" else None
        return self.vq.decoder(self.vq.post_quant_conv(quant), spatial).clamp(-1, 1)

    def _count_decode_gflops(self) -> float:
        from elt.tokenizers.fsq import count_gflops

        h, w = self.token_grid

        class _Decode(nn.Module):
            def __init__(self, tokenizer):
                super().__init__()
                self.tokenizer = tokenizer

            def forward(self, indices):
                return self.tokenizer.decode(indices)

        return count_gflops(_Decode(self), torch.zeros(1, h, w, dtype=torch.long))
