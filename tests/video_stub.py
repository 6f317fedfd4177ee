"""Stand-ins for the video data and tokenizer, with the interfaces of the video contract, for tests
of the masked model, sampling and video metrics that must not depend on a trained 3D tokenizer.

``StubVideoTokenizer`` is a fixed (untrained, deterministic) 3D "tokenizer": each token is the mean
intensity of a ``temporal_downsample × downsample × downsample`` block, quantised to ``levels``
values; decoding paints each block with its value. Crude, but it is exact on block-constant videos,
so a model that learns the token statistics produces recognisable moving squares.

``moving_squares`` makes synthetic clips: a bright square (class = its size) moving with constant
velocity and bouncing off the walls, on a black background. Both real-looking motion and its
corruptions (static, shuffled frames) are easy to derive from it."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


class StubVideoTokenizer(nn.Module):
    kind = "stub3d"

    def __init__(
        self,
        frames: int = 4,
        image_size: int = 16,
        image_channels: int = 1,
        levels: int = 8,
        downsample: int = 4,
        temporal_downsample: int = 2,
    ):
        super().__init__()
        self.frames, self.image_size, self.image_channels = frames, image_size, image_channels
        self.levels, self.downsample, self.temporal_downsample = (
            levels,
            downsample,
            temporal_downsample,
        )
        # a frozen parameter so that ``next(tokenizer.parameters())`` finds the device, as for real
        # tokenizers
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)

    @property
    def codebook_size(self) -> int:
        return self.levels

    @property
    def token_grid(self) -> tuple[int, int, int]:
        side = self.image_size // self.downsample
        return self.frames // self.temporal_downsample, side, side

    def encode(self, videos: torch.Tensor) -> torch.Tensor:
        want = (self.image_channels, self.frames, self.image_size, self.image_size)
        if videos.ndim != 5 or tuple(videos.shape[1:]) != want:
            raise ValueError(
                f"stub tokenizer expects B×{'×'.join(map(str, want))}, got {tuple(videos.shape)}"
            )
        kernel = (self.temporal_downsample, self.downsample, self.downsample)
        mean = nn.functional.avg_pool3d(videos.float().mean(1, keepdim=True), kernel)[:, 0]
        return ((mean + 1) / 2 * (self.levels - 1)).round().clamp(0, self.levels - 1).long()

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.levels):
            raise ValueError(f"token indices must lie in 0..{self.levels - 1}")
        values = indices.float() / (self.levels - 1) * 2 - 1
        values = values.repeat_interleave(self.temporal_downsample, 1).repeat_interleave(
            self.downsample, 2
        )
        values = values.repeat_interleave(self.downsample, 3) * self.scale
        return values.unsqueeze(1).expand(-1, self.image_channels, -1, -1, -1).clamp(-1, 1)

    def reconstruct(self, videos: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(videos))

    def decode_gflops(self) -> float:
        return 0.0

    def architecture(self) -> dict:
        return {
            "kind": self.kind,
            "frames": self.frames,
            "image_size": self.image_size,
            "image_channels": self.image_channels,
            "levels": self.levels,
            "downsample": self.downsample,
            "temporal_downsample": self.temporal_downsample,
        }


def bounce(start: float, velocity: float, frames: int, lo: float, hi: float) -> np.ndarray:
    """Positions of a point moving at ``velocity`` per frame inside [lo, hi], reflected at the
    walls."""
    span = hi - lo
    if span <= 0:
        return np.full(frames, lo, dtype=np.float64)
    raw = (start - lo) + velocity * np.arange(frames)
    folded = np.mod(raw, 2 * span)
    return lo + np.where(folded > span, 2 * span - folded, folded)


def moving_squares(
    n: int,
    frames: int = 16,
    size: int = 32,
    sides=(6, 10),
    seed: int = 0,
    speed=(1.0, 3.0),
    channels: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` clips uint8 n×T×S×S×C of a white square bouncing on black; returns (videos, labels,
    top-left positions n×T×2). The label indexes ``sides`` (the square's side length)."""
    rng = np.random.default_rng(seed)
    videos = np.zeros((n, frames, size, size, channels), np.uint8)
    labels = rng.integers(0, len(sides), n)
    positions = np.zeros((n, frames, 2))
    for i in range(n):
        side = sides[labels[i]]
        angle = rng.uniform(0, 2 * math.pi)
        v = rng.uniform(*speed)
        for axis, component in enumerate((math.sin(angle), math.cos(angle))):
            start = rng.uniform(0, size - side)
            positions[i, :, axis] = bounce(start, v * component, frames, 0, size - side)
        for t in range(frames):
            y, x = np.round(positions[i, t]).astype(int)
            videos[i, t, y : y + side, x : x + side] = 255
    return videos, labels, positions


class SquaresDataset(Dataset):
    """Moving squares as the contract's video items: (float C×T×H×W in [-1, 1], int label)."""

    def __init__(self, n: int = 64, frames: int = 4, size: int = 16, sides=(4, 8), seed: int = 0):
        videos, labels, _ = moving_squares(n, frames, size, sides, seed=seed, speed=(2.0, 4.0))
        self.videos = torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.videos[i], int(self.labels[i])


def moving_garments(
    images: np.ndarray, frames: int = 8, size: int = 64, seed: int = 0, speed=(1.0, 3.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (uint8 n×28×28) bouncing on a black ``size``² canvas: uint8 n×T×S×S×1
    and the top-left positions n×T×2 (integers)."""
    rng = np.random.default_rng(seed)
    n, side = len(images), images.shape[1]
    videos = np.zeros((n, frames, size, size, 1), np.uint8)
    positions = np.zeros((n, frames, 2), np.int64)
    for i in range(n):
        angle, v = rng.uniform(0, 2 * math.pi), rng.uniform(*speed)
        for axis, component in enumerate((math.sin(angle), math.cos(angle))):
            start = rng.uniform(0, size - side)
            positions[i, :, axis] = np.round(bounce(start, v * component, frames, 0, size - side))
        for t in range(frames):
            y, x = positions[i, t]
            videos[i, t, y : y + side, x : x + side, 0] = images[i]
    return videos, positions
