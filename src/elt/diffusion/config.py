"""Configuration of the diffusion (DiT) paradigm: the `diffusion:` section of a config.

Two processes share one structure (path / prediction target / weighting / sampler, as in SiT):

* ``process: ddpm`` — the paper's choice: variance-preserving DDPM with the shifted-cosine logSNR
  schedule, x0-prediction and the sigmoid loss weighting of "Simpler Diffusion" (Hoogeboom et al.).
* ``process: flow`` — rectified flow (linear path x_t = (1−t)·x0 + t·ε), usually with ``prediction:
  v`` (the velocity ε − x0) and ``weighting: v`` (plain velocity MSE). Deterministic sampling is
  Euler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from elt.errors import ConfigError
from elt.limits import MAX_FRAMES, MAX_IMAGE_SIZE, Choice, Flag, Int, Range, Text

PROCESSES = ("ddpm", "flow")
PREDICTIONS = ("x0", "eps", "v")
WEIGHTINGS = ("sigmoid", "x0", "eps", "v")
SAMPLERS = ("ddim", "ddpm", "euler")
SPACES = ("pixel", "latent")

# sampling.* defaults for diffusion models where the shared ``sampling:`` section leaves them null:
# 50 denoising steps, guidance s = 2.0; precision null = the network samples in its
# ``train.precision``.
SAMPLING_DEFAULTS = {"steps": 50, "guidance": 2.0, "precision": None}


@dataclass
class DiffusionConfig:
    space: str = "pixel"  # pixel | latent (through a pretrained VAE, see vae_path)
    patch_size: int = 2  # tokens are patch_size × patch_size patches of the (pixel or latent) image
    temporal_patch_size: int = 1  # video (data.frames > 0): each token also spans this many frames
    process: str = "ddpm"  # ddpm (VP, shifted cosine: the paper) | flow (rectified flow)
    prediction: str = (
        "x0"  # what the network outputs: x0 (the paper) | eps | v (VP: α·ε − σ·x0; flow: ε − x0)
    )
    # loss weight on ‖x̂0 − x0‖²: sigmoid (the paper) | x0 | eps | v (= that plain MSE)
    weighting: str = "sigmoid"
    sigmoid_bias: float = -3.0  # b in the sigmoid weighting w = sigmoid(logSNR − b) (x0 space)
    logsnr_shift: float = (
        0.0  # added to the schedule's logSNR(t); Simple Diffusion uses 2·log(64 / resolution)
    )
    sampler: str = (
        "ddim"  # ddim (deterministic; Euler on the flow path) | ddpm (ancestral) | euler (= ddim)
    )
    ddim_eta: float = 0.0  # stochasticity of DDIM (1 = ancestral)
    clip_denoised: bool = True  # clamp x̂0 to [-1, 1] while sampling (pixel space only)
    vae_path: str | None = None  # local diffusers AutoencoderKL directory (latent space)
    latent_scale: float | None = None  # None: the VAE config's scaling_factor (SD-VAE: 0.18215)
    latent_cache: str | None = None  # folder of the encoded-dataset cache (None: RUN/cache)

    # one check per field, run when a config is loaded (elt.config.validate); relations: validate
    RULES: ClassVar[dict] = {
        "space": Choice(*SPACES),
        "patch_size": Int(1, MAX_IMAGE_SIZE),
        "temporal_patch_size": Int(1, MAX_FRAMES),
        "process": Choice(*PROCESSES),
        "prediction": Choice(*PREDICTIONS),
        "weighting": Choice(*WEIGHTINGS),
        "sigmoid_bias": Range(-100, 100),
        "logsnr_shift": Range(-100, 100),
        "sampler": Choice(*SAMPLERS),
        "ddim_eta": Range(0, 1),
        "clip_denoised": Flag(),
        "vae_path": Text(),
        "latent_scale": Range(0, 1e6, lo_open=True),
        "latent_cache": Text(),
    }
    # the fields a checkpoint may be sampled with differently (elt.config.sampling_keys)
    SAMPLING_KEYS: ClassVar[tuple] = ("sampler", "ddim_eta", "clip_denoised")
    # fields of checkpoints saved by earlier versions: old field -> (new key, conversion)
    RENAMED_KEYS: ClassVar[dict] = {
        "sample_steps": ("sampling.steps", None),
        "guidance": ("sampling.guidance", None),
    }

    @classmethod
    def validate(cls, cfg) -> None:
        """Relations between the fields and with the shared sections, checked when a diffusion
        config is loaded (each field's own range: :attr:`RULES`; the VAE folder a latent model
        needs is asked for when it is built, so a shipped config loads without one)."""
        d, frames = cfg.diffusion, cfg.data.frames
        if frames and d.space != "pixel":
            raise ConfigError(
                f"video (data.frames={frames}) is denoised in pixel space: set "
                f"diffusion.space=pixel (got {d.space}; the image VAEs do not encode clips)"
            )
        if frames and frames % d.temporal_patch_size:
            raise ConfigError(
                f"diffusion.temporal_patch_size={d.temporal_patch_size} must divide "
                f"data.frames={frames}"
            )
        if d.space == "latent" and cfg.data.hflip:
            raise ConfigError(
                "data.hflip is not supported with diffusion.space=latent (latents are cached "
                "unflipped)"
            )
