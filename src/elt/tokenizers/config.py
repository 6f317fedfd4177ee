"""Configuration of the image tokenizer: the `tokenizer:` section of a config."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenizerConfig:
    kind: str = "fsq"  # fsq (trainable here) | fsq3d (videos, trainable here) | pretrained_vq (diffusers VQModel)
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # FSQ levels: 1000 codes
    downsample: int = 4  # 32×32 images → 8×8 tokens
    temporal_downsample: int = 4  # fsq3d: 16 frames → 4 latent frames
    channels: int = 64  # width of the FSQ encoder/decoder at the token grid (halved per upsampling stage)
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100  # then cosine decay to lr/10
    eval_items: int = 10000  # test images used for the reported PSNR/MSE (0: skip the report)
    path: str | None = None  # where the trained tokenizer is saved / looked for (None: RUN/tokenizer)
    pretrained_path: str | None = None  # kind=pretrained_vq: local diffusers VQModel folder (config.json + weights)
    encode_batch_size: int = 256  # images per batch when encoding the dataset into the token cache


TOKENIZER_KINDS = ("fsq", "fsq3d", "pretrained_vq")
