"""Moving Fashion-MNIST: short clips of one real Fashion-MNIST garment moving over a black canvas.

A synthetic but honest video set: every pixel of the sprite is a pixel of a real Fashion-MNIST
image, only its position changes, and the label is that image's garment class. It lets the video
pipeline (tokenizer, masked generator, metrics) be trained and judged on a 2-core CPU, where real
video data is out of reach.

Item ``i`` of a split is built from Fashion-MNIST image ``i`` of the same split and is fully
determined by ``(seed, split, i)``: a per-item random generator draws the start position (top-left
corner, uniform over the positions where the sprite fits) and the velocity (speed uniform in 1..3
px/frame, direction uniform over the circle). Positions are tracked in continuous coordinates and
rounded to whole pixels per frame, so the sprite is pasted unresampled and its pixels equal the
source image exactly.

Motions:

* ``bounce`` (default): constant velocity, reflected off the canvas walls (the sprite's edge touches
  the wall, then the velocity component normal to it flips).
* ``linear``: constant velocity without any reflection; the sprite stays on the canvas for the whole
  clip. The start position is drawn among those that keep it inside, and when the canvas is too
  small for the drawn speed over ``frames - 1`` steps the speed is scaled down until it fits
  (documented rather than wrapping, so the garment is never cut by an edge).

Clips are generated on the fly (a few microseconds each: one paste per frame), so nothing is cached
on disk; the only memory is the source images (47 MB for the training split). ``trajectory(i)``
exposes the per-frame top-left corners for tests and metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from elt.data.fashion_mnist import CLASSES, load_arrays

MOTIONS = ("bounce", "linear")
SPLIT_IDS = {"train": 0, "test": 1}
MIN_SPEED, MAX_SPEED = 1.0, 3.0


def reflect(position: np.ndarray, high: float) -> np.ndarray:
    """Fold unbounded positions into [0, high] as a ball bouncing between walls at 0 and
    ``high``."""
    if high <= 0:
        return np.zeros_like(position)
    period = np.mod(position, 2 * high)
    return np.where(period <= high, period, 2 * high - period)


class MovingFashionMNIST(Dataset):
    """Clips ``1×frames×image_size×image_size`` in [-1, 1] of a moving Fashion-MNIST garment, with
    its class.

    Args:
        root: Fashion-MNIST folder (``None``: ``$ELT_DATA``, then the Debian dataset path).
        split: ``train`` (60k clips) or ``test`` (10k clips), one clip per source image.
        frames: clip length (>= 2).
        image_size: canvas side in pixels (>= ``sprite_size``).
        sprite_size: side of the pasted garment; 28 keeps native pixels, other sizes resize it (area
            filter when shrinking, bilinear when enlarging).
        motion: ``bounce`` or ``linear`` (see the module docstring).
        seed: selects a different, equally deterministic set of trajectories.
        limit: keep only the first ``limit`` clips.
    """

    num_classes = 10
    classes = CLASSES

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        frames: int = 16,
        image_size: int = 64,
        sprite_size: int = 28,
        motion: str = "bounce",
        seed: int = 0,
        limit: int | None = None,
    ):
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLIT_IDS)}")
        if motion not in MOTIONS:
            raise ValueError(f"data.motion={motion!r} is not one of {', '.join(MOTIONS)}")
        if frames < 2:
            raise ValueError(f"data.frames must be >= 2 for moving_fmnist, got {frames}")
        if sprite_size < 1 or sprite_size > image_size:
            raise ValueError(
                f"data.sprite_size={sprite_size} must lie in 1..data.image_size={image_size}"
            )
        images, labels = load_arrays(root, split)
        if limit:
            images, labels = images[:limit], labels[:limit]
        self.split = split
        self.frames = frames
        self.image_size = image_size
        self.sprite_size = sprite_size
        self.motion = motion
        self.seed = seed
        self.images = images  # uint8 N×28×28, the source sprites
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])

    def trajectory(self, index: int) -> np.ndarray:
        """Integer top-left corners (row, col) of the sprite in each frame, ``frames×2``."""
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range 0..{len(self) - 1}")
        rng = self._rng(index)
        high = float(self.image_size - self.sprite_size)
        speed = rng.uniform(MIN_SPEED, MAX_SPEED)
        angle = rng.uniform(0.0, 2 * math.pi)
        velocity = speed * np.array([math.sin(angle), math.cos(angle)])
        steps = np.arange(self.frames, dtype=np.float64)[:, None]
        if self.motion == "bounce":
            start = rng.uniform(0.0, high, size=2)
            positions = reflect(start + steps * velocity, high)
        else:
            travel = np.abs(velocity) * (self.frames - 1)
            if travel.max() > high:  # too fast for this canvas: slow down so the clip stays inside
                velocity = velocity * (high / travel.max() if travel.max() > 0 else 0.0)
                travel = np.abs(velocity) * (self.frames - 1)
            low_start = np.where(velocity < 0, travel, 0.0)
            start = low_start + rng.uniform(0.0, 1.0, size=2) * (high - travel)
            positions = start + steps * velocity
        return np.clip(np.rint(positions), 0, high).astype(np.int64)

    def sprite(self, index: int) -> torch.Tensor:
        """The garment of clip ``index`` as ``sprite_size×sprite_size`` floats in [-1, 1]."""
        sprite = torch.from_numpy(self.images[index].astype(np.float32)).div(127.5).sub(1.0)
        if self.sprite_size != sprite.shape[-1]:
            mode = "area" if self.sprite_size < sprite.shape[-1] else "bilinear"
            extra = {} if mode == "area" else {"align_corners": False}
            sprite = F.interpolate(
                sprite[None, None], size=(self.sprite_size,) * 2, mode=mode, **extra
            )[0, 0]
            sprite = sprite.clamp(-1.0, 1.0)
        return sprite

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sprite = self.sprite(index)
        size, s = self.image_size, self.sprite_size
        video = torch.full((1, self.frames, size, size), -1.0)
        for t, (row, col) in enumerate(self.trajectory(index).tolist()):
            video[0, t, row : row + s, col : col + s] = sprite
        return video, self.labels[index]
