"""Configuration of the masked-token (MaskGIT) paradigm: the `masked:` section of a config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MaskedConfig:
    sample_steps: int = 12  # K decoding steps (the paper: 24 for ImageNet images, 12 for video)
    guidance: float = 0.0  # classifier-free guidance: logits = cond + g·(cond − uncond) (0 = conditional only)
    temperature_base: float = 0.5  # Gumbel temperature at step k of K: base + range·(1 − (k+1)/K)
    temperature_range: float = 0.8
    token_temperature: float = 1.0  # softmax temperature of the token draws (1 = the model's distribution)
    label_smoothing: float = 0.0
    sample_precision: str = "fp32"  # fp32 | bf16 (autocast matmuls while decoding: ~3x faster on bf16-capable CPUs)
