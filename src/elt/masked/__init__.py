"""Masked-token generation (MaskGIT / MAGVIT paradigm) on the looped core; registers ``paradigm:
masked``."""

from elt.masked.config import MaskedConfig
from elt.registry import register_paradigm

register_paradigm("masked", task="elt.masked.task", config=MaskedConfig)
