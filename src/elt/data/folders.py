"""ImageNet-style image folders (one subfolder per class), and the dataset a config's ``data:``
section names.

    ROOT/                      or   ROOT/train/<class>/...  and  ROOT/val/<class>/...
      <class_a>/img001.jpg
      <class_b>/...

Images are resized and centre-cropped as ADM/guided-diffusion does (box-downsample by 2 while the
short side is at least twice the target, bicubic resize of the short side to the target, centre
crop), then scaled to [-1, 1]. A truncated or unreadable file never stops an epoch: it is skipped
with a warning that counts how many were skipped so far (the plain dataset interface returns the
next readable file instead; :meth:`ImageFolder.load` reports failure so encoders can drop the item).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".jpe",
)
LOAD_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class UnreadableImageWarning(UserWarning):
    """An image file could not be decoded and was skipped."""


def center_crop_adm(image: Image.Image, size: int) -> Image.Image:
    """ADM's centre crop: cheap box halving while large, bicubic to the target short side, then
    crop."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return Image.fromarray(array[top : top + size, left : left + size])


class UnsupportedImageError(ValueError):
    """An image whose pixel values cannot be mapped to 8 bits without guessing (skipped with a
    warning)."""


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (``I;16*``, ``I``) and float (``F``) images scaled to 8 bits; PIL's own ``convert``
    would clip them (all-white 16-bit PNGs, all-black float TIFFs). Float values must lie in [0, 1]
    or [0, 255]."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(image).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise UnsupportedImageError(
                f"{mode} image with values in [{array.min()}, {array.max()}]; expected 0..65535"
            )
        scale = 257.0 if mode.startswith("I;16") or (array.size and array.max() > 255) else 1.0
        return Image.fromarray(np.clip(np.rint(array / scale), 0, 255).astype(np.uint8), "L")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if array.size == 0 or not np.isfinite(array).all():
            raise UnsupportedImageError("float image with NaN/Inf values")
        low, high = float(array.min()), float(array.max())
        if low >= 0.0 and high <= 1.0:
            array = array * 255.0
        elif not (low >= 0.0 and high <= 255.0):
            raise UnsupportedImageError(
                f"float image with values in [{low:.4g}, {high:.4g}]; only [0, 1] or "
                "[0, 255] are understood: convert it to 8-bit PNG/JPEG"
            )
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L")
    return image


def find_classes(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolder(Dataset):
    """Labelled images from ``root/<class>/**/<file>``; classes are the sorted subfolder names.

    Args:
        root: the folder holding class subfolders, or one holding ``train/`` and ``val/`` (then
            ``split`` picks one).
        image_size: output side length (square, ADM centre crop).
        channels: 1 (greyscale) or 3 (RGB).
        split: ``train``/``val``/``test`` when ``root`` has such subfolders; ``train`` uses ``root``
            itself when it has no ``train/`` subfolder, any other split needs its subfolder.
        limit: keep only the first ``limit`` files (sorted order), for quick runs.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 64,
        channels: int = 3,
        split: str = "train",
        limit: int | None = None,
    ):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"image folder {str(root)!r} does not exist (set data.root to a folder of "
                "class subfolders)"
            )
        if (root / split).is_dir():
            root = root / split
        elif split != "train":
            raise FileNotFoundError(f"image folder {str(root)!r} has no {split!r} subfolder")
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3 for image folders, got {channels}")
        self.root = root
        self.image_size = image_size
        self.channels = channels
        self.classes = find_classes(root)
        if not self.classes:
            raise FileNotFoundError(f"image folder {str(root)!r} has no class subfolders")
        files: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            for path in sorted((root / name).rglob("*")):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                    files.append((path, label))
        if not files:
            raise FileNotFoundError(
                f"image folder {str(root)!r} has class subfolders but no image files "
                f"({', '.join(IMAGE_EXTENSIONS)})"
            )
        if limit:
            files = files[:limit]
        self.files = files
        self.labels = torch.tensor([label for _, label in files], dtype=torch.long)
        self.skipped: set[int] = set()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[torch.Tensor, int] | None:
        """Image ``index`` as C×S×S in [-1, 1] with its label, or ``None`` (and a counted warning)
        if the file cannot be decoded."""
        path, label = self.files[index]
        try:
            with Image.open(path) as handle:
                handle.load()
                image = to_8bit(handle).convert("L" if self.channels == 1 else "RGB")
        except LOAD_ERRORS as exc:
            self._skip(index, exc)
            return None
        image = center_crop_adm(image, self.image_size)
        array = np.asarray(image, dtype=np.float32)
        if array.ndim == 2:
            array = array[..., None]
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).div(127.5).sub(1.0)
        return tensor, label

    def _skip(self, index: int, exc: Exception) -> None:
        if index in self.skipped:
            return
        self.skipped.add(index)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warnings.warn(
            f"skipped unreadable image {self.files[index][0]} ({reason}); "
            f"{len(self.skipped)} skipped so far",
            UnreadableImageWarning,
            stacklevel=3,
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = None
        with warnings.catch_warnings(
            record=True
        ) as skipped:  # shown once a readable image is found
            warnings.simplefilter("always", UnreadableImageWarning)
            for offset in range(len(self.files)):
                item = self.load((index + offset) % len(self.files))
                if item is not None:
                    break
        if item is not None:
            for record in skipped:
                warnings.warn_explicit(
                    record.message, record.category, record.filename, record.lineno
                )
            return item
        from elt.errors import UserError

        raise UserError(
            f"no readable image in {self.root}: every one of its {len(self.files)} image files is "
            "damaged or not an image"
        )
