"""Typed configuration: dataclasses validated by OmegaConf, YAML files, dotted overrides.

Precedence (later wins): dataclass defaults ← ``model.preset`` ← YAML file ← ``key=value``
overrides. Unknown keys are errors that name the key and the closest valid one.

This module owns the sections every paradigm shares: ``model``, ``ilsd``, ``data``, ``tokenizer``,
``sampling``, and for training ``train`` (the run), ``optimizer``, ``lr_schedule``, ``distributed``,
``checkpoint`` and ``logging``. Each paradigm adds its own section, named after it, by registering
it in :mod:`elt.registry` with the section's keys, checks and choices, so the config knows no
paradigm by name. A config saved in a checkpoint by an earlier version is read with its renamed
keys moved to their new places (:data:`RENAMED_KEYS`); in a user's YAML or override an old key is an
unknown key whose message names the new one."""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from elt import registry
from elt.core.ilsd import LAMBDA_SCHEDULES, MODES
from elt.errors import ConfigError, UserError
from elt.limits import (
    MAX_BATCH,
    MAX_FRAMES,
    MAX_IMAGE_SIZE,
    MAX_LOOPS,
    MAX_SAMPLING_STEPS,
    MAX_SEED,
    MAX_TRAIN_STEPS,
    MAX_WIDTH,
    Any_,
    Choice,
    Flag,
    Floats,
    Int,
    Ints,
    Range,
    Text,
    check_memory,
    host_memory_bytes,
    loop_ceiling,
    transformer_parameters,
)
from elt.presets import parse_preset
from elt.runtime import PRECISIONS

CONFIG_DIR = Path(__file__).parent / "configs"
LR_SCHEDULES = ("constant", "cosine", "linear")  # lr_schedule.kind
CHECKPOINT_FORMATS = ("auto", "full", "dcp")  # checkpoint.format
WEIGHT_DECAY_GROUPS = (
    "bias",
    "norm",
    "embedding",
)  # optimizer.weight_decay_exempt (elt.train.optim)


@dataclass
class ModelConfig:
    preset: str | None = None  # e.g. "ELT-S-4x3"; sets width/heads/unique_layers/loops
    width: int = 256
    heads: int = 4
    unique_layers: int = 4
    loops: int = 3  # L_max: the trained loop count and the default at sampling
    mlp_ratio: float = 4.0
    loop_embedding: bool = False  # not in the paper
    loop_norm: bool = False  # not in the paper
    input_injection: bool = (
        False  # re-inject the loop input at every loop (recurrent-depth models; not in the paper)
    )
    checkpoint_loops: bool = False  # activation checkpointing per loop (memory flat in L)
    class_dropout: float = 0.1  # label dropout for classifier-free guidance
    # training dropout of each block's residual branches (MaskGIT/MAGVIT: 0.1; not in the paper)
    dropout: float = 0.0
    attention_dropout: float = (
        0.0  # training dropout of attention probabilities (MaskGIT/MAGVIT: 0.1)
    )


@dataclass
class ILSDConfig:
    mode: str = "ilsd"  # ilsd | vanilla | unique
    min_student_loops: int = 1
    lambda_schedule: str = "linear"  # linear | cosine | constant
    lambda_start: float = 1.0
    lambda_end: float = 0.0


@dataclass
class DataConfig:
    name: str = "fashion_mnist"  # fashion_mnist | folder | moving_fmnist | ucf101
    root: str | None = None  # None: $ELT_DATA, then the Debian dataset path
    # null: inferred by elt.data.shape.resolve_data_config (data.name=folder: from the images)
    image_size: int | None = 32
    channels: int | None = 1
    num_classes: int | None = 10
    class_names: list[str] | None = None  # label order; null: the folder names / dataset's names
    hflip: bool = False
    num_workers: int = 0
    limit: int | None = None  # use only the first N training items (quick runs, tests)
    frames: int = 0  # 0: images; > 0: clips of this many frames (moving_fmnist, ucf101)
    frame_stride: int = 1  # ucf101: take every k-th frame of the video
    motion: str = "bounce"  # moving_fmnist: bounce | linear
    sprite_size: int = 28  # moving_fmnist: side of the pasted garment (28 = native pixels)
    fold: int = 1  # ucf101: official train/test split 1..3
    video_seed: int = (
        0  # moving_fmnist: which set of trajectories; ucf101: training clips' start frames
    )


@dataclass
class TrainConfig:
    """The run: how long, how large a batch, where and with what numerics."""

    steps: int = 2000
    # the global batch: all processes together (each loads batch_size / world_size)
    batch_size: int = 128
    # micro-batches per optimizer step (each rank loads batch_size / world / this)
    grad_accum_steps: int = 1
    # per-rank micro-batch; > 0 derives grad_accum_steps = batch_size / (world · this)
    micro_batch_size: int = 0
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere) | fp32 | bf16
    compile: bool = False  # torch.compile each looped block once (reused by every loop)
    tf32: bool = True  # TF32 matmuls/convolutions for fp32 work on CUDA
    threads: int = 0  # torch CPU threads (0: the global setting, see elt.runtime.set_threads)
    out_dir: str = "runs/default"


@dataclass
class OptimizerConfig:
    """AdamW (:mod:`elt.train.optim`)."""

    lr: float = 3e-4  # the peak learning rate (after warm-up)
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    # of bias | norm | embedding: parameters of these kinds get no weight decay (MAGVIT)
    weight_decay_exempt: list[str] = field(default_factory=list)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)


@dataclass
class LRScheduleConfig:
    """The learning rate over the steps: a linear warm-up, then ``kind``."""

    warmup_steps: int = 100
    # after warm-up: constant | cosine | linear (decay to min_ratio·optimizer.lr at train.steps)
    kind: str = "constant"
    min_ratio: float = 0.0  # floor of the cosine/linear decay, as a fraction of optimizer.lr


@dataclass
class DistributedConfig:
    """Under torchrun: how the model is spread over the processes."""

    strategy: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard, for large widths)
    # fsdp: block (each unique block its own unit) | backbone (the looped core as one)
    fsdp_unit: str = "block"
    # fsdp blocks: free each gather after every loop (False: reuse it)
    fsdp_reshard_after_forward: bool = True
    find_unused_parameters: bool = False  # DDP: set if some parameters get no gradient in a step
    timeout_s: float = 600.0  # how long a collective may wait before the run fails


@dataclass
class CheckpointConfig:
    """When and how a run saves itself (RUN/checkpoints/)."""

    every: int = 0  # steps between checkpoints (0: only at the end)
    # auto: dcp under FSDP, full otherwise | full (gathered optimizer in state.pt) | dcp (every rank
    # writes its shards of weights, optimizer, EMA to sharded/ via torch.distributed.checkpoint;
    # resumes on any process count)
    format: str = "auto"
    keep: int = 3  # newest checkpoints kept (0: all)
    handle_signals: bool = True  # SIGTERM/SIGINT: checkpoint at the next step boundary, then stop


@dataclass
class LoggingConfig:
    """What a run reports while it trains: metrics and periodic sample grids."""

    every: int = 50  # steps between metric lines
    sample_every: int = 0  # steps between sample grids (0: only at the end)
    sample_loops: list[int] = field(
        default_factory=list
    )  # loop counts in the grids ([] = 1..L_max)
    samples_per_class: int = 1
    # classes in the grids, evenly spaced (0: all; every rank draws a share)
    grid_classes: int = 16
    # RUN/tensorboard if tensorboard is installed (else skipped); RUN/log.jsonl always
    tensorboard: bool = True
    wandb: bool = False  # also log to Weights & Biases (if installed)
    wandb_project: str = "elt"
    peak_tflops: float = 0.0  # device peak for the MFU estimate (0: built-in table; n/a if unknown)


@dataclass
class TokenizerConfig:
    # fsq (trainable here) | fsq3d (videos, trainable here) | pretrained_vq (diffusers VQModel) |
    # maskgit_vq (MaskGIT's VQGAN, a folder written by `elt tokenizer convert-maskgit`)
    kind: str = "fsq"
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # FSQ levels: 1000 codes
    downsample: int = 4  # 32×32 images → 8×8 tokens
    temporal_downsample: int = 4  # fsq3d: 16 frames → 4 latent frames
    channels: int = (
        64  # width of the FSQ encoder/decoder at the token grid (halved per upsampling stage)
    )
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100  # then cosine decay to lr/10
    eval_items: int = 10000  # test images used for the reported PSNR/MSE (0: skip the report)
    path: str | None = (
        None  # where the trained tokenizer is saved / looked for (None: RUN/tokenizer)
    )
    pretrained_path: str | None = (
        None  # pretrained_vq: local diffusers VQModel folder; maskgit_vq: converted MaskGIT folder
    )
    encode_batch_size: int = 256  # images per batch when encoding the dataset into the token cache


TOKENIZER_KINDS = ("fsq", "fsq3d", "pretrained_vq", "maskgit_vq")
# kinds loaded from tokenizer.pretrained_path (never trained by elt)
PRETRAINED_TOKENIZER_KINDS = ("pretrained_vq", "maskgit_vq")


@dataclass
class SamplingConfig:
    """How a trained model samples, the same words in every paradigm (``null``: the paradigm's
    default, ``SAMPLING_DEFAULTS`` of its config class)."""

    steps: int | None = None  # sampling steps (decoding or denoising steps)
    # classifier-free guidance scale s: output = uncond + s·(cond − uncond); 1 = conditional only
    # (no unconditional pass), 0 = unconditional
    guidance: float | None = None
    precision: str | None = None  # fp32 | bf16 | auto (bf16 on CUDA)
    compile: bool = (
        False  # torch.compile each fixed-loop sampling step, once per batch and loop count
    )
    # default operating point (elt.core.schedule): an int, a schedule string ("4:1", "1x6+4x6"), a
    # per-step list, or an adaptive exit ("exit:0.05"); null = L_max at every step
    loops: Any = None


@dataclass
class BaseConfig:
    paradigm: str = registry.DEFAULT_PARADIGM  # a registered paradigm (elt.registry.paradigms)
    model: ModelConfig = field(default_factory=ModelConfig)
    ilsd: ILSDConfig = field(default_factory=ILSDConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


DATASETS = ("fashion_mnist", "folder", "moving_fmnist", "ucf101")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
MAX_CLASSES = 100_000  # ImageNet-21k has 21 841

# One rule per field of every shared section (a paradigm's section: the ``RULES`` of its config
# class), checked by :func:`validate` when a config is loaded, before any file is written or data
# read. Relations between fields (width divisible by heads, video fields together, ...) follow in
# :func:`validate`.
RULES = {
    "paradigm": Any_("validate: a registered paradigm"),
    "model.preset": Any_("load_config: parse_preset"),
    "model.width": Int(1, MAX_WIDTH),
    "model.heads": Int(1, MAX_WIDTH),
    "model.unique_layers": Int(1, 1024),
    "model.loops": Int(1, MAX_LOOPS),
    "model.mlp_ratio": Range(0, 64, lo_open=True),
    "model.loop_embedding": Flag(),
    "model.loop_norm": Flag(),
    "model.input_injection": Flag(),
    "model.checkpoint_loops": Flag(),
    "model.class_dropout": Range(0, 1, hi_open=True),
    "model.dropout": Range(0, 1, hi_open=True),
    "model.attention_dropout": Range(0, 1, hi_open=True),
    "ilsd.mode": Choice(*MODES),
    "ilsd.min_student_loops": Int(1, MAX_LOOPS),
    "ilsd.lambda_schedule": Choice(*LAMBDA_SCHEDULES),
    "ilsd.lambda_start": Range(0, 1),
    "ilsd.lambda_end": Range(0, 1),
    "data.name": Choice(*DATASETS),
    "data.root": Text(),
    "data.image_size": Int(1, MAX_IMAGE_SIZE),
    "data.channels": Int(1, 16),
    "data.num_classes": Int(2, MAX_CLASSES),
    "data.class_names": Any_("validate: distinct non-empty names, one per class"),
    "data.hflip": Flag(),
    "data.num_workers": Int(0, 1024),
    "data.limit": Int(1),
    "data.frames": Int(0, MAX_FRAMES),
    "data.frame_stride": Int(1, 1024),
    "data.motion": Choice("bounce", "linear"),
    "data.sprite_size": Int(1, MAX_IMAGE_SIZE),
    "data.fold": Int(1, 3),
    "data.video_seed": Int(0),
    "train.steps": Int(1, MAX_TRAIN_STEPS),
    "train.batch_size": Int(1, MAX_BATCH),
    "train.grad_accum_steps": Int(1, MAX_BATCH),
    "train.micro_batch_size": Int(0, MAX_BATCH),
    "train.ema_decay": Range(0, 1, hi_open=True),
    "train.seed": Any_("check_seed"),
    "train.device": Any_("validate: auto, cpu, cuda, cuda:N or mps"),
    "train.precision": Choice("auto", "fp32", "bf16"),
    "train.compile": Flag(),
    "train.tf32": Flag(),
    "train.threads": Int(0, 4096),
    "train.out_dir": Text(),
    "optimizer.lr": Range(0, lo_open=True),
    "optimizer.weight_decay": Range(0),
    "optimizer.betas": Floats(2, 0.0, 1.0),
    "optimizer.weight_decay_exempt": Any_("validate: any of bias, norm, embedding"),
    "optimizer.grad_clip": Range(0),
    "lr_schedule.warmup_steps": Int(0, MAX_TRAIN_STEPS),
    "lr_schedule.kind": Choice(*LR_SCHEDULES),
    "lr_schedule.min_ratio": Range(0, 1),
    "distributed.strategy": Choice("ddp", "fsdp"),
    "distributed.fsdp_unit": Choice("block", "backbone"),
    "distributed.fsdp_reshard_after_forward": Flag(),
    "distributed.find_unused_parameters": Flag(),
    "distributed.timeout_s": Range(0, 7 * 24 * 3600, lo_open=True),
    "checkpoint.every": Int(0, MAX_TRAIN_STEPS),
    "checkpoint.format": Choice(*CHECKPOINT_FORMATS),
    "checkpoint.keep": Int(0, 1_000_000),
    "checkpoint.handle_signals": Flag(),
    "logging.every": Int(1, MAX_TRAIN_STEPS),
    "logging.sample_every": Int(0, MAX_TRAIN_STEPS),
    "logging.sample_loops": Any_("validate: 1..the loop ceiling of model.loops"),
    "logging.samples_per_class": Int(1, 1000),
    "logging.grid_classes": Int(0, MAX_CLASSES),
    "logging.tensorboard": Flag(),
    "logging.wandb": Flag(),
    "logging.wandb_project": Text(),
    "logging.peak_tflops": Range(0),
    "tokenizer.kind": Choice(*TOKENIZER_KINDS),
    "tokenizer.levels": Ints(2, 2**16, min_len=1, max_len=16),
    "tokenizer.downsample": Int(1, MAX_IMAGE_SIZE),
    "tokenizer.temporal_downsample": Int(1, MAX_FRAMES),
    "tokenizer.channels": Int(1, MAX_WIDTH),
    "tokenizer.steps": Int(1, MAX_TRAIN_STEPS),
    "tokenizer.batch_size": Int(1, MAX_BATCH),
    "tokenizer.lr": Range(0, lo_open=True),
    "tokenizer.warmup_steps": Int(0, MAX_TRAIN_STEPS),
    "tokenizer.eval_items": Int(0),
    "tokenizer.path": Text(),
    "tokenizer.pretrained_path": Text(),
    "tokenizer.encode_batch_size": Int(1, MAX_BATCH),
    "sampling.steps": Int(1, MAX_SAMPLING_STEPS),
    "sampling.guidance": Range(),
    "sampling.precision": Choice(*PRECISIONS),
    "sampling.compile": Flag(),
    "sampling.loops": Any_("validate: an operating point within the loop ceiling"),
}


def config_rules() -> dict:
    """The rule of every field: the shared sections' and each registered paradigm's (``RULES`` of
    its config class, keys without the section name)."""
    rules = dict(RULES)
    for name, paradigm in registry.paradigms().items():
        for key, rule in (getattr(paradigm.config, "RULES", None) or {}).items():
            rules[f"{name}.{key}"] = rule
    return rules


_SCHEMAS: dict[tuple, type] = {}


def resolved_checkpoint_format(cfg: DictConfig, sharded: bool) -> str:
    """``checkpoint.format`` with ``auto`` decided: ``dcp`` for a sharded (FSDP) run, else
    ``full``."""
    chosen = str(OmegaConf.select(cfg, "checkpoint.format", default="auto"))
    return ("dcp" if sharded else "full") if chosen == "auto" else chosen


def config_schema() -> type:
    """The full config dataclass: the shared sections plus one section per registered paradigm."""
    sections = tuple(
        (name, p.config) for name, p in registry.paradigms().items() if p.config is not None
    )
    if sections not in _SCHEMAS:
        _SCHEMAS[sections] = make_dataclass(
            "Config",
            [(name, section, field(default_factory=section)) for name, section in sections],
            bases=(BaseConfig,),
        )
    return _SCHEMAS[sections]


_STRUCTURED: dict[type, DictConfig] = {}


def _structured(schema: type) -> DictConfig:
    """The schema's defaults as a typed config, built once (OmegaConf.merge copies it, never changes
    it)."""
    if schema not in _STRUCTURED:
        _STRUCTURED[schema] = OmegaConf.structured(schema)
    return _STRUCTURED[schema]


# Where the keys of configs saved by earlier versions live now: old dotted key -> (new dotted key,
# conversion of the value or None). A checkpoint's config.yaml is migrated when it is read
# (:func:`migrate_saved_config`); in a user's YAML or override an old key is an unknown key (its
# message names the new one). A paradigm adds its own section's renames (``RENAMED_KEYS`` of its
# config class, keys without the section name).
RENAMED_KEYS: dict[str, tuple[str, Any]] = {
    f"train.{old}": (new, None)
    for old, new in {
        "lr": "optimizer.lr",
        "weight_decay": "optimizer.weight_decay",
        "betas": "optimizer.betas",
        "weight_decay_exempt": "optimizer.weight_decay_exempt",
        "grad_clip": "optimizer.grad_clip",
        "warmup_steps": "lr_schedule.warmup_steps",
        "lr_schedule": "lr_schedule.kind",
        "min_lr_ratio": "lr_schedule.min_ratio",
        "distributed": "distributed.strategy",
        "fsdp_unit": "distributed.fsdp_unit",
        "fsdp_reshard_after_forward": "distributed.fsdp_reshard_after_forward",
        "find_unused_parameters": "distributed.find_unused_parameters",
        "dist_timeout_s": "distributed.timeout_s",
        "checkpoint_every": "checkpoint.every",
        "checkpoint_format": "checkpoint.format",
        "keep_checkpoints": "checkpoint.keep",
        "handle_signals": "checkpoint.handle_signals",
        "log_every": "logging.every",
        "sample_every": "logging.sample_every",
        "sample_loops": "logging.sample_loops",
        "samples_per_class": "logging.samples_per_class",
        "grid_classes": "logging.grid_classes",
        "tensorboard": "logging.tensorboard",
        "wandb": "logging.wandb",
        "wandb_project": "logging.wandb_project",
        "peak_tflops": "logging.peak_tflops",
    }.items()
}


def renamed_keys() -> dict[str, tuple[str, Any, str | None]]:
    """Every renamed key: old -> (new, conversion or None, the paradigm whose section held it or
    None); the shared sections' :data:`RENAMED_KEYS` and each registered paradigm's."""
    renames = {old: (new, convert, None) for old, (new, convert) in RENAMED_KEYS.items()}
    for name, paradigm in registry.paradigms().items():
        for key, (new, convert) in (getattr(paradigm.config, "RENAMED_KEYS", None) or {}).items():
            renames[f"{name}.{key}"] = (new, convert, name)
    return renames


def migrate_saved_config(data: dict) -> dict:
    """A config saved by an earlier version (a plain dict, changed in place and returned) with its
    renamed keys moved to their new places. A paradigm's old keys move only when it is the config's
    paradigm (a saved config holds every paradigm's section); the others are dropped. A new key
    already set wins over its old name."""
    paradigm = data.get("paradigm", BaseConfig.paradigm)
    for old, (new, convert, owner) in renamed_keys().items():
        section, key = old.split(".")
        values = data.get(section)
        if not isinstance(values, dict) or key not in values:
            continue
        value = values.pop(key)
        if owner is not None and owner != paradigm:
            continue
        new_section, new_key = new.split(".")
        target = data.setdefault(new_section, {})
        if isinstance(target, dict) and target.get(new_key) is None and value is not None:
            target[new_key] = convert(value) if convert else value
    return data


def resolve_config_path(path: str | Path) -> Path:
    """A YAML path, or the bare name of a shipped config (a file of :data:`CONFIG_DIR`, with or
    without ``.yaml``)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    for name in (candidate.name, f"{candidate.name}.yaml"):
        if (CONFIG_DIR / name).is_file():
            return CONFIG_DIR / name
    if candidate.is_dir():  # a folder of images given where the config goes
        raise ConfigError(
            f"{str(path)!r} is a folder, not a config: to train on a folder of images, give a "
            f"config and the folder, e.g. elt train folder_diffusion data.root={path} (or "
            "folder_masked)"
        )
    shipped_names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(
        f"config file {str(path)!r} not found; shipped configs: {', '.join(shipped_names)}"
    )


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> DictConfig:
    """Build a validated config from an optional YAML file and ``key=value`` overrides."""
    layers = []
    if path is not None:
        resolved = resolve_config_path(path)
        try:
            layer = OmegaConf.load(resolved)
        except Exception as exc:  # YAML syntax errors
            raise ConfigError(f"cannot read config {resolved}: {exc}".splitlines()[0]) from exc
        if not isinstance(layer, DictConfig):
            raise ConfigError(
                f"config {str(resolved)!r} holds a "
                f"{type(layer).__name__.replace('Config', '').lower()}"
                "; a config is a mapping of sections (paradigm:, model:, train:, ...)"
            )
        layers.append(layer)
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(
                    f"override {item!r} is not of the form key=value (e.g. model.loops=6)"
                )
        try:
            layers.append(_from_dotlist(overrides))
        except Exception as exc:
            raise ConfigError(
                f"cannot parse overrides {list(overrides)}: {exc}".splitlines()[0]
            ) from exc
    schema = config_schema()
    for layer in layers:
        _check_keys(OmegaConf.to_container(layer, resolve=False), schema, "")
    preset_name = None
    for layer in layers:
        preset_name = OmegaConf.select(layer, "model.preset", default=preset_name)
    base = _structured(schema)
    if preset_name:
        try:
            layers.insert(0, OmegaConf.create({"model": parse_preset(str(preset_name))}))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    try:
        cfg = OmegaConf.merge(base, *layers)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        raise ConfigError(
            f"invalid value for config key {key!r}: "
            f"{exc.msg if hasattr(exc, 'msg') else exc}".splitlines()[0]
        ) from exc
    try:
        validate(cfg)
    except (
        InterpolationResolutionError
    ) as exc:  # a ${...} that resolves to no valid value: never echo what it gave
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(
            f"config key {key!r} holds an interpolation ('${{...}}') that does not resolve to a "
            "valid "
            "value; give the value itself"
        ) from None
    return cfg


def validate(cfg: DictConfig) -> None:
    """Every field against its rule (:func:`config_rules`), then the relations between fields and a
    memory estimate of the model; one line naming the key, the value and what is allowed."""
    _choice("paradigm", cfg.paradigm, tuple(registry.paradigms()))
    for key, rule in config_rules().items():
        if OmegaConf.select(cfg, key.split(".")[0], default=None) is None and "." in key:
            continue  # a section this config layout does not have (an unregistered paradigm's)
        rule.check(key, OmegaConf.select(cfg, key, default=None))
    check_seed(cfg.train.seed, "train.seed")
    check_seed(cfg.data.video_seed, "data.video_seed")
    if not re.fullmatch(DEVICE_PATTERN, str(cfg.train.device)):
        raise ConfigError(
            f"config key 'train.device': unknown device {str(cfg.train.device)[:40]!r}; allowed: "
            "auto, "
            "cpu, cuda, cuda:N, mps"
        )
    if cfg.model.width % cfg.model.heads:
        raise ConfigError(
            f"model.width={cfg.model.width} must be divisible by model.heads={cfg.model.heads}"
        )
    if cfg.ilsd.mode == "ilsd":
        if cfg.model.loops < 2:
            raise ConfigError(
                f"ilsd.mode=ilsd needs model.loops >= 2 (got {cfg.model.loops}); "
                "use ilsd.mode=vanilla for a single loop"
            )
        if not 1 <= cfg.ilsd.min_student_loops < cfg.model.loops:
            raise ConfigError(
                f"ilsd.min_student_loops={cfg.ilsd.min_student_loops} must lie in "
                f"1..{cfg.model.loops - 1} (model.loops - 1)"
            )
    if cfg.train.micro_batch_size > cfg.train.batch_size:
        raise ConfigError(
            f"train.micro_batch_size={cfg.train.micro_batch_size} is larger than train.batch_size="
            f"{cfg.train.batch_size}"
        )
    if cfg.train.grad_accum_steps > cfg.train.batch_size:
        raise ConfigError(
            f"train.grad_accum_steps={cfg.train.grad_accum_steps} is more micro-batches than "
            f"train.batch_size={cfg.train.batch_size} has samples"
        )
    ceiling = loop_ceiling(cfg.model.loops)
    bad_loops = [
        v for v in cfg.logging.sample_loops if not isinstance(v, int) or not 1 <= v <= ceiling
    ]
    if bad_loops:
        raise ConfigError(
            f"config key 'logging.sample_loops' holds {bad_loops[:8]}; loop counts are integers in "
            f"1..{ceiling} (4·model.loops, at least 8; [] = 1..model.loops)"
        )
    _validate_sampling_loops(cfg)
    for group in cfg.optimizer.weight_decay_exempt:
        _choice("optimizer.weight_decay_exempt", group, WEIGHT_DECAY_GROUPS)
    _validate_video(cfg)
    _validate_class_names(cfg)
    registry.get_paradigm(cfg.paradigm).validate(cfg)
    if all(cfg.data[key] is not None for key in DATA_SHAPE_KEYS):
        check_model_memory(cfg)  # else checked once elt.data.shape.resolve_data_config filled them


DATA_SHAPE_KEYS = ("image_size", "channels", "num_classes")


def _validate_class_names(cfg: DictConfig) -> None:
    names = OmegaConf.select(cfg, "data.class_names", default=None)
    if names is None:
        return
    names = list(names)
    if (
        not names
        or not all(isinstance(n, str) and n.strip() and n.isprintable() for n in names)
        or len(set(names)) != len(names)
    ):
        raise ConfigError(
            f"config key 'data.class_names' holds {names[:8]}; allowed: distinct non-empty "
            "names, one per class (or null)"
        )
    count = cfg.data.num_classes
    if count is not None and len(names) != count:
        raise ConfigError(
            f"data.class_names has {len(names)} names but data.num_classes={count}; give one "
            "name per class or leave it null"
        )


def model_parameters_estimate(cfg: DictConfig) -> int:
    """A lower bound on the parameters the config's model has (blocks, position and class
    embeddings), from the shared sections alone: tokens are counted at the coarsest grid any
    paradigm uses (16 pixels per token side, or tokenizer.downsample when coarser)."""
    side = max(1, cfg.data.image_size // max(16, cfg.tokenizer.downsample))
    tokens = side * side * max(1, cfg.data.frames // max(4, cfg.tokenizer.temporal_downsample))
    return transformer_parameters(
        cfg.model.width,
        cfg.model.unique_layers,
        cfg.model.mlp_ratio,
        tokens,
        cfg.data.num_classes + 1,
    )


def check_model_memory(cfg: DictConfig, limit: int | None = None) -> None:
    """The model's fp32 weights alone must fit this machine's memory (every command builds them
    there)."""
    params = model_parameters_estimate(cfg)
    limit = host_memory_bytes() if limit is None else limit
    if 4 * params > limit:
        blocks = transformer_parameters(
            cfg.model.width, cfg.model.unique_layers, cfg.model.mlp_ratio
        )
        if blocks * 2 >= params:
            name, value = (
                "model.width",
                (
                    f"{cfg.model.width} (with model.unique_layers={cfg.model.unique_layers}, "
                    f"model.mlp_ratio={cfg.model.mlp_ratio:g})"
                ),
            )
        else:
            name, value = (
                "data.image_size",
                f"{cfg.data.image_size} (with model.width={cfg.model.width})",
            )
        check_memory(
            name,
            value,
            4 * params,
            limit,
            f"for the fp32 weights of at least {params:.3g} parameters",
        )


RAW_STRING_KEYS = ("sampling.loops",)  # YAML would read a ramp "4:1" as the base-60 integer 241


def _from_dotlist(items) -> DictConfig:
    """``key=value`` overrides as a config layer; values of :data:`RAW_STRING_KEYS` stay the text
    given."""
    items = list(items)
    raw = [i for i in items if i.split("=", 1)[0] in RAW_STRING_KEYS]
    layer = OmegaConf.from_dotlist([i for i in items if i not in raw])
    for item in raw:
        key, value = item.split("=", 1)
        OmegaConf.update(layer, key, value, force_add=True)
    return layer


def _validate_sampling_loops(cfg: DictConfig) -> None:
    from elt.core.schedule import max_loops

    loops = OmegaConf.select(cfg, "sampling.loops", default=None)
    if loops is None:
        return
    if OmegaConf.is_config(loops):
        loops = OmegaConf.to_container(loops)
    try:
        top = max_loops(loops)
    except (UserError, ValueError, TypeError) as exc:
        raise ConfigError(f"config key 'sampling.loops' is {str(loops)[:40]!r}: {exc}") from None
    if top is not None and top > loop_ceiling(cfg.model.loops):
        raise ConfigError(
            f"config key 'sampling.loops' is {str(loops)[:40]!r}: {top} loops per step; allowed: "
            "at "
            f"most {loop_ceiling(cfg.model.loops)} (4·model.loops, at least 8)"
        )


def check_seed(seed: int, name: str = "seed") -> int:
    """Seeds are integers in 0..2**63-2**32 (torch's generators take 64-bit seeds; elt adds
    offsets)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{name}={seed!r} is out of range; allowed: an integer in 0..{MAX_SEED}")
    return seed


def check_guidance(value: float | None, name: str = "guidance") -> float | None:
    """A classifier-free guidance scale is a finite number (``None``: the config's)."""
    if value is not None and not math.isfinite(float(value)):
        raise ConfigError(f"{name}={value} is not allowed; use a finite number (e.g. 0, 1.5, 3)")
    return value


def check_options(
    at_least_one: dict[str, Any] | None = None,
    not_negative: dict[str, Any] | None = None,
    seeds: dict[str, Any] | None = None,
    finite: dict[str, Any] | None = None,
) -> None:
    """Command-line numbers checked before any work: ``{"--num": 5}``-style maps per rule (``None``
    skips)."""
    for name, value in (at_least_one or {}).items():
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    for name, value in (not_negative or {}).items():
        if value is not None and value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")
    for name, value in (finite or {}).items():
        check_guidance(value, name)
    for name, value in (seeds or {}).items():
        check_seed(value, name)


VIDEO_DATASETS = ("moving_fmnist", "ucf101")


def _validate_video(cfg: DictConfig) -> None:
    """Video data fields and the fsq3d tokenizer: only meaningful together, checked here once."""
    data = cfg.data
    if data.name in VIDEO_DATASETS:
        if data.frames < 2:
            raise ConfigError(
                f"data.name={data.name} is a video dataset: set data.frames >= 2 (got "
                f"{data.frames})"
            )
    elif data.frames != 0:
        raise ConfigError(
            f"data.frames={data.frames} needs a video dataset ({', '.join(VIDEO_DATASETS)}); "
            f"data.name={data.name} has images (data.frames=0)"
        )
    if data.frame_stride < 1:
        raise ConfigError(f"config key 'data.frame_stride' must be >= 1, got {data.frame_stride}")
    _choice("data.motion", data.motion, ("bounce", "linear"))
    if (
        data.name == "moving_fmnist"
        and data.image_size is not None
        and not 1 <= data.sprite_size <= data.image_size
    ):
        raise ConfigError(
            f"data.sprite_size={data.sprite_size} must lie in 1..data.image_size={data.image_size}"
        )
    if data.fold not in (1, 2, 3):
        raise ConfigError(f"data.fold={data.fold} must be 1, 2 or 3 (the official UCF-101 splits)")
    if cfg.tokenizer.temporal_downsample < 1:
        raise ConfigError(
            f"config key 'tokenizer.temporal_downsample' must be >= 1, got "
            f"{cfg.tokenizer.temporal_downsample}"
        )
    if cfg.tokenizer.kind == "fsq3d":
        if data.frames < 2:
            raise ConfigError(
                "tokenizer.kind=fsq3d encodes videos: use a video dataset "
                f"({', '.join(VIDEO_DATASETS)})"
                f" with data.frames >= 2 (got data.name={data.name}, data.frames={data.frames})"
            )
        if data.frames % cfg.tokenizer.temporal_downsample:
            raise ConfigError(
                f"data.frames={data.frames} is not divisible by tokenizer.temporal_downsample="
                f"{cfg.tokenizer.temporal_downsample}"
            )


def to_yaml(cfg: DictConfig) -> str:
    """Plain values only (interpolations resolved): what a checkpoint stores and
    :func:`from_yaml_file` reads."""
    return OmegaConf.to_yaml(cfg, resolve=True)


# Keys a trained checkpoint may be sampled with differently from how it was configured (nothing here
# changes the architecture or the weights): the shared ``sampling:`` section's, and each paradigm's
# (``SAMPLING_KEYS`` of its config class), together :func:`sampling_keys`.
SAMPLING_KEYS = tuple(f"sampling.{f.name}" for f in fields(SamplingConfig))


def sampling_keys() -> tuple[str, ...]:
    """Every key a checkpoint may be sampled with: :data:`SAMPLING_KEYS` and the paradigms'."""
    keys = list(SAMPLING_KEYS)
    for name, paradigm in registry.paradigms().items():
        keys += [f"{name}.{key}" for key in getattr(paradigm.config, "SAMPLING_KEYS", ())]
    return tuple(keys)


def from_yaml_file(
    path: str | Path, sampling_overrides: list[str] | tuple[str, ...] = ()
) -> DictConfig:
    """Load a config saved by :func:`to_yaml` (e.g. a checkpoint's ``config.yaml``), validated, with
    optional ``key=value`` overrides of the sampling settings (:func:`sampling_keys`). Keys renamed
    since the file was written are moved to their new places (:func:`migrate_saved_config`).

    A checkpoint may come from anyone: its config must be plain values. Interpolations
    (``${oc.env:...}``, ``${other.key}``) are refused, never resolved, and every error is one line
    naming the file."""
    path = Path(path)
    schema = config_schema()
    try:
        layer = OmegaConf.load(path)
    except Exception as exc:  # YAML syntax, unreadable file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{str(path)!r} is not a valid elt config (YAML error: {reason})"
        ) from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(
            f"{str(path)!r} is not a valid elt config (expected a mapping of sections)"
        )
    try:
        data = OmegaConf.to_container(layer, resolve=False)
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"{str(path)!r} is not a valid elt config ({exc.__class__.__name__})"
        ) from None
    interpolated = _first_interpolation(data, "")
    if interpolated:
        raise ConfigError(
            f"{str(path)!r} sets {interpolated} with an interpolation ('${{...}}'); a checkpoint's "
            "config must hold plain values (interpolations are not resolved)"
        )
    data = migrate_saved_config(data)
    try:
        _check_keys(data, schema, "")
    except ConfigError as exc:
        raise ConfigError(f"{str(path)!r}: {exc}") from None
    try:
        cfg = OmegaConf.merge(_structured(schema), OmegaConf.create(data))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        raise ConfigError(
            f"{str(path)!r} has an invalid value for {key!r}: "
            f"{exc.msg if hasattr(exc, 'msg') else exc}".splitlines()[0]
        ) from None
    if sampling_overrides:
        for item in sampling_overrides:
            key = item.split("=", 1)[0]
            if "=" not in item or key not in sampling_keys():
                raise ConfigError(
                    f"cannot set {item!r} when sampling; allowed: key=value with key one of "
                    f"{', '.join(sampling_keys())}"
                )
        try:
            override = OmegaConf.to_container(_from_dotlist(sampling_overrides), resolve=False)
            if _first_interpolation(override, ""):
                raise ConfigError(
                    f"sampling overrides {list(sampling_overrides)} must be plain values"
                )
            cfg = OmegaConf.merge(cfg, OmegaConf.create(override))
        except OmegaConfBaseException as exc:
            raise ConfigError(
                f"bad sampling override {list(sampling_overrides)}: {exc}".splitlines()[0]
            ) from None
    try:
        validate(cfg)
    except UserError as exc:  # name the file: a checkpoint's config may come from anyone
        raise ConfigError(f"{str(path)!r}: {exc}") from None
    return cfg


def _first_interpolation(data: Any, prefix: str) -> str | None:
    """The dotted key of the first string value holding ``${``, or ``None``."""
    if isinstance(data, dict):
        for key, value in data.items():
            found = _first_interpolation(value, f"{prefix}{key}.")
            if found:
                return found
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found = _first_interpolation(value, f"{prefix}{index}.")
            if found:
                return found
    elif isinstance(data, str) and "${" in data:
        return prefix.rstrip(".")
    return None


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config key {key!r} is {value!r}; allowed: {', '.join(allowed)}")


def _check_keys(data: Any, schema: type, prefix: str) -> None:
    if not isinstance(data, dict):
        return
    valid = {f.name: f for f in fields(schema)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in valid:
            while (
                isinstance(value, dict) and len(value) == 1
            ):  # name the whole dotted key a user typed
                key2, value = next(iter(value.items()))
                full = f"{full}.{key2}"
            candidates = [f"{prefix}{name}" for name in valid] + list(_all_keys(schema, prefix))
            close = difflib.get_close_matches(full, candidates, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            renamed = renamed_keys().get(full)
            if renamed:
                hint = f" (renamed: use {renamed[0]!r})"
            raise ConfigError(f"unknown config key {full!r}{hint}")
        field_type = _dataclass_type(valid[key])
        if field_type is not None:
            if not isinstance(value, dict):
                raise ConfigError(
                    f"config key {full!r} is a section; give its fields, e.g. {full}.<field>=..."
                )
            _check_keys(value, field_type, f"{full}.")


def _dataclass_type(f) -> type | None:
    default_factory = f.default_factory
    if callable(default_factory):
        try:
            value = default_factory()
        except TypeError:
            return None
        if is_dataclass(value):
            return type(value)
    return None


def _all_keys(schema: type, prefix: str):
    for f in fields(schema):
        sub = _dataclass_type(f)
        if sub is None:
            yield f"{prefix}{f.name}"
        else:
            yield from _all_keys(sub, f"{prefix}{f.name}.")
