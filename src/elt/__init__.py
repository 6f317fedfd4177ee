"""elt — Elastic Looped Transformers for visual generation.

N unique transformer layers looped L times, trained with Intra-Loop Self Distillation so that one
checkpoint samples at any loop count::

    import elt
    generator = elt.load("demo:masked")  # a shipped model, or a run/checkpoint directory
    images = generator.generate([0, 1, 2], loops=2)  # uint8 N×H×W×C
"""

from __future__ import annotations

from elt.version import __version__

__all__ = ["__version__", "export", "load"]


def load(path, ema: bool = True, device: str = "cpu", overrides=()):
    """Load a trained generator (masked or diffusion) from a checkpoint or run directory, or a
    shipped model by name (``demo:masked``, ``demo:diffusion``, ``demo:masked-vanilla``,
    ``demo:diffusion-vanilla``); ``overrides`` (e.g. ``["masked.temperature_base=4.5"]``) change its
    sampling settings."""
    from elt.inference.checkpoints import load_generator

    return load_generator(path, ema=ema, device=device, overrides=overrides)


def export(path, out_dir, format: str = "elt", half: bool = True, overrides=(), **card):
    """Write an inference-only copy of a checkpoint (``elt export``): ``format="elt"`` gives
    ``config.yaml`` + ``model.safetensors``; ``format="hub"`` a Hugging Face Hub folder
    (``config.json``, ``model.safetensors``, ``references.json``, a ``README.md`` model card;
    ``card`` takes ``eval_path``, ``license``, ``name``), which ``elt.load`` and the pipelines
    load, locally or as a Hub repo id. ``half``: fp16 weights; ``overrides``: the export's sampling
    defaults."""
    from elt.inference.export import export_inference

    return export_inference(
        path, out_dir, half=half, sampling_overrides=overrides, format=format, **card
    )
