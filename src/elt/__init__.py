"""elt — Elastic Looped Transformers for visual generation.

N unique transformer layers looped L times, trained with Intra-Loop Self Distillation so that one
checkpoint samples at any loop count::

    import elt
    generator = elt.load("demo:masked")  # a shipped model, or a run/checkpoint directory
    images = generator.generate([0, 1, 2], loops=2)  # uint8 N×H×W×C
"""

from __future__ import annotations

from elt.version import __version__

__all__ = ["__version__", "load"]


def load(path, ema: bool = True, device: str = "cpu", overrides=()):
    """Load a trained generator (masked or diffusion) from a checkpoint or run directory, or a
    shipped model by name (``demo:masked``, ``demo:diffusion``, ``demo:masked-vanilla``,
    ``demo:diffusion-vanilla``); ``overrides`` (e.g. ``["masked.temperature_base=4.5"]``) change its
    sampling settings."""
    from elt.inference.checkpoints import load_generator

    return load_generator(path, ema=ema, device=device, overrides=overrides)
