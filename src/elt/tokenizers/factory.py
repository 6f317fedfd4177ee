"""The one tokenizer factory: the architecture a config's ``tokenizer:`` section names (random
weights for the trainable kinds; weights are loaded by the masked paradigm's ``prepare_data`` or
from a checkpoint)."""

from __future__ import annotations

from torch import nn

from elt.config import PRETRAINED_TOKENIZER_KINDS, TOKENIZER_KINDS

TRAINABLE_KINDS = ("fsq", "fsq3d")


def build_tokenizer(cfg, weights: bool = False) -> nn.Module:
    """``fsq`` (images), ``fsq3d`` (clips of ``data.frames`` frames), ``pretrained_vq`` (a local
    diffusers VQModel folder) or ``maskgit_vq`` (a folder ``elt tokenizer convert-maskgit`` wrote).
    The pretrained kinds come with the folder's weights when ``weights`` is true, otherwise (and
    the trainable kinds always) with random weights of the same layout."""
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
            t.pretrained_path, cfg.data.image_size, weights=weights
        )
        return _check_channels(tokenizer, cfg)
    if kind == "maskgit_vq":
        from elt.tokenizers.maskgit_vq import MaskGITVQTokenizer

        if not t.pretrained_path:
            raise ValueError(
                "tokenizer.kind=maskgit_vq needs tokenizer.pretrained_path=FOLDER (written by "
                "elt tokenizer convert-maskgit CHECKPOINT FOLDER)"
            )
        tokenizer = MaskGITVQTokenizer.from_folder(
            t.pretrained_path, cfg.data.image_size, weights=weights
        )
        return _check_channels(tokenizer, cfg)
    raise ValueError(f"unknown tokenizer.kind {kind!r}; allowed: {', '.join(TOKENIZER_KINDS)}")


def _check_channels(tokenizer: nn.Module, cfg) -> nn.Module:
    if tokenizer.image_channels != cfg.data.channels:
        raise ValueError(
            f"the {cfg.tokenizer.kind} model takes {tokenizer.image_channels}-channel images but "
            f"data.channels={cfg.data.channels}"
        )
    return tokenizer


def build_trainable_tokenizer(cfg) -> nn.Module:
    """:func:`build_tokenizer` for the kinds ``elt tokenizer train`` trains (``fsq``, ``fsq3d``)."""
    if cfg.tokenizer.kind not in TRAINABLE_KINDS:
        raise ValueError(
            f"tokenizer.kind={cfg.tokenizer.kind!r} is not trainable here (trainable: "
            f"{', '.join(TRAINABLE_KINDS)}); {' and '.join(PRETRAINED_TOKENIZER_KINDS)} load from "
            "tokenizer.pretrained_path"
        )
    return build_tokenizer(cfg)
