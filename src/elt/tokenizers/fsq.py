"""A small trainable image tokenizer: conv encoder → Finite Scalar Quantisation (FSQ) → conv
decoder.

FSQ (Mentzer et al. 2023) bounds each of ``len(levels)`` latent channels and rounds it to one of
``levels[i]`` values; the code of a position is the tuple of rounded values, so the codebook is the
product grid (``[8, 5, 5, 5]`` → 1000 codes) and needs no codebook loss, commitment loss or
dead-code restarts. That makes it the robust choice for a tokenizer trained in minutes on a CPU.

Every tokenizer in :mod:`elt.tokenizers` offers the same small interface the masked generator relies
on: ``codebook_size``, ``token_grid`` (h, w), ``encode(images) → LongTensor B×h×w``,
``decode(indices) → images B×C×H×W`` in [-1, 1], and ``decode_gflops()``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class FSQ(nn.Module):
    """Finite scalar quantiser over the channel axis (dim 1) of a B×D×h×w latent.

    Channel i is squashed with tanh to ``levels[i]`` intervals and rounded; gradients pass straight
    through the rounding. Quantised values are scaled to [-1, 1]."""

    def __init__(self, levels: Sequence[int], eps: float = 1e-3):
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be integers >= 2, got {levels}")
        self.levels_list = levels
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        basis = [math.prod(levels[:i]) for i in range(len(levels))]
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.long), persistent=False)
        self.eps = eps

    @property
    def dim(self) -> int:
        return len(self.levels_list)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels_list)

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.view(1, -1, *([1] * (ndim - 2)))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash to (−L/2, L/2) per channel, shifted for even L so rounding yields exactly L
        integers."""
        levels = self._view(self.levels, z.ndim)
        half = (levels - 1) * (1 - self.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Continuous latent → quantised latent in [-1, 1] (straight-through gradient)."""
        bounded = self.bound(z)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / self._view(torch.div(self.levels, 2, rounding_mode="floor"), z.ndim)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantised latent B×D×h×w → integer indices B×h×w in [0, codebook_size)."""
        half = self._view(torch.div(self.levels, 2, rounding_mode="floor"), codes.ndim)
        digits = torch.round(codes * half + half).long()
        return (digits * self._view(self.basis, codes.ndim)).sum(dim=1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Integer indices B×h×w → quantised latent B×D×h×w (the exact inverse of
        ``codes_to_indices``)."""
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"token indices must lie in 0..{self.codebook_size - 1}")
        levels = self.levels.long()
        digits = (indices.unsqueeze(1) // self._view(self.basis, indices.ndim + 1)) % self._view(
            levels, indices.ndim + 1
        )
        half = self._view(torch.div(self.levels, 2, rounding_mode="floor"), indices.ndim + 1)
        return (digits.float() - half) / half


class ResBlock(nn.Module):
    """conv-SiLU-conv residual block without normalisation (fast on CPU, stable at this size)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def stage_widths(channels: int, stages: int) -> list[int]:
    """Widths from the full-resolution stage to the token grid: halving upwards, at least 16."""
    return [max(16, channels // 2 ** (stages - i)) for i in range(stages + 1)]


class Encoder(nn.Module):
    def __init__(self, in_channels: int, channels: int, stages: int, latent_dim: int):
        super().__init__()
        widths = stage_widths(channels, stages)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for i in range(stages):
            layers += [
                ResBlock(widths[i]),
                nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1),
            ]
        layers += [
            ResBlock(widths[-1]),
            ResBlock(widths[-1]),
            nn.SiLU(),
            nn.Conv2d(widths[-1], latent_dim, 1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, out_channels: int, channels: int, stages: int, latent_dim: int):
        super().__init__()
        widths = stage_widths(channels, stages)
        layers: list[nn.Module] = [
            nn.Conv2d(latent_dim, widths[-1], 3, padding=1),
            ResBlock(widths[-1]),
            ResBlock(widths[-1]),
        ]
        for i in reversed(range(stages)):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[i + 1], widths[i], 3, padding=1),
                ResBlock(widths[i]),
            ]
        layers += [nn.SiLU(), nn.Conv2d(widths[0], out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class FSQCodec(nn.Module):
    """The path both FSQ tokenizers share: encoder → FSQ → decoder. Subclasses build ``encoder``,
    ``decoder`` and ``quantizer``, and define ``token_grid`` and ``check_input`` (the pixel shape
    they take)."""

    quantizer: FSQ
    encoder: nn.Module
    decoder: nn.Module
    _decode_gflops: float | None = None

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def token_grid(self) -> tuple[int, ...]:
        raise NotImplementedError

    def check_input(self, pixels: torch.Tensor) -> None:
        raise NotImplementedError

    def check_indices(self, indices: torch.Tensor) -> None:
        if indices.ndim != len(self.token_grid) + 1 or tuple(indices.shape[1:]) != tuple(
            self.token_grid
        ):
            raise ValueError(
                f"tokenizer decodes token grids B×{'×'.join(map(str, self.token_grid))}, "
                f"got {tuple(indices.shape)}"
            )

    def reconstruct(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encode, quantise and decode with straight-through gradients (the training path)."""
        self.check_input(pixels)
        return self.decoder(self.quantizer.quantize(self.encoder(pixels)))

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels → token indices; under bf16 autocast the encoder runs in bf16 and the rounding in
        fp32."""
        self.check_input(pixels)
        latent = self.encoder(pixels)
        with torch.autocast(latent.device.type, enabled=False):
            return self.quantizer.codes_to_indices(self.quantizer.quantize(latent.float()))

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        self.check_indices(indices)
        return self.decoder(self.quantizer.indices_to_codes(indices)).clamp(-1, 1)

    def decode_gflops(self) -> float:
        """Forward GFLOPs of decoding one item (2 × multiply-accumulates of every layer), measured
        once."""
        if self._decode_gflops is None:
            self._decode_gflops = count_gflops(
                self.decoder, torch.zeros(1, self.quantizer.dim, *self.token_grid)
            )
        return self._decode_gflops


class FSQTokenizer(FSQCodec):
    """Images (B×C×S×S in [-1, 1]) ↔ token grids (B×(S/downsample)×(S/downsample), ints <
    codebook_size)."""

    kind = "fsq"

    def __init__(
        self,
        image_size: int = 32,
        image_channels: int = 1,
        levels: Sequence[int] = (8, 5, 5, 5),
        downsample: int = 4,
        channels: int = 64,
    ):
        super().__init__()
        stages = int(round(math.log2(downsample))) if downsample >= 1 else -1
        if downsample < 1 or 2**stages != downsample:
            raise ValueError(f"tokenizer.downsample must be a power of two, got {downsample}")
        if image_size % downsample:
            raise ValueError(
                f"data.image_size={image_size} is not divisible by "
                f"tokenizer.downsample={downsample}"
            )
        self.image_size = image_size
        self.image_channels = image_channels
        self.downsample = downsample
        self.channels = channels
        self.quantizer = FSQ(levels)
        self.encoder = Encoder(image_channels, channels, stages, self.quantizer.dim)
        self.decoder = Decoder(image_channels, channels, stages, self.quantizer.dim)

    @property
    def token_grid(self) -> tuple[int, int]:
        side = self.image_size // self.downsample
        return side, side

    def check_input(self, images: torch.Tensor) -> None:
        want = (self.image_channels, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(
                f"tokenizer expects images B×{want[0]}×{want[1]}×{want[2]}, got "
                f"{tuple(images.shape)}"
            )

    def architecture(self) -> dict:
        """What must match for saved weights to load (written next to the weights)."""
        return {
            "kind": self.kind,
            "image_size": self.image_size,
            "image_channels": self.image_channels,
            "levels": list(self.quantizer.levels_list),
            "downsample": self.downsample,
            "channels": self.channels,
        }


CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_gflops(module: nn.Module, example: torch.Tensor) -> float:
    """2 × multiply-accumulates of every convolution (1D/2D/3D, plain or transposed) and Linear
    layer in one forward pass of ``example``, per item of its batch."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        kernel = math.prod(layer.kernel_size) if hasattr(layer, "kernel_size") else 1
        if isinstance(layer, CONV_TYPES):
            total += 2 * output.numel() * kernel * layer.in_channels // layer.groups
        elif isinstance(
            layer, TRANSPOSED_TYPES
        ):  # every input value is spread over kernel × out channels
            total += 2 * inputs[0].numel() * kernel * layer.out_channels // layer.groups
        elif isinstance(layer, nn.Linear):
            total += 2 * output.numel() * layer.in_features

    counted = (*CONV_TYPES, *TRANSPOSED_TYPES, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, counted)]
    try:
        with torch.no_grad():
            module(example.to(next(module.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return total / example.shape[0] / 1e9


WEIGHTS_FILE = "tokenizer.safetensors"
META_FILE = "tokenizer.json"


class TokenizerMismatchError(ValueError):
    """Saved tokenizer weights were trained with a different architecture than the config asks
    for."""


def is_saved(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / WEIGHTS_FILE).is_file() and (folder / META_FILE).is_file()


def save_tokenizer(tokenizer: FSQTokenizer, folder: str | Path, info: dict | None = None) -> Path:
    """Write ``tokenizer.safetensors`` and ``tokenizer.json`` (architecture, weight hash, ``info``)
    atomically."""
    from safetensors.torch import save_file

    from elt.data.cache import state_dict_hash
    from elt.fileio import write_json, write_via

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in tokenizer.state_dict().items()}
    write_via(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    meta = {
        "architecture": tokenizer.architecture(),
        "hash": state_dict_hash(tokenizer),
        **(info or {}),
    }
    write_json(folder / META_FILE, meta)
    return folder


def load_tokenizer(tokenizer: FSQTokenizer, folder: str | Path) -> dict:
    """Load saved weights into ``tokenizer`` after checking they were trained with the same
    architecture; returns the saved metadata (metrics, hash, ...)."""
    from elt.fileio import load_safetensors

    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    saved, wanted = meta.get("architecture", {}), tokenizer.architecture()
    diffs = [
        f"{k}={saved.get(k)!r} (config: {v!r})" for k, v in wanted.items() if saved.get(k) != v
    ]
    if diffs:
        raise TokenizerMismatchError(
            f"tokenizer at {folder} was trained with {', '.join(diffs)}; use a matching "
            "config or another tokenizer.path"
        )
    tokenizer.load_state_dict(load_safetensors(folder / WEIGHTS_FILE, "tokenizer weights"))
    return meta
