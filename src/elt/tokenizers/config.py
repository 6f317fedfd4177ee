"""Configuration of the image tokenizer: the `tokenizer:` section of a config."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenizerConfig:
    kind: str = "fsq"  # fsq (trainable here) | pretrained_vq (diffusers VQModel from a local path)
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # FSQ levels: 1000 codes
    downsample: int = 4  # 32×32 images → 8×8 tokens
    channels: int = 64
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    path: str | None = None  # where the trained tokenizer is saved / looked for (None: next to the run)
    pretrained_path: str | None = None
