"""Diffusion (DiT paradigm) on the looped core; registers ``paradigm: diffusion``."""

from elt.diffusion.config import DiffusionConfig
from elt.registry import register_paradigm

register_paradigm("diffusion", task="elt.diffusion.task", config=DiffusionConfig)
