"""Configuration of the masked-token (MaskGIT) paradigm: the `masked:` section of a config.

Steps, guidance and precision of sampling live in the shared ``sampling:`` section; the defaults
this paradigm uses where that section leaves them null are :data:`SAMPLING_DEFAULTS`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from elt.errors import ConfigError
from elt.limits import Range

# sampling.* defaults for masked models: K = 12 decoding steps (the paper: 24 for ImageNet images,
# 12 for video), no guidance (s = 1: the conditional pass alone), fp32 matmuls while decoding.
SAMPLING_DEFAULTS = {"steps": 12, "guidance": 1.0, "precision": "fp32"}


@dataclass
class MaskedConfig:
    temperature_base: float = 0.5  # Gumbel temperature at step k of K: base + range·(1 − (k+1)/K)
    temperature_range: float = 0.8
    token_temperature: float = (
        1.0  # softmax temperature of the token draws (1 = the model's distribution)
    )
    label_smoothing: float = 0.0

    # one check per field, run when a config is loaded (elt.config.validate)
    RULES: ClassVar[dict] = {
        "temperature_base": Range(0, 1000),
        "temperature_range": Range(-1000, 1000),
        "token_temperature": Range(0, 1000, lo_open=True),
        "label_smoothing": Range(0, 1, hi_open=True),
    }
    # the fields a checkpoint may be sampled with differently (elt.config.sampling_keys)
    SAMPLING_KEYS: ClassVar[tuple] = ("temperature_base", "temperature_range", "token_temperature")
    # fields of checkpoints saved by earlier versions: old field -> (new key, conversion). The old
    # guidance g gave cond + g·(cond − uncond); sampling.guidance is s = g + 1 (the same logits).
    RENAMED_KEYS: ClassVar[dict] = {
        "sample_steps": ("sampling.steps", None),
        "guidance": ("sampling.guidance", lambda g: float(g) + 1.0),
        "sample_precision": ("sampling.precision", None),
    }

    @classmethod
    def validate(cls, cfg) -> None:
        """Relations with the shared sections, checked when a masked config is loaded."""
        frames, kind = cfg.data.frames, cfg.tokenizer.kind
        if frames > 0 and kind != "fsq3d":
            raise ConfigError(
                f"tokenizer.kind={kind} encodes images; video data (data.frames={frames}) needs "
                "tokenizer.kind=fsq3d"
            )
