"""The contract every paradigm's generator fulfils, so that the trainer, ``elt sample``, ``elt eval`` and
``elt.load`` work the same for masked and diffusion models."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from elt.core.ilsd import ILSDTerms
from elt.core.looped import LoopedTransformer

LoopSchedule = int | Sequence[int] | None


class LoopedGenerator(nn.Module, ABC):
    """A class-conditional generator whose backbone is a :class:`LoopedTransformer`.

    Subclasses set ``self.backbone`` and ``self.config`` (the full run config) and implement the
    three methods below.
    """

    backbone: LoopedTransformer
    num_classes: int

    @property
    def trained_loops(self) -> int:
        """L_max: the loop count the model was trained with (the default when sampling)."""
        return self.backbone.loops

    @abstractmethod
    def training_loss(self, batch: Any, student_loops: int | None, lam: float) -> ILSDTerms:
        """One forward pass of L_max loops on a training batch; ILSD terms when ``student_loops`` is given,
        the teacher's ground-truth loss alone otherwise."""

    @abstractmethod
    def generate(self, class_labels: Sequence[int] | torch.Tensor, loops: LoopSchedule = None,
                 steps: int | None = None, guidance: float | None = None, seed: int | None = None,
                 progress: bool = False) -> np.ndarray:
        """Sample one image per label; returns uint8 N×H×W×C (video: N×T×H×W×C).

        ``loops`` is the loop count used for sampling: one for every sampling step, or one per step (a loop
        schedule); ``None`` uses L_max. ``steps``/``guidance`` default to the config's ``sampling`` section,
        then to the paradigm's defaults. ``guidance`` is the classifier-free guidance scale s in
        output = uncond + s·(cond − uncond): 1 is the conditional model alone (no unconditional pass),
        0 the unconditional one. Seed rule: an int seed makes the samples deterministic (same seed, same
        arguments → same images), and ``seed=None`` draws a fresh seed from OS entropy and records it in
        ``self.last_seed``.
        """

    @abstractmethod
    def gflops_per_sample(self, loops: LoopSchedule = None, steps: int | None = None,
                          guidance: float | None = None) -> float:
        """Forward GFLOPs (matmuls) to generate one sample, computed analytically."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def resolve_seed(seed: int | None) -> int:
    """The seed rule of every generator: an int is used as given; ``None`` draws a fresh one from OS entropy."""
    return int.from_bytes(os.urandom(8), "little") >> 2 if seed is None else int(seed)


def sampling_setting(config: Any, name: str, value: Any, defaults: dict[str, Any]) -> Any:
    """``value`` if given, else the config's ``sampling.<name>``, else the paradigm's default."""
    if value is not None:
        return value
    section = getattr(config, "sampling", None) if config is not None else None
    configured = section.get(name) if section is not None else None
    return defaults.get(name) if configured is None else configured


def loops_per_step(loops: LoopSchedule, steps: int, default: int) -> list[int]:
    """Expand a loop count or a per-step loop schedule to one value per sampling step."""
    if loops is None:
        return [default] * steps
    if isinstance(loops, (int, np.integer)) and not isinstance(loops, bool):
        schedule = [int(loops)] * steps
    elif isinstance(loops, (list, tuple, np.ndarray, torch.Tensor)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in np.asarray(loops).tolist()):
            raise ValueError(f"a loop schedule holds integer loop counts >= 1, got {list(np.asarray(loops).tolist())}")
        schedule = [int(v) for v in np.asarray(loops).tolist()]
        if len(schedule) != steps:
            raise ValueError(f"loop schedule has {len(schedule)} entries but sampling uses {steps} steps")
    else:
        raise ValueError(f"loops={loops!r}: give an integer loop count >= 1 or a list of them, one per sampling step")
    if min(schedule) < 1:
        raise ValueError(f"loop counts must be >= 1, got {schedule}")
    return schedule


def labels_tensor(class_labels: Sequence[int] | torch.Tensor, num_classes: int,
                  device: torch.device) -> torch.Tensor:
    labels = torch.as_tensor(class_labels, dtype=torch.long, device=device).reshape(-1)
    if labels.numel() and (labels.min() < -1 or labels.max() >= num_classes):
        raise ValueError(f"class labels must lie in 0..{num_classes - 1} (or -1 for unconditional)")
    return labels


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Model-space images in [-1, 1], channels first (N×C×H×W or N×C×T×H×W) → uint8 channels last."""
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    order = (0, 2, 3, 1) if images.ndim == 4 else (0, 2, 3, 4, 1)
    return images.permute(*order).cpu().numpy()
