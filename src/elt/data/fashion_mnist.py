"""Fashion-MNIST from its IDX files (60k train / 10k test, 28×28 grey, 10 classes).

Looked for in an explicit ``root`` if one is given, else in ``$ELT_DATA`` (the folder itself or
``$ELT_DATA/fashion-mnist``) if that is set, else in Debian's ``dataset-fashion-mnist`` package
(/usr/share/datasets/fashion-mnist); then torchvision's download when torchvision is installed and
the machine is online. A ``root`` or ``$ELT_DATA`` that does not exist, or holds no Fashion-MNIST
files, is an
error: never a silent fall-back to another copy. Nothing found → one error saying where it looked
and how to get the files."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from elt.errors import UserError

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEBIAN_PATH = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataNotFoundError(UserError, FileNotFoundError):
    """The dataset files are not where we looked."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[
        data[2]
    ]
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(
            f"{path} is truncated: expected {int(np.prod(shape))} values, found {array.size}"
        )
    return array.reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(root: str | Path | None = None) -> list[Path]:
    """Where to look: inside ``root`` when given, else inside ``$ELT_DATA`` when set, else the
    Debian path. A given ``root`` / ``$ELT_DATA`` that is not a directory is a
    :class:`DataNotFoundError`."""
    env = os.environ.get("ELT_DATA")
    for name, base in (("data.root", root), ("ELT_DATA", env)):
        if base:
            if not Path(base).is_dir():
                raise DataNotFoundError(
                    f"{name}={str(base)!r} is not a directory; point it at the folder holding "
                    "the Fashion-MNIST IDX files, or unset it (then ELT_DATA, then Debian's "
                    "dataset-fashion-mnist package are used)"
                )
            return [Path(base), Path(base) / "fashion-mnist", Path(base) / "FashionMNIST" / "raw"]
    return [DEBIAN_PATH]


def locate(root: str | Path | None = None, split: str = "train") -> tuple[Path, Path]:
    """Paths of the image and label IDX files of ``split``."""
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}; allowed: train, test")
    images_stem, labels_stem = FILES[split]
    searched = candidate_dirs(root)
    for folder in searched:
        images, labels = _find_file(folder, images_stem), _find_file(folder, labels_stem)
        if images and labels:
            return images, labels
    downloaded = _torchvision_download(root or os.environ.get("ELT_DATA"))
    if downloaded is not None:
        return _find_file(downloaded, images_stem), _find_file(downloaded, labels_stem)
    raise DataNotFoundError(
        f"Fashion-MNIST {split} files not found (looked in {', '.join(str(d) for d in searched)}); "
        "install them with 'apt-get install dataset-fashion-mnist', or put the four IDX files in a "
        "folder "
        "and pass data.root=FOLDER or set ELT_DATA=FOLDER"
    )


def _torchvision_download(root: str | Path | None) -> Path | None:
    """Use torchvision's downloader when it is installed and the network answers; None otherwise."""
    try:
        from torchvision.datasets import FashionMNIST
    except Exception:
        return None
    target = Path(root or os.environ.get("ELT_DATA") or Path.home() / ".cache" / "elt")
    try:
        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
    except Exception:
        return None
    return target / "FashionMNIST" / "raw"


def load_arrays(
    root: str | Path | None = None, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images N×28×28 and int64 labels N."""
    images_path, labels_path = locate(root, split)
    images, labels = read_idx(images_path), read_idx(labels_path).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return images, labels


class FashionMNIST(Dataset):
    """Images as float tensors 1×S×S in [-1, 1] (zero-padded from 28 to ``image_size`` when larger,
    resized when smaller), with int labels."""

    num_classes = 10
    classes = CLASSES

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        image_size: int = 32,
        limit: int | None = None,
    ):
        images, labels = load_arrays(root, split)
        if limit:
            images, labels = images[:limit], labels[:limit]
        x = torch.from_numpy(images.copy()).float().div(127.5).sub(1.0).unsqueeze(1)
        if image_size > 28:
            pad = image_size - 28
            x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-1.0)
        elif image_size < 28:
            x = F.interpolate(x, size=(image_size, image_size), mode="area")
        self.images = x
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]
