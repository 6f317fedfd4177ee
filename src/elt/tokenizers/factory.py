"""The one tokenizer factory: the architecture a config's ``tokenizer:`` section names (random
weights for the trainable kinds; weights are loaded by the masked paradigm's ``prepare_data`` or
from a checkpoint)."""

from __future__ import annotations

from torch import nn

from elt.config import TOKENIZER_KINDS

TRAINABLE_KINDS = ("fsq", "fsq3d")


def build_tokenizer(cfg) -> nn.Module:
    """``fsq`` (images), ``fsq3d`` (clips of ``data.frames`` frames) or ``pretrained_vq`` (a local
    diffusers VQModel folder; architecture only)."""
    kind, t = cfg.tokenizer.kind, cfg.tokenizer
    if kind != "fsq3d" and cfg.data.frames > 0:
        raise ValueError(
            f"video data (data.frames={cfg.data.frames}) needs tokenizer.kind=fsq3d, got {kind!r}"
        )
    if kind == "fsq":
        from elt.tokenizers.fsq import FSQTokenizer

        return FSQTokenizer(
            image_size=cfg.data.image_size,
            image_channels=cfg.data.channels,
            levels=list(t.levels),
            downsample=t.downsample,
            channels=t.channels,
        )
    if kind == "fsq3d":
        from elt.tokenizers.video_fsq import VideoFSQTokenizer

        if cfg.data.frames < 2:
            raise ValueError(
                f"tokenizer.kind=fsq3d needs video data (data.frames >= 2, got {cfg.data.frames})"
            )
        return VideoFSQTokenizer(
            frames=cfg.data.frames,
            image_size=cfg.data.image_size,
            image_channels=cfg.data.channels,
            levels=list(t.levels),
            downsample=t.downsample,
            temporal_downsample=t.temporal_downsample,
            channels=t.channels,
        )
    if kind == "pretrained_vq":
        from elt.tokenizers.pretrained_vq import PretrainedVQTokenizer

        if not t.pretrained_path:
            raise ValueError(
                "tokenizer.kind=pretrained_vq needs tokenizer.pretrained_path=FOLDER "
                "(a local diffusers VQModel folder)"
            )
        tokenizer = PretrainedVQTokenizer.from_folder(
            t.pretrained_path, cfg.data.image_size, weights=False
        )
        if tokenizer.image_channels != cfg.data.channels:
            raise ValueError(
                f"the VQ model takes {tokenizer.image_channels}-channel images but data.channels="
                f"{cfg.data.channels}"
            )
        return tokenizer
    raise ValueError(f"unknown tokenizer.kind {kind!r}; allowed: {', '.join(TOKENIZER_KINDS)}")


def build_trainable_tokenizer(cfg) -> nn.Module:
    """:func:`build_tokenizer` for the kinds ``elt tokenizer train`` trains (``fsq``, ``fsq3d``)."""
    if cfg.tokenizer.kind not in TRAINABLE_KINDS:
        raise ValueError(
            f"tokenizer.kind={cfg.tokenizer.kind!r} is not trainable here (trainable: "
            f"{', '.join(TRAINABLE_KINDS)}); pretrained_vq loads from tokenizer.pretrained_path"
        )
    return build_tokenizer(cfg)
