"""The models shipped in the package: ``demo:NAME`` is accepted wherever a checkpoint is
(``elt.load("demo:masked")``, ``elt sample --ckpt demo:diffusion``, ...)."""

from __future__ import annotations

from pathlib import Path

from elt.errors import CheckpointError
from elt.inference.files import CONFIG_FILE, MODEL_FILE

DEMO_SCHEME = "demo:"
DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"


def demo_models() -> dict[str, Path]:
    """The models shipped in the package, by name: ``demo:NAME`` is accepted wherever a checkpoint
    is."""
    if not DEMO_DIR.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(DEMO_DIR.iterdir())
        if (p / CONFIG_FILE).is_file() and (p / MODEL_FILE).is_file()
    }


def demo_checkpoint(name: str) -> Path:
    """``demo:masked`` → the shipped model's directory; an unknown name lists the shipped ones."""
    models = demo_models()
    key = name[len(DEMO_SCHEME) :] if name.startswith(DEMO_SCHEME) else name
    if key not in models:
        shipped = ", ".join(DEMO_SCHEME + n for n in models) or "none in this install"
        raise CheckpointError(f"unknown demo model {name!r}; shipped: {shipped}")
    return models[key]
