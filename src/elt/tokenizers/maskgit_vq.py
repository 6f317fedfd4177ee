"""MaskGIT's VQGAN tokenizer (Chang et al. 2022) in PyTorch, and converters from its two public
weight layouts.

MaskGIT's ImageNet tokenizer is released as a Flax checkpoint (``tokenizer_imagenet256_checkpoint``,
a ``flax.serialization`` msgpack file); the 1d-tokenizer project distributes a PyTorch port of the
same weights (``maskgit-vqgan-imagenet-f16-256.bin``, a ``torch.save``'d state dict).
:func:`convert_maskgit` reads either one and writes a folder elt loads with ``tokenizer.kind=
maskgit_vq tokenizer.pretrained_path=FOLDER``: ``config.json`` (the architecture) and
``model.safetensors`` (this module's weights). Reading the Flax file needs only the ``msgpack``
package (``pip install 'elt-looped[pretrained]'``), not jax or flax.

The architecture, as published (google-research/maskgit ``maskgit/nets/vqgan_tokenizer.py`` with
``configs/vqgan_config.py``): a convolutional encoder of ``len(channel_multipliers)`` stages of
``res_blocks`` residual blocks each (2×2 average pooling between stages, no attention), two more
blocks, GroupNorm (32 groups, ε = 1e-6), swish and a 1×1 convolution to ``embedding_dim``; nearest
neighbour quantisation against a ``codebook_size`` × ``embedding_dim`` codebook; a mirrored decoder
(nearest-neighbour 2× upsampling followed by a 3×3 convolution between stages). The released
ImageNet model: 128 filters, multipliers (1, 1, 2, 2, 4) (16× downsampling: 256² → 16×16 tokens),
2 blocks per stage, 256-dimensional codes, 1024 codes. It works on pixels in [0, 1]; elt's tokenizer
interface works in [-1, 1], which :class:`MaskGITVQTokenizer` maps on the way in and out.

One quirk is kept because the weights depend on it: where a residual block changes the width, its
skip path is a 1×1 convolution of the block's *output branch*, not of its input."""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elt.fileio import InputFileError
from elt.tokenizers.vq_common import VQTokenizerBase, nearest_codes

FOLDER_FORMAT = "elt-maskgit-vq"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
GROUPS = 32  # flax.linen.GroupNorm defaults, as MaskGIT uses them
EPS = 1e-6


class MaskGITCheckpointError(InputFileError):
    """A MaskGIT checkpoint that lacks a tensor the architecture needs, or holds one of another
    shape (one line naming the first such tensor)."""


@dataclass(frozen=True)
class MaskGITVQConfig:
    """The architecture; the defaults are the released ImageNet tokenizer's."""

    filters: int = 128
    channel_multipliers: tuple[int, ...] = field(default=(1, 1, 2, 2, 4))
    res_blocks: int = 2
    embedding_dim: int = 256
    codebook_size: int = 1024
    image_channels: int = 3

    def __post_init__(self):
        object.__setattr__(self, "channel_multipliers", tuple(self.channel_multipliers))
        widths = [self.filters * m for m in self.channel_multipliers]
        if not widths or min(widths) < GROUPS or any(w % GROUPS for w in widths):
            raise ValueError(
                f"MaskGIT VQ widths {widths} (filters × channel_multipliers) must be positive "
                f"multiples of {GROUPS} (GroupNorm's groups)"
            )
        if min(self.res_blocks, self.embedding_dim, self.codebook_size, self.image_channels) < 1:
            raise ValueError(f"MaskGIT VQ sizes must be positive, got {self}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)

    def widths(self) -> list[int]:
        return [self.filters * m for m in self.channel_multipliers]

    def to_dict(self) -> dict:
        return {**asdict(self), "channel_multipliers": list(self.channel_multipliers)}

    @classmethod
    def from_dict(cls, values: dict) -> MaskGITVQConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MaskGIT VQ settings {unknown}; allowed: {sorted(known)}")
        return cls(**values)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=EPS)


def _conv(c_in: int, c_out: int, kernel: int, bias: bool) -> nn.Conv2d:
    # Flax "SAME" padding: symmetric for odd kernels at stride 1 (the only kind used here)
    return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=bias)


class ResBlock(nn.Module):
    """GroupNorm → swish → 3×3 conv, twice (no biases); a 1×1 skip conv where the width changes."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), _conv(c_in, c_out, 3, bias=False)
        self.norm2, self.conv2 = _norm(c_out), _conv(c_out, c_out, 3, bias=False)
        self.shortcut = _conv(c_out, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        # MaskGIT's block: the width-changing skip convolves the branch output (see module doc)
        return h + (self.shortcut(h) if self.shortcut is not None else x)


def _blocks(c_in: int, c_out: int, count: int) -> nn.ModuleList:
    return nn.ModuleList(ResBlock(c_in if i == 0 else c_out, c_out) for i in range(count))


class Encoder(nn.Module):
    def __init__(self, config: MaskGITVQConfig):
        super().__init__()
        widths, r = config.widths(), config.res_blocks
        self.conv_in = _conv(config.image_channels, config.filters, 3, bias=False)
        ins = [config.filters, *widths[:-1]]
        self.stages = nn.ModuleList(
            _blocks(c_in, c, r) for c_in, c in zip(ins, widths, strict=True)
        )
        self.mid = _blocks(widths[-1], widths[-1], r)
        self.norm_out = _norm(widths[-1])
        self.conv_out = _conv(widths[-1], config.embedding_dim, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for i, stage in enumerate(self.stages):
            for block in stage:
                x = block(x)
            if i < len(self.stages) - 1:
                x = F.avg_pool2d(x, 2)
        for block in self.mid:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class DecoderStage(nn.Module):
    """Residual blocks at one resolution, then (except at the finest) 2× nearest-neighbour
    upsampling and a 3×3 convolution."""

    def __init__(self, c_in: int, c_out: int, res_blocks: int, upsample: bool):
        super().__init__()
        self.blocks = _blocks(c_in, c_out, res_blocks)
        self.upsample = _conv(c_out, c_out, 3, bias=True) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.upsample is not None:
            x = self.upsample(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class Decoder(nn.Module):
    """Stages in the order they run, coarsest first."""

    def __init__(self, config: MaskGITVQConfig):
        super().__init__()
        widths, r = config.widths()[::-1], config.res_blocks
        self.conv_in = _conv(config.embedding_dim, widths[0], 3, bias=True)
        self.mid = _blocks(widths[0], widths[0], r)
        ins = [widths[0], *widths[:-1]]
        last = len(widths) - 1
        self.stages = nn.ModuleList(
            DecoderStage(c_in, c, r, upsample=k < last)
            for k, (c_in, c) in enumerate(zip(ins, widths, strict=True))
        )
        self.norm_out = _norm(widths[-1])
        self.conv_out = _conv(widths[-1], config.image_channels, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.mid:
            x = block(x)
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class MaskGITVQ(nn.Module):
    """The network on MaskGIT's own pixel range, [0, 1]."""

    def __init__(self, config: MaskGITVQConfig | None = None):
        super().__init__()
        self.config = config or MaskGITVQConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.codebook = nn.Parameter(
            torch.zeros(self.config.codebook_size, self.config.embedding_dim)
        )
        nn.init.uniform_(
            self.codebook, -1 / self.config.codebook_size, 1 / self.config.codebook_size
        )

    def nearest_codes(self, features: torch.Tensor) -> torch.Tensor:
        """B×D×h×w encoder features → B×h×w indices of the nearest codebook vectors (in fp32)."""
        return nearest_codes(features, self.codebook)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.nearest_codes(self.encoder(pixels))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices B×h×w → pixels B×C×H×W (not clamped)."""
        return self.decoder(self.codebook[indices].permute(0, 3, 1, 2))


class MaskGITVQTokenizer(VQTokenizerBase):
    """MaskGIT's VQGAN behind elt's tokenizer interface: images B×C×S×S in [-1, 1] ↔ token grids
    B×(S/16)×(S/16) of ints below ``codebook_size``."""

    kind = "maskgit_vq"

    def __init__(self, config: MaskGITVQConfig | None = None, image_size: int = 256):
        vq = MaskGITVQ(config)
        super().__init__(
            image_size, vq.config.image_channels, vq.config.downsample, "MaskGIT VQ model"
        )
        self.vq = vq

    @classmethod
    def from_folder(
        cls, path: str | Path, image_size: int, weights: bool = True
    ) -> MaskGITVQTokenizer:
        """A folder :func:`convert_maskgit` wrote; ``weights=False``: the architecture only."""
        config = read_folder_config(path)
        tokenizer = cls(config, image_size)
        if weights:
            from elt.fileio import load_safetensors

            state = load_safetensors(Path(path) / WEIGHTS_FILE, "MaskGIT VQ weights")
            check_state(state, tokenizer.vq, str(Path(path) / WEIGHTS_FILE))
            tokenizer.vq.load_state_dict(state)
        return tokenizer.eval()

    @property
    def codebook(self) -> torch.Tensor:
        return self.vq.codebook

    @property
    def codebook_size(self) -> int:
        return self.vq.config.codebook_size

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images B×C×S×S in [-1, 1] → nearest-codebook indices B×h×w."""
        self.check_images(images)
        return self.vq.encode((images + 1) / 2)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices B×h×w → images B×C×S×S in [-1, 1] (MaskGIT's [0, 1] output, clamped)."""
        self.check_indices(indices)
        return self.vq.decode(indices).clamp(0, 1) * 2 - 1

    def _count_decode_gflops(self) -> float:
        from elt.tokenizers.fsq import count_gflops

        features = torch.zeros(1, self.vq.config.embedding_dim, *self.token_grid)
        return count_gflops(self.vq.decoder, features)


# ---- the two published weight layouts ---------------------------------------------------------


# a residual block's parts: elt name → Flax auto-name / PyTorch-port attribute
_FLAX_BLOCK = {
    "norm1": "GroupNorm_0",
    "conv1": "Conv_0",
    "norm2": "GroupNorm_1",
    "conv2": "Conv_1",
    "shortcut": "Conv_2",
}
_PORT_BLOCK = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2"}
_PORT_BLOCK["shortcut"] = "nin_shortcut"


def _module_names(config: MaskGITVQConfig, flax: bool) -> dict[str, str]:
    """elt module path → source module path, for every module holding parameters.

    Flax names come from ``nn.compact`` auto-naming in the published code (``Conv_i``,
    ``ResBlock_i``, ``GroupNorm_i`` numbered per type in call order; the decoder's upsampling
    convolutions number between its first and last conv). PyTorch-port names follow
    1d-tokenizer's ``maskgit_vqgan.py`` (``up`` indexed by resolution level, finest first)."""
    levels, r = len(config.channel_multipliers), config.res_blocks
    sep = "/" if flax else "."
    names = {}

    def blocks(ours: str, theirs: str):
        for part, source_part in (_FLAX_BLOCK if flax else _PORT_BLOCK).items():
            names[f"{ours}.{part}"] = f"{theirs}{sep}{source_part}"

    if flax:
        names["encoder.conv_in"] = "encoder/Conv_0"
        for i in range(levels):
            for j in range(r):
                blocks(f"encoder.stages.{i}.{j}", f"encoder/ResBlock_{i * r + j}")
        for j in range(r):
            blocks(f"encoder.mid.{j}", f"encoder/ResBlock_{levels * r + j}")
        names["encoder.norm_out"] = "encoder/GroupNorm_0"
        names["encoder.conv_out"] = "encoder/Conv_1"
        names["decoder.conv_in"] = "decoder/Conv_0"
        for j in range(r):
            blocks(f"decoder.mid.{j}", f"decoder/ResBlock_{j}")
        for k in range(levels):
            for j in range(r):
                blocks(f"decoder.stages.{k}.blocks.{j}", f"decoder/ResBlock_{r + k * r + j}")
            if k < levels - 1:
                names[f"decoder.stages.{k}.upsample"] = f"decoder/Conv_{k + 1}"
        names["decoder.norm_out"] = "decoder/GroupNorm_0"
        names["decoder.conv_out"] = f"decoder/Conv_{levels}"
        return names
    for side in ("encoder", "decoder"):
        for part in ("conv_in", "norm_out", "conv_out"):
            names[f"{side}.{part}"] = f"{side}{sep}{part}"
        for j in range(r):
            blocks(f"{side}.mid.{j}", f"{side}.mid.{j}")
    for i in range(levels):
        for j in range(r):
            blocks(f"encoder.stages.{i}.{j}", f"encoder.down.{i}.block.{j}")
    for k in range(levels):
        level = levels - 1 - k
        for j in range(r):
            blocks(f"decoder.stages.{k}.blocks.{j}", f"decoder.up.{level}.block.{j}")
        if level > 0:
            names[f"decoder.stages.{k}.upsample"] = f"decoder.up.{level}.upsample_conv"
    return names


def source_names(module: MaskGITVQ, layout: str) -> dict[str, tuple[str, str]]:
    """elt parameter name → (source tensor name, how it is stored: conv | vector | same), in the
    module's own order. ``layout``: ``flax`` (names joined by ``/``, without the ``params``
    collection) or ``torch``."""
    flax = layout == "flax"
    modules = _module_names(module.config, flax)
    mapping = {}
    for name in module.state_dict():
        if name == "codebook":
            mapping[name] = ("quantizer/codebook" if flax else "quantize.embedding.weight", "same")
            continue
        owner, _, leaf = name.rpartition(".")
        source = modules[owner]
        if not flax:
            mapping[name] = (f"{source}.{leaf}", "same")
        elif leaf == "bias":
            mapping[name] = (f"{source}/bias", "vector")
        elif "norm" in owner.rpartition(".")[2]:
            mapping[name] = (f"{source}/scale", "vector")
        else:
            mapping[name] = (f"{source}/kernel", "conv")
    return mapping


def _source_shape(shape: torch.Size, how: str) -> tuple[int, ...]:
    if how == "conv":  # PyTorch OIHW ← Flax HWIO
        o, i, h, w = shape
        return h, w, i, o
    return tuple(shape)


def _to_module_layout(value: np.ndarray | torch.Tensor, how: str) -> torch.Tensor:
    if torch.is_tensor(value):
        tensor = value.float()
    else:  # a copy: arrays read from msgpack are views of the (read-only) file bytes
        tensor = torch.from_numpy(np.array(value, dtype=np.float32))
    if how == "conv":
        tensor = tensor.permute(3, 2, 0, 1)
    return tensor.contiguous()


def map_state(
    tensors: dict, module: MaskGITVQ, layout: str, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The module's state dict from a flat dict of source tensors; the first missing or misshapen
    tensor (in the module's order) is a one-line :class:`MaskGITCheckpointError`."""
    state, ours = {}, module.state_dict()
    for name, (theirs, how) in source_names(module, layout).items():
        expected = _source_shape(ours[name].shape, how)
        if theirs not in tensors:
            raise MaskGITCheckpointError(
                f"MaskGIT {layout} checkpoint {source!r} lacks tensor {theirs} (expected shape "
                f"{expected}); is it MaskGIT's VQGAN tokenizer?"
            )
        found = tuple(getattr(tensors[theirs], "shape", ()))
        if found != expected or not hasattr(tensors[theirs], "shape"):
            raise MaskGITCheckpointError(
                f"MaskGIT {layout} checkpoint {source!r}: tensor {theirs} has shape {found}, "
                f"expected {expected}"
            )
        state[name] = _to_module_layout(tensors[theirs], how)
    return state


def check_state(state: dict, module: MaskGITVQ, source: str) -> None:
    """A converted folder's weights against the architecture its config.json names."""
    for name, value in module.state_dict().items():
        if name not in state:
            raise MaskGITCheckpointError(f"{source!r} lacks tensor {name}")
        if tuple(state[name].shape) != tuple(value.shape):
            raise MaskGITCheckpointError(
                f"{source!r}: tensor {name} has shape {tuple(state[name].shape)}, expected "
                f"{tuple(value.shape)}"
            )


# ---- reading the files --------------------------------------------------------------------------

_NDARRAY, _NPSCALAR = 1, 3  # flax.serialization's msgpack extension type codes


def _decode_array(data: bytes) -> np.ndarray:
    import msgpack

    shape, dtype, buffer = msgpack.unpackb(data, raw=True)
    name = dtype.decode() if isinstance(dtype, bytes) else dtype
    if name == "bfloat16":  # jax's dtype: no numpy equivalent; its bits are float32's top half
        bits = np.frombuffer(buffer, dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(buffer, dtype=np.dtype(name)).reshape(shape)


def _ext_hook(code: int, data: bytes):
    import msgpack

    if code == _NDARRAY:
        return _decode_array(data)
    if code == _NPSCALAR:
        return _decode_array(data)[()]
    return msgpack.ExtType(code, data)


def _unchunk(tree):
    """flax splits arrays over 1 GiB into ``{"__msgpack_chunked_array__": True, "shape": {...},
    "chunks": {...}}`` (tuples stored as dicts keyed "0", "1", ...)."""
    if not isinstance(tree, dict):
        return tree
    if tree.get("__msgpack_chunked_array__"):
        shape = [tree["shape"][str(i)] for i in range(len(tree["shape"]))]
        chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
        return np.concatenate(chunks).reshape(shape)
    return {key: _unchunk(value) for key, value in tree.items()}


def read_flax_msgpack(path: str | Path) -> dict:
    """A ``flax.serialization.to_bytes`` / ``flax.training.checkpoints`` file as a nested dict of
    numpy arrays, with msgpack alone."""
    try:
        import msgpack
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading MaskGIT's Flax checkpoint needs msgpack: pip install 'elt-looped[pretrained]'"
        ) from exc
    data = Path(path).read_bytes()
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except Exception as exc:
        raise InputFileError(
            f"{str(path)!r} is not a Flax msgpack checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(tree, dict):
        raise InputFileError(f"{str(path)!r} is not a Flax checkpoint (no parameter tree)")
    return _unchunk(tree)


def flatten_flax(tree: dict) -> dict[str, np.ndarray]:
    """The tokenizer's parameters as ``encoder/Conv_0/kernel`` → array. The tree may be the
    released variables dict (``{"params": {...}}``), a train state holding ``params``, or the
    parameters themselves."""
    while isinstance(tree, dict) and "encoder" not in tree:
        inner = tree.get("params", tree.get("target"))
        if not isinstance(inner, dict):
            break
        tree = inner
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(value, name)
            else:
                flat[name] = value

    walk(tree, "")
    return flat


def read_torch_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save`` (tensors only: loaded with ``weights_only=True``) or
    as safetensors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from elt.fileio import load_safetensors

        return load_safetensors(path, "PyTorch MaskGIT VQ weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputFileError(
            f"{str(path)!r} is not a PyTorch state dict of tensors ({first[:160]})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputFileError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict")
    return state


def checkpoint_layout(path: str | Path) -> str:
    """``torch`` (a torch.save zip or pickle, or safetensors) or ``flax`` (msgpack), from the
    file's first bytes."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"MaskGIT checkpoint {str(path)!r} not found")
    if path.suffix == ".safetensors" or zipfile.is_zipfile(path):
        return "torch"
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a legacy (non-zip) torch.save pickle
    if head[:1] and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return "flax"  # a msgpack map
    raise InputFileError(
        f"{str(path)!r} is neither a Flax msgpack checkpoint nor a PyTorch state dict"
    )


def infer_config(tensors: dict, layout: str, source: str = "checkpoint") -> MaskGITVQConfig:
    """Width, code size and count, and image channels read from the first conv and the codebook;
    depth (stages, blocks per stage, multipliers) is the released model's."""
    conv, codebook = (
        ("encoder/Conv_0/kernel", "quantizer/codebook")
        if layout == "flax"
        else ("encoder.conv_in.weight", "quantize.embedding.weight")
    )
    for name, ndim in ((conv, 4), (codebook, 2)):
        if name not in tensors:
            raise MaskGITCheckpointError(
                f"MaskGIT {layout} checkpoint {source!r} lacks tensor {name}; is it MaskGIT's "
                "VQGAN tokenizer?"
            )
        if len(tensors[name].shape) != ndim:
            raise MaskGITCheckpointError(
                f"MaskGIT {layout} checkpoint {source!r}: tensor {name} has shape "
                f"{tuple(tensors[name].shape)}, expected {ndim} axes"
            )
    shape = tuple(tensors[conv].shape)
    channels, filters = (shape[2], shape[3]) if layout == "flax" else (shape[1], shape[0])
    size, dim = tuple(tensors[codebook].shape)
    try:
        return MaskGITVQConfig(
            filters=filters, embedding_dim=dim, codebook_size=size, image_channels=channels
        )
    except ValueError as exc:
        raise MaskGITCheckpointError(f"MaskGIT checkpoint {source!r}: {exc}") from None


def load_maskgit_checkpoint(
    path: str | Path, config: MaskGITVQConfig | None = None
) -> tuple[MaskGITVQ, str]:
    """MaskGIT's VQGAN with the weights of a released Flax checkpoint or of the PyTorch port
    (detected from the file), and which of the two it was. ``config``: the architecture (default:
    the released depth at the width and codebook the checkpoint holds)."""
    layout = checkpoint_layout(path)
    if layout == "flax":
        tensors = flatten_flax(read_flax_msgpack(path))
    else:
        tensors = read_torch_state(path)
    config = config or infer_config(tensors, layout, str(path))
    model = MaskGITVQ(config)
    model.load_state_dict(map_state(tensors, model, layout, str(path)))
    return model.eval(), layout


def convert_maskgit(
    source: str | Path,
    out: str | Path,
    config: MaskGITVQConfig | None = None,
    replace: bool = False,
) -> Path:
    """Convert a MaskGIT VQGAN checkpoint (either layout) into an elt folder (written atomically:
    nothing appears under ``out`` unless the whole conversion succeeded)."""
    from safetensors.torch import save_file

    from elt.data.cache import state_dict_hash
    from elt.fileio import atomic_dir

    model, layout = load_maskgit_checkpoint(source, config)
    meta = {
        "format": FOLDER_FORMAT,
        "kind": MaskGITVQTokenizer.kind,
        "architecture": model.config.to_dict(),
        "pixel_range": [0, 1],
        "source": {"path": str(Path(source).resolve()), "layout": layout},
        "hash": state_dict_hash(model),
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(out, replace=replace) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)


def read_folder_config(path: str | Path) -> MaskGITVQConfig:
    folder = Path(path)
    config_file = folder / CONFIG_FILE
    if folder.is_file():
        raise InputFileError(
            f"tokenizer.pretrained_path={str(folder)!r} is a file; convert it first: elt tokenizer "
            f"convert-maskgit {folder} FOLDER, then set tokenizer.pretrained_path=FOLDER"
        )
    if not config_file.is_file():
        raise FileNotFoundError(
            f"no MaskGIT VQ folder at {str(folder)!r} (expected {config_file}); write one with "
            "elt tokenizer convert-maskgit CHECKPOINT FOLDER"
        )
    try:
        meta = json.loads(config_file.read_text())
        if meta.get("format") != FOLDER_FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, not {FOLDER_FORMAT!r}")
        return MaskGITVQConfig.from_dict(meta["architecture"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputFileError(
            f"{str(config_file)!r} is not an elt MaskGIT VQ config ({exc}); rewrite the folder "
            "with elt tokenizer convert-maskgit"
        ) from None
