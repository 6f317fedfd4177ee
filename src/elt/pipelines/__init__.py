"""elt's generators as diffusers pipelines (the ``diffusers`` extra: ``pip install
'elt-looped[diffusers]'``)::

    from elt.pipelines import ELTMaskedPipeline

    pipe = ELTMaskedPipeline.from_pretrained("demo:masked")
    out = pipe(class_labels=[0, 1, 2], loops=2, generator=0)  # out.images: PIL images

The images equal ``elt.load("demo:masked").generate([0, 1, 2], loops=2, seed=0)`` bit for bit: the
pipelines drive elt's own sampling code (see :mod:`elt.pipelines.pipeline`)."""

from __future__ import annotations

try:
    import diffusers  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    from elt.errors import UserError

    raise UserError(
        "elt.pipelines needs diffusers and huggingface_hub: pip install 'elt-looped[diffusers]'"
    ) from exc

from elt.pipelines.models import ELTScheduler, ELTSchedulerOutput, ELTTransformer
from elt.pipelines.pipeline import (
    ELTDiffusionPipeline,
    ELTMaskedPipeline,
    ELTPipelineOutput,
    load_pipeline,
)

__all__ = [
    "ELTDiffusionPipeline",
    "ELTMaskedPipeline",
    "ELTPipelineOutput",
    "ELTScheduler",
    "ELTSchedulerOutput",
    "ELTTransformer",
    "load_pipeline",
]
