"""The looped core shared by every paradigm: blocks, the loop engine and the ILSD objective."""

from elt.core.blocks import Attention, Block, LabelEmbedder, TimestepEmbedder, sincos_embedding
from elt.core.ilsd import ILSDTerms, StudentLoopDraw, ilsd_lambda, ilsd_loss
from elt.core.looped import LoopedTransformer, LoopOutput

__all__ = [
    "Attention",
    "Block",
    "ILSDTerms",
    "LabelEmbedder",
    "LoopOutput",
    "LoopedTransformer",
    "StudentLoopDraw",
    "TimestepEmbedder",
    "ilsd_lambda",
    "ilsd_loss",
    "sincos_embedding",
]
