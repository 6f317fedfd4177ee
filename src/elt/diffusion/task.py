"""Registry entry of the diffusion paradigm: build the generator from a config, prepare its training
data.

Pixel space trains on images in [-1, 1], or on clips (``data.frames > 0``) cut into 3D patches.
Latent space encodes the dataset once through the pretrained VAE (``diffusion.vae_path``) into a
memory-mapped cache keyed by the VAE's weight hash and the data settings (a changed VAE or dataset
rebuilds it, never reuses it silently)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from elt.config import ConfigError
from elt.diffusion.config import DiffusionConfig
from elt.diffusion.model import DiffusionGenerator
from elt.diffusion.process import process_from_config
from elt.registry import build_backbone


def check_buildable(cfg: DictConfig) -> None:
    """The config's relations (:meth:`DiffusionConfig.validate`) and, in latent space, the VAE
    folder that building the model needs."""
    DiffusionConfig.validate(cfg)
    if cfg.diffusion.space == "latent" and not cfg.diffusion.vae_path:
        raise ConfigError(
            "diffusion.space=latent needs diffusion.vae_path (a local diffusers AutoencoderKL "
            "folder)"
        )


def load_vae(cfg: DictConfig):
    from elt.tokenizers.vae import PretrainedVAE, VAEError

    try:
        return PretrainedVAE.from_pretrained(
            cfg.diffusion.vae_path, scaling_factor=cfg.diffusion.latent_scale
        )
    except VAEError as exc:
        raise ConfigError(str(exc)) from exc


def latent_data_shape(cfg: DictConfig, vae) -> tuple[int, int, int]:
    """The latent shape the VAE gives the configured images (checked against the patch size)."""
    try:
        data_shape = vae.latent_shape(cfg.data.image_size)
    except ValueError as exc:
        raise ConfigError(f"data.image_size: {exc}") from exc
    check_patch(cfg, data_shape, "latent")
    return data_shape


def check_patch(cfg: DictConfig, data_shape, what: str) -> None:
    if data_shape[-1] % cfg.diffusion.patch_size:
        raise ConfigError(
            f"diffusion.patch_size={cfg.diffusion.patch_size} must divide the "
            f"{what} side {data_shape[-1]}"
        )


def build_generator(cfg: DictConfig) -> DiffusionGenerator:
    check_buildable(cfg)
    vae = None
    if cfg.diffusion.space == "latent":
        vae = load_vae(cfg)
        data_shape = latent_data_shape(cfg, vae)
    else:
        frames = (cfg.data.frames,) if cfg.data.frames else ()
        data_shape = (cfg.data.channels, *frames, cfg.data.image_size, cfg.data.image_size)
        check_patch(cfg, data_shape, "image")
    backbone = build_backbone(cfg, cond_dim=cfg.model.width)
    return DiffusionGenerator(
        cfg, backbone, process_from_config(cfg.diffusion), data_shape, vae=vae
    )


class _Flipped(Dataset):
    """Random horizontal flips of an (image, label) dataset."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        image, label = self.base[index]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, label


class LatentDataset(Dataset):
    """Cached latents (read-only memmap) with their labels."""

    def __init__(self, latents: np.ndarray, labels: torch.Tensor):
        self.latents = latents
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return torch.from_numpy(np.array(self.latents[index], dtype=np.float32)), self.labels[index]


def image_dataset(cfg: DictConfig, split: str = "train") -> Dataset:
    """(image in [-1, 1] C×S×S, or clip C×T×S×S, label) items of the configured dataset."""
    from elt.data.datasets import build_dataset

    try:
        return build_dataset(cfg.data, split)
    except (FileNotFoundError, ValueError) as exc:  # DataNotFoundError is a FileNotFoundError
        raise ConfigError(str(exc)) from exc


def prepare_data(
    cfg: DictConfig, generator: DiffusionGenerator, run_dir: str | Path, progress: bool = True
) -> Dataset:
    images = image_dataset(cfg)
    if cfg.diffusion.space == "pixel":
        if images[0][0].shape[0] != generator.data_shape[0]:
            raise ConfigError(
                f"data.channels={cfg.data.channels} but the dataset has {images[0][0].shape[0]}"
            )
        return _Flipped(images) if cfg.data.hflip else images
    return encode_latents(cfg, generator, images, run_dir, progress=progress)


class _Substituted(Dataset):
    """(image, substituted) items for encoding: an unreadable file of an image folder is replaced by
    the next readable one (as in training from pixels) and flagged, so that the count survives
    DataLoader workers."""

    def __init__(self, images: Dataset):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from elt.data.folders import ImageFolder

        if isinstance(self.images, ImageFolder):
            item = self.images.load(index)
            if item is None:
                return self.images[index][0], True
            return item[0], False
        return self.images[index][0], False


def latent_cache_spec(
    cfg: DictConfig,
    generator: DiffusionGenerator,
    images: Dataset,
    run_dir: str | Path,
    precision: str = "auto",
):
    """The latent cache of ``images`` through the generator's VAE (keyed by its weight hash and the
    data)."""
    return vae_cache_spec(cfg, generator.vae, generator.data_shape, images, run_dir, precision)


def vae_cache_spec(
    cfg: DictConfig, vae, data_shape, images: Dataset, run_dir: str | Path, precision: str = "auto"
):
    """The latent cache of ``images`` through ``vae`` (keyed by its weight hash and the data). An
    unreadable file is replaced by the next readable one (as in training from pixels) and counted.
    Images are decoded in ``data.num_workers`` DataLoader workers; the VAE encodes on its device, in
    bf16 autocast where ``precision`` asks for it (``auto``: on CUDA; the latents are stored in fp32
    either way)."""
    from elt.data.cache import CacheSpec
    from elt.runtime import uses_bf16

    key = {
        "vae": vae.weights_hash(),
        "scaling_factor": vae.scaling_factor,
        "shift_factor": vae.shift_factor,
        "dataset": cfg.data.name,
        "root": str(cfg.data.root),
        "split": "train",
        "image_size": cfg.data.image_size,
        "limit": cfg.data.limit,
    }
    folder = (
        Path(cfg.diffusion.latent_cache) if cfg.diffusion.latent_cache else Path(run_dir) / "cache"
    )
    name = f"latents_{cfg.data.name}_{cfg.data.image_size}_{key['vae']}"
    items = _Substituted(images)
    bf16 = uses_bf16(vae.device, precision)
    last = {"substituted": 0}

    def encode_batch(collated) -> np.ndarray:
        batch, substituted = collated
        last["substituted"] = int(substituted.sum())
        latents = vae.encode(batch, bf16=True) if bf16 else vae.encode(batch)
        return latents.cpu().numpy().astype(np.float32)

    def encode(
        start: int, stop: int
    ) -> np.ndarray:  # one range, decoded here (encode_blocks uses workers)
        from torch.utils.data import default_collate

        return encode_batch(default_collate([items[i] for i in range(start, stop)]))

    return CacheSpec(
        folder / name,
        key,
        len(images),
        tuple(data_shape),
        np.float32,
        encode,
        batch_size=64,
        skipped=lambda block: last["substituted"],
        items=items,
        encode_batch=encode_batch,
        num_workers=cfg.data.num_workers,
        info={"encode_precision": "bf16" if bf16 else "fp32"},
    )


def dataset_labels(images: Dataset) -> torch.Tensor:
    """Labels of every item: from the folder listing when there is one (no image is decoded)."""
    labels = getattr(images, "labels", None)
    if torch.is_tensor(labels) and len(labels) == len(images):
        return labels.long()
    return torch.as_tensor([int(images[i][1]) for i in range(len(images))], dtype=torch.long)


def cache_spec(
    cfg: DictConfig, generator: DiffusionGenerator, run_dir: str | Path, progress: bool = True
):
    """The latent cache of the training images (latent space only)."""
    if cfg.diffusion.space != "latent":
        raise ConfigError(
            "elt prepare encodes latents: diffusion.space=pixel trains on the images themselves"
        )
    return latent_cache_spec(cfg, generator, image_dataset(cfg), run_dir)


def prepare_builds_first(cfg: DictConfig, run_dir: str | Path) -> bool:
    """For ``elt prepare``: nothing is built before encoding (the VAE is read from its folder), so
    every process builds its spec at the same time."""
    return False


def prepare_spec(
    cfg: DictConfig,
    run_dir: str | Path,
    device: torch.device,
    precision: str = "auto",
    progress: bool = True,
):
    """For ``elt prepare``: the latent cache's spec with only the VAE loaded (no transformer), on
    ``device``."""
    check_buildable(cfg)
    if cfg.diffusion.space != "latent":
        raise ConfigError(
            "elt prepare encodes latents: diffusion.space=pixel trains on the images themselves"
        )
    vae = load_vae(cfg)
    data_shape = latent_data_shape(cfg, vae)
    vae.to(device)
    return vae_cache_spec(cfg, vae, data_shape, image_dataset(cfg), run_dir, precision)


def encode_latents(
    cfg: DictConfig,
    generator: DiffusionGenerator,
    images: Dataset,
    run_dir: str | Path,
    progress: bool = True,
) -> LatentDataset:
    """Encode ``images`` through the generator's VAE once; reuse the cache while its manifest
    matches."""
    from elt.data.cache import build_cache

    latents = build_cache(latent_cache_spec(cfg, generator, images, run_dir), progress=progress)
    return LatentDataset(latents, dataset_labels(images))


# -- dry run (elt train --dry-run): what a run would train, timed without writing anything --------
class _RandomLatents(Dataset):
    def __init__(self, size: int, shape: tuple[int, ...], num_classes: int):
        self.size, self.shape, self.num_classes = size, shape, num_classes

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        latent = torch.randn(self.shape, generator=torch.Generator().manual_seed(i))
        return latent, torch.tensor(i % self.num_classes)


def dry_run_data(cfg: DictConfig, generator: DiffusionGenerator, run_dir: str | Path) -> Dataset:
    """The dataset a dry run times the model on: the images themselves in pixel space (nothing is
    written); in latent space random latents of the VAE's shape, as many as the images (the real
    ones need an encoding pass that writes the latent cache)."""
    images = image_dataset(cfg)
    if cfg.diffusion.space == "pixel":
        return prepare_data(cfg, generator, run_dir, progress=False)
    return _RandomLatents(len(images), tuple(generator.data_shape), cfg.data.num_classes)
