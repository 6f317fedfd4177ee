"""A pretrained continuous VAE (diffusers ``AutoencoderKL``, e.g. the Stable-Diffusion VAE) from a
local folder.

The diffusion paradigm's latent space (the paper: SD-VAE latents, 256² → 32×32×4). Latents are
scaled as diffusers pipelines do, ``(mean − shift_factor)·scaling_factor`` (SD-VAE: 0.18215, no
shift), so they have roughly unit variance; :meth:`decode` undoes it. Encoding returns the posterior
mean (deterministic, so a dataset is encoded once and cached). Hub downloads are never attempted:
the folder must hold ``config.json`` and the weights (``diffusion_pytorch_model.safetensors``), or a
``vae/`` subfolder that does."""

from __future__ import annotations

from pathlib import Path

import torch


class VAEError(ValueError):
    """The VAE folder or the diffusers install is not usable; the message says what to do."""


def _import_autoencoder_kl():
    try:
        from diffusers import AutoencoderKL
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise VAEError(
            "the latent space needs diffusers: pip install 'elt-looped[latent]'"
        ) from exc
    return AutoencoderKL


def resolve_vae_dir(path: str | Path) -> Path:
    """The folder holding the AutoencoderKL ``config.json``: ``path`` itself or its ``vae/``
    subfolder."""
    folder = Path(path).expanduser()
    for candidate in (folder, folder / "vae"):
        if (candidate / "config.json").is_file():
            return candidate
    raise VAEError(
        f"no diffusers AutoencoderKL at {str(path)!r} (expected config.json and "
        "diffusion_pytorch_model.safetensors there or in a vae/ subfolder; download e.g. "
        "stabilityai/sd-vae-ft-ema on a machine with internet and copy the folder)"
    )


class PretrainedVAE:
    """Frozen AutoencoderKL with the latent scaling handled. Not an ``nn.Module`` on purpose: a
    generator holds it without its weights entering the generator's state dict, checkpoints or EMA
    copy."""

    def __init__(
        self,
        model: torch.nn.Module,
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
    ):
        self.model = model.eval().requires_grad_(False)
        config = model.config
        self.scaling_factor = float(
            scaling_factor
            if scaling_factor is not None
            else getattr(config, "scaling_factor", None) or 1.0
        )
        self.shift_factor = float(
            shift_factor
            if shift_factor is not None
            else getattr(config, "shift_factor", None) or 0.0
        )
        self.latent_channels = int(config.latent_channels)
        self.image_channels = int(config.in_channels)
        self.downsample = 2 ** (len(config.block_out_channels) - 1)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
    ) -> PretrainedVAE:
        AutoencoderKL = _import_autoencoder_kl()
        folder = resolve_vae_dir(path)
        try:
            model = AutoencoderKL.from_pretrained(
                str(folder), local_files_only=True, low_cpu_mem_usage=False
            )
        except Exception as exc:
            raise VAEError(
                f"cannot load an AutoencoderKL from {folder}: {exc}".splitlines()[0]
            ) from exc
        return cls(model, scaling_factor, shift_factor)

    def __deepcopy__(
        self, memo
    ):  # frozen and shared: an EMA copy of a generator must not duplicate it
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> PretrainedVAE:
        self.model.to(device)
        return self

    def _autocast(self):
        """bf16 autocast on CUDA (the VAE's convolutions at tensor-core speed, half the activation
        memory), fp32 elsewhere; inputs and outputs stay fp32."""
        from contextlib import nullcontext

        device = self.device
        return (
            torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        )

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        if image_size % self.downsample:
            raise VAEError(
                f"image size {image_size} is not divisible by the VAE's downsampling factor "
                f"{self.downsample}"
            )
        side = image_size // self.downsample
        return self.latent_channels, side, side

    @torch.no_grad()
    def encode(self, images: torch.Tensor, bf16: bool | None = None) -> torch.Tensor:
        """Images N×C×H×W in [-1, 1] → scaled fp32 latents (posterior mean). Grey images are
        repeated to the VAE's input channels. ``bf16``: the network runs under bf16 autocast (None:
        on CUDA only; weights stay fp32, so the weight hash is unchanged; about 2× faster on a GPU,
        latents within bf16 rounding of fp32)."""
        images = images.to(self.device, torch.float32)
        if images.shape[1] != self.image_channels:
            if images.shape[1] != 1:
                raise VAEError(
                    f"images have {images.shape[1]} channels but the VAE expects "
                    f"{self.image_channels}"
                )
            images = images.expand(-1, self.image_channels, -1, -1)
        use_bf16 = self.device.type == "cuda" if bf16 is None else bf16
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            mean = self.model.encode(images).latent_dist.mean
        return (mean.float() - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, channels: int | None = None) -> torch.Tensor:
        """Scaled latents → images in [-1, 1] (averaged to one channel when ``channels == 1``)."""
        latents = latents.to(self.device, torch.float32)
        with self._autocast():
            images = self.model.decode(
                latents / self.scaling_factor + self.shift_factor
            ).sample.float()
        if channels == 1 and images.shape[1] != 1:
            images = images.mean(1, keepdim=True)
        return images.clamp(-1, 1)

    def weights_hash(self) -> str:
        from elt.data.cache import state_dict_hash

        return state_dict_hash(self.model)
