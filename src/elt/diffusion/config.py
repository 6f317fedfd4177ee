"""Configuration of the diffusion (DiT) paradigm: the `diffusion:` section of a config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DiffusionConfig:
    space: str = "pixel"  # pixel | latent
    patch_size: int = 2
    prediction: str = "x0"  # x0 (the paper) | eps | v
    sample_steps: int = 50
    sampler: str = "ddim"  # ddim | ddpm
    guidance: float = 2.0  # classifier-free guidance scale (1 = conditional only)
    vae_path: str | None = None  # local diffusers AutoencoderKL directory (latent space)
    latent_scale: float = 0.18215
