"""Typed configuration: dataclasses validated by OmegaConf, YAML files, dotted overrides.

Precedence (later wins): dataclass defaults ← ``model.preset`` ← YAML file ← ``key=value`` overrides.
Unknown keys are errors that name the key and the closest valid one.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from elt.core.ilsd import LAMBDA_SCHEDULES, MODES
from elt.diffusion.config import DiffusionConfig
from elt.errors import ConfigError
from elt.masked.config import MaskedConfig
from elt.presets import parse_preset
from elt.registry import TASK_MODULES
from elt.tokenizers.config import TokenizerConfig

CONFIG_DIR = Path(__file__).parent / "configs"


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
    checkpoint_loops: bool = False  # activation checkpointing per loop (memory flat in L)
    class_dropout: float = 0.1  # label dropout for classifier-free guidance


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
    image_size: int = 32
    channels: int = 1
    num_classes: int = 10
    hflip: bool = False
    num_workers: int = 0
    limit: int | None = None  # use only the first N training items (quick runs, tests)
    frames: int = 0  # 0: images; > 0: clips of this many frames (moving_fmnist, ucf101)
    frame_stride: int = 1  # ucf101: take every k-th frame of the video
    motion: str = "bounce"  # moving_fmnist: bounce | linear
    sprite_size: int = 28  # moving_fmnist: side of the pasted garment (28 = native pixels)
    fold: int = 1  # ucf101: official train/test split 1..3
    video_seed: int = 0  # moving_fmnist: which set of trajectories; ucf101: training clips' start frames


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128  # the global batch: all processes together (each loads batch_size / world_size)
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere) | fp32 | bf16
    compile: bool = False  # torch.compile each looped block once (reused by every loop)
    tf32: bool = True  # TF32 matmuls/convolutions for fp32 work on CUDA
    distributed: str = "ddp"  # under torchrun: ddp | fsdp (FSDP2 fully_shard, for large widths)
    find_unused_parameters: bool = False  # DDP: set if some parameters get no gradient in a step
    out_dir: str = "runs/default"
    log_every: int = 50
    sample_every: int = 0  # 0: only at the end
    checkpoint_every: int = 0  # 0: only at the end
    sample_loops: list[int] = field(default_factory=list)  # loop counts in the periodic grids ([] = 1..L_max)
    samples_per_class: int = 1
    keep_checkpoints: int = 3  # newest checkpoints kept (0: all)
    handle_signals: bool = True  # SIGTERM/SIGINT: checkpoint at the next step boundary, then stop
    tensorboard: bool = True  # RUN/tensorboard if tensorboard is installed (else skipped); RUN/log.jsonl always
    wandb: bool = False  # also log to Weights & Biases (if installed)
    wandb_project: str = "elt"
    peak_tflops: float = 0.0  # device peak for the MFU estimate (0: built-in table; n/a if unknown)
    threads: int = 0  # torch CPU threads (0: the global setting, see elt.runtime.set_threads)


@dataclass
class Config:
    paradigm: str = "masked"  # masked | diffusion
    model: ModelConfig = field(default_factory=ModelConfig)
    ilsd: ILSDConfig = field(default_factory=ILSDConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    masked: MaskedConfig = field(default_factory=MaskedConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


def resolve_config_path(path: str | Path) -> Path:
    """A YAML path, or the bare name of a shipped preset (``fmnist_masked``)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    for name in (candidate.name, f"{candidate.name}.yaml"):
        if (CONFIG_DIR / name).is_file():
            return CONFIG_DIR / name
    shipped_names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config file {str(path)!r} not found; shipped configs: {', '.join(shipped_names)}")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Build a validated config from an optional YAML file and ``key=value`` overrides."""
    layers = []
    if path is not None:
        resolved = resolve_config_path(path)
        try:
            layers.append(OmegaConf.load(resolved))
        except Exception as exc:  # YAML syntax errors
            raise ConfigError(f"cannot read config {resolved}: {exc}".splitlines()[0]) from exc
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value (e.g. model.loops=6)")
        try:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        except Exception as exc:
            raise ConfigError(f"cannot parse overrides {list(overrides)}: {exc}".splitlines()[0]) from exc
    for layer in layers:
        _check_keys(OmegaConf.to_container(layer, resolve=False), Config, "")
    preset_name = None
    for layer in layers:
        preset_name = OmegaConf.select(layer, "model.preset", default=preset_name)
    base = OmegaConf.structured(Config)
    if preset_name:
        try:
            layers.insert(0, OmegaConf.create({"model": parse_preset(str(preset_name))}))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    try:
        cfg = OmegaConf.merge(base, *layers)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        raise ConfigError(f"invalid value for config key {key!r}: {exc.msg if hasattr(exc, 'msg') else exc}"
                          .splitlines()[0]) from exc
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Choices and ranges the type system cannot express."""
    _choice("paradigm", cfg.paradigm, tuple(TASK_MODULES))
    _choice("ilsd.mode", cfg.ilsd.mode, MODES)
    _choice("ilsd.lambda_schedule", cfg.ilsd.lambda_schedule, LAMBDA_SCHEDULES)
    _choice("train.precision", cfg.train.precision, ("auto", "fp32", "bf16"))
    _choice("train.distributed", cfg.train.distributed, ("ddp", "fsdp"))
    for key in ("model.width", "model.heads", "model.unique_layers", "model.loops", "train.steps",
                "train.batch_size", "data.num_classes", "data.image_size", "data.channels"):
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"config key {key!r} must be >= 1, got {OmegaConf.select(cfg, key)}")
    if cfg.model.width % cfg.model.heads:
        raise ConfigError(f"model.width={cfg.model.width} must be divisible by model.heads={cfg.model.heads}")
    if cfg.ilsd.mode == "ilsd":
        if cfg.model.loops < 2:
            raise ConfigError(f"ilsd.mode=ilsd needs model.loops >= 2 (got {cfg.model.loops}); "
                              "use ilsd.mode=vanilla for a single loop")
        if not 1 <= cfg.ilsd.min_student_loops < cfg.model.loops:
            raise ConfigError(f"ilsd.min_student_loops={cfg.ilsd.min_student_loops} must lie in "
                              f"1..{cfg.model.loops - 1} (model.loops - 1)")
    if not 0.0 <= cfg.model.class_dropout < 1.0:
        raise ConfigError(f"model.class_dropout={cfg.model.class_dropout} must lie in [0, 1)")
    _validate_video(cfg)


VIDEO_DATASETS = ("moving_fmnist", "ucf101")


def _validate_video(cfg: DictConfig) -> None:
    """Video data fields and the fsq3d tokenizer: only meaningful together, checked here once."""
    data = cfg.data
    if data.name in VIDEO_DATASETS:
        if data.frames < 2:
            raise ConfigError(f"data.name={data.name} is a video dataset: set data.frames >= 2 (got {data.frames})")
    elif data.frames != 0:
        raise ConfigError(f"data.frames={data.frames} needs a video dataset ({', '.join(VIDEO_DATASETS)}); "
                          f"data.name={data.name} has images (data.frames=0)")
    if data.frame_stride < 1:
        raise ConfigError(f"config key 'data.frame_stride' must be >= 1, got {data.frame_stride}")
    _choice("data.motion", data.motion, ("bounce", "linear"))
    if data.name == "moving_fmnist" and not 1 <= data.sprite_size <= data.image_size:
        raise ConfigError(f"data.sprite_size={data.sprite_size} must lie in 1..data.image_size={data.image_size}")
    if data.fold not in (1, 2, 3):
        raise ConfigError(f"data.fold={data.fold} must be 1, 2 or 3 (the official UCF-101 splits)")
    if cfg.tokenizer.temporal_downsample < 1:
        raise ConfigError(f"config key 'tokenizer.temporal_downsample' must be >= 1, got "
                          f"{cfg.tokenizer.temporal_downsample}")
    if cfg.tokenizer.kind == "fsq3d":
        if data.frames < 2:
            raise ConfigError(f"tokenizer.kind=fsq3d encodes videos: use a video dataset ({', '.join(VIDEO_DATASETS)})"
                              f" with data.frames >= 2 (got data.name={data.name}, data.frames={data.frames})")
        if data.frames % cfg.tokenizer.temporal_downsample:
            raise ConfigError(f"data.frames={data.frames} is not divisible by tokenizer.temporal_downsample="
                              f"{cfg.tokenizer.temporal_downsample}")
    elif data.frames > 0 and cfg.tokenizer.kind in ("fsq", "pretrained_vq") and cfg.paradigm == "masked":
        raise ConfigError(f"tokenizer.kind={cfg.tokenizer.kind} encodes images; video data (data.frames="
                          f"{data.frames}) needs tokenizer.kind=fsq3d")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


# Keys a trained checkpoint may be sampled with differently from how it was configured (nothing here
# changes the architecture or the weights).
SAMPLING_KEYS = (
    "masked.sample_steps", "masked.guidance", "masked.temperature_base", "masked.temperature_range",
    "masked.token_temperature", "masked.sample_precision",
    "diffusion.sample_steps", "diffusion.sampler", "diffusion.ddim_eta", "diffusion.guidance",
    "diffusion.clip_denoised",
)


def from_yaml_file(path: str | Path, sampling_overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Load a config saved by :func:`to_yaml` (e.g. a checkpoint's ``config.yaml``), validated, with optional
    ``key=value`` overrides of the sampling settings (:data:`SAMPLING_KEYS`)."""
    layer = OmegaConf.load(path)
    _check_keys(OmegaConf.to_container(layer, resolve=False), Config, "")
    layers = [layer]
    if sampling_overrides:
        for item in sampling_overrides:
            key = item.split("=", 1)[0]
            if "=" not in item or key not in SAMPLING_KEYS:
                raise ConfigError(f"cannot set {item!r} when sampling; allowed: key=value with key one of "
                                  f"{', '.join(SAMPLING_KEYS)}")
        layers.append(OmegaConf.from_dotlist(list(sampling_overrides)))
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), *layers)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad sampling override {list(sampling_overrides)}: {exc}".splitlines()[0]) from exc
    for item in sampling_overrides:  # a setting of the other paradigm would be ignored: say so instead
        section = item.split("=", 1)[0].split(".", 1)[0]
        if cfg.paradigm in ("masked", "diffusion") and section in ("masked", "diffusion") and section != cfg.paradigm:
            own = ", ".join(k for k in SAMPLING_KEYS if k.startswith(f"{cfg.paradigm}."))
            raise ConfigError(f"{item!r} is a {section} setting but this checkpoint is {cfg.paradigm}; "
                              f"its sampling keys: {own}")
    validate(cfg)
    return cfg


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
            while isinstance(value, dict) and len(value) == 1:  # name the whole dotted key a user typed
                key2, value = next(iter(value.items()))
                full = f"{full}.{key2}"
            candidates = [f"{prefix}{name}" for name in valid] + list(_all_keys(schema, prefix))
            close = difflib.get_close_matches(full, candidates, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {full!r}{hint}")
        field_type = _dataclass_type(valid[key])
        if field_type is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {full!r} is a section; give its fields, e.g. {full}.<field>=...")
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

