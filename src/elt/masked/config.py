"""Configuration of the masked-token (MaskGIT) paradigm: the `masked:` section of a config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MaskedConfig:
    sample_steps: int = 12  # K decoding steps (the paper: 24 for ImageNet images, 12 for video)
    guidance: float = 0.0  # classifier-free guidance scale (0 = conditional only)
    temperature_base: float = 0.5  # Gumbel temperature at step k of K: base + range·(1 − (k+1)/K)
    temperature_range: float = 0.8
    label_smoothing: float = 0.0
