"""The dataset factory: the dataset a config's ``data:`` section names (each dataset module imported
only when used; the dataset modules never import this one)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from elt.errors import ConfigError


def build_dataset(data_cfg, split: str = "train") -> Dataset:
    """The dataset a config's ``data:`` section names (``fashion_mnist``, ``folder``,
    ``moving_fmnist``, ``ucf101``).

    Items are (C×S×S float image in [-1, 1], int label), or (C×T×S×S clip, label) for the video
    datasets. ``split`` is ``train`` or ``test``; a folder without a ``val``/``test`` subfolder has
    no test split (``FileNotFoundError``)."""
    if any(data_cfg[key] is None for key in ("image_size", "channels", "num_classes")):
        from elt.data.shape import resolve_data_section

        resolve_data_section(data_cfg)  # null shape keys: taken from the data (one-line errors)
    name = data_cfg.name
    limit = data_cfg.limit if split == "train" else None
    if name == "moving_fmnist":
        from elt.data.moving_fmnist import MovingFashionMNIST

        if data_cfg.channels != 1:
            raise ConfigError(
                f"moving_fmnist is greyscale: set data.channels=1 (got {data_cfg.channels})"
            )
        return MovingFashionMNIST(
            data_cfg.root,
            split=split,
            frames=data_cfg.frames,
            image_size=data_cfg.image_size,
            sprite_size=data_cfg.sprite_size,
            motion=data_cfg.motion,
            seed=data_cfg.video_seed,
            limit=limit,
        )
    if name == "ucf101":
        from elt.data.ucf101 import UCF101

        if not data_cfg.root:
            raise ConfigError(
                "data.name=ucf101 needs data.root=FOLDER (holding ucfTrainTestlist/ and the videos)"
            )
        if data_cfg.channels != 3:
            raise ConfigError(f"UCF-101 is RGB: set data.channels=3 (got {data_cfg.channels})")
        dataset = UCF101(
            data_cfg.root,
            split=split,
            fold=data_cfg.fold,
            frames=data_cfg.frames,
            image_size=data_cfg.image_size,
            frame_stride=data_cfg.frame_stride,
            limit=limit,
            seed=data_cfg.video_seed,
        )
        if dataset.num_classes != data_cfg.num_classes:
            raise ConfigError(
                f"{data_cfg.root} has {dataset.num_classes} classes in classInd.txt but "
                f"data.num_classes={data_cfg.num_classes}; set "
                f"data.num_classes={dataset.num_classes}"
            )
        return dataset
    if name == "fashion_mnist":
        from elt.data.fashion_mnist import FashionMNIST

        if data_cfg.channels != 1:
            raise ConfigError(
                f"Fashion-MNIST is greyscale: set data.channels=1 (got {data_cfg.channels})"
            )
        return FashionMNIST(
            data_cfg.root,
            split=split,
            image_size=data_cfg.image_size,
            limit=data_cfg.limit if split == "train" else None,
        )
    if name == "folder":
        if not data_cfg.root:
            raise ConfigError(
                "data.name=folder needs data.root=FOLDER (a folder of class subfolders)"
            )
        root = Path(data_cfg.root)
        if split != "train":
            split = next((s for s in (split, "val", "test") if (root / s).is_dir()), split)
        from elt.data.folders import ImageFolder

        dataset = ImageFolder(
            root,
            image_size=data_cfg.image_size,
            channels=data_cfg.channels,
            split=split,
            limit=data_cfg.limit if split == "train" else None,
        )
        if dataset.num_classes != data_cfg.num_classes:
            raise ConfigError(
                f"{dataset.root} has {dataset.num_classes} class folders but data.num_classes="
                f"{data_cfg.num_classes}; set data.num_classes={dataset.num_classes}"
            )
        return dataset
    raise ConfigError(
        f"unknown data.name {name!r}; allowed: fashion_mnist, folder, moving_fmnist, ucf101"
    )
