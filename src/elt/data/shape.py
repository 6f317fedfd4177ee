"""The data shape a config's ``data:`` section leaves to the data: inferred, checked, warned about.

:func:`resolve_data_config` is called by every command that builds from a data config (``elt
train``, ``elt tokenizer train``, ``elt prepare``) before the model is built. For
``data.name=folder`` it fills the keys left ``null`` from the folder (:func:`inspect_folder`):
``data.image_size`` (the images' most common short side), ``data.channels`` (3 if any image has
colour, else 1), ``data.num_classes`` and ``data.class_names`` (the sorted class folder names, the
order :class:`~elt.data.folders.ImageFolder` gives labels). A value the config sets is kept; every
conversion it still makes (colour to grey, resizing, cropping, alpha, 16-bit) is one
``elt: warning: ...`` line on stderr, printed once per process and on rank 0 only under torchrun.
Contradictions (a class count or class names that do not match the folders, an empty class
folder, a root without class folders) are one-line :class:`~elt.errors.ConfigError`. The other
datasets fill what they know (Fashion-MNIST: 1 channel, 10 classes and their names)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from elt.errors import ConfigError

SHAPE_KEYS = ("image_size", "channels", "num_classes")
MAX_HEADERS = 2000  # image headers read by inspect_folder (evenly spaced when there are more)
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")
FASHION_MNIST_SIZE = 28

_shown: set[str] = set()  # warnings already printed by this process
_resolved: set[tuple] = set()  # data sections this process resolved (as they were after it)


@dataclass
class FolderShape:
    """What :func:`inspect_folder` found. ``sizes`` and ``modes`` count the images whose header was
    read (``headers`` of them: all, or an evenly spaced sample of :data:`MAX_HEADERS`)."""

    root: Path
    images: int
    classes: list[str]
    class_counts: dict[str, int]
    headers: int = 0
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    modes: Counter = field(default_factory=Counter)  # PIL mode -> images
    unreadable: int = 0

    @property
    def has_alpha(self) -> bool:
        return any(m in ALPHA_MODES or m == "P+alpha" for m in self.modes)

    @property
    def has_colour(self) -> bool:
        return any(m.split("+")[0] not in GREY_MODES for m in self.modes)

    @property
    def short_sides(self) -> Counter:
        sides: Counter = Counter()
        for (width, height), count in self.sizes.items():
            sides[min(width, height)] += count
        return sides


def inspect_folder(root: str | Path, max_headers: int = MAX_HEADERS) -> FolderShape:
    """The classes, image counts, sizes and modes of an image folder (``ROOT/<class>/**/<file>``,
    or ``ROOT/train/<class>/...``), cheaply: files are listed, and only PIL headers are read (size
    and mode, no pixels), of every image, or of ``max_headers`` evenly spaced ones when there are
    more (then ``sizes``/``modes`` describe that sample). A root that does not exist, has no class
    subfolders, or has a class folder without images is a one-line :class:`ConfigError`."""
    from elt.data.folders import IMAGE_EXTENSIONS, find_classes

    given = Path(root)
    if not given.is_dir():
        raise ConfigError(
            f"data.root {str(given)!r} does not exist or is not a folder; give a folder holding "
            "one subfolder of images per class"
        )
    folder = given / "train" if (given / "train").is_dir() else given
    classes = find_classes(folder)
    if not classes:
        loose = sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        raise ConfigError(
            f"data.root {str(given)!r} has no class subfolders"
            + (f" ({loose} images lie directly in it)" if loose else "")
            + "; put each class's images in ROOT/<class name>/"
        )
    files: list[Path] = []
    counts: dict[str, int] = {}
    for name in classes:
        found = [
            p
            for p in sorted((folder / name).rglob("*"))
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        ]
        if not found:
            raise ConfigError(
                f"class folder {str(folder / name)!r} holds no image files; add images or remove "
                f"the folder (image files end in {', '.join(IMAGE_EXTENSIONS[:5])}, ...)"
            )
        counts[name] = len(found)
        files.extend(found)
    shape = FolderShape(folder, len(files), classes, counts)
    step = max(1.0, len(files) / max(1, max_headers))
    picked = [files[int(i * step)] for i in range(min(len(files), max_headers))]
    for path in picked:
        try:
            with Image.open(path) as image:
                mode = image.mode
                if mode == "P" and "transparency" in image.info:
                    mode = "P+alpha"
                shape.sizes[image.size] += 1
                shape.modes[mode] += 1
                shape.headers += 1
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            shape.unreadable += 1  # skipped (with a warning) when the data is loaded
    return shape


def warn(message: str) -> None:
    """One ``elt: warning: ...`` line on stderr, once per process, on rank 0 only."""
    if message in _shown or int(os.environ.get("RANK", "0")) != 0:
        return
    _shown.add(message)
    print(f"elt: warning: {message}", file=sys.stderr, flush=True)


def _of(count: int, shape: FolderShape) -> str:
    """``all`` or ``N of M`` images (of the headers read)."""
    return "all" if count == shape.headers else f"{count} of {shape.headers}"


def resolve_folder(data: DictConfig) -> FolderShape:
    """Fill the ``null`` shape keys of a folder's ``data:`` section, check the set ones against the
    folder (one-line errors for contradictions) and warn once about each conversion left."""
    if not data.root:
        raise ConfigError("data.name=folder needs data.root=FOLDER (a folder of class subfolders)")
    shape = inspect_folder(data.root)
    where = str(data.root).rstrip("/") + "/"
    if data.num_classes is None:
        data.num_classes = len(shape.classes)
    elif data.num_classes != len(shape.classes):
        raise ConfigError(
            f"data.num_classes={data.num_classes} but {where} has {len(shape.classes)} class "
            f"folders ({', '.join(shape.classes[:8])}{', ...' if len(shape.classes) > 8 else ''})"
            f"; set data.num_classes={len(shape.classes)} or leave it null"
        )
    if data.class_names is None:
        data.class_names = list(shape.classes)
    elif list(data.class_names) != shape.classes:
        raise ConfigError(
            f"data.class_names {list(data.class_names)[:8]} do not match the class folders of "
            f"{where} {shape.classes[:8]} (sorted, as labels are numbered); leave "
            "data.class_names null to use the folder names"
        )
    if not shape.headers:
        if data.image_size is None or data.channels is None:
            raise ConfigError(f"no image in {where} could be read to infer its size and channels")
        return shape
    colour = "RGB" if shape.has_colour else "greyscale"
    if data.channels is None:
        data.channels = 3 if shape.has_colour else 1
    elif data.channels not in (1, 3):
        raise ConfigError(
            f"data.channels={data.channels} but image folders give 1 (greyscale) or 3 (RGB) "
            "channels; leave it null to follow the images"
        )
    elif data.channels == 1 and shape.has_colour:
        warn(
            f"data.channels=1 but the images in {where} are {colour}: training on greyscale "
            "(set data.channels=3 to keep colour)"
        )
    elif data.channels == 3 and not shape.has_colour:
        warn(
            f"data.channels=3 but the images in {where} are greyscale: each is repeated in 3 "
            "channels (set data.channels=1 to train on 1 channel)"
        )
    sides = shape.short_sides
    common = sides.most_common(1)[0][0]
    if data.image_size is None:
        data.image_size = common
        others = shape.headers - sides[common]
        if others:
            warn(
                f"the images in {where} have {len(sides)} sizes: data.image_size={common} (the "
                f"most common short side); {others} of {shape.headers} have another size and are "
                "resized to it (set data.image_size to choose)"
            )
    else:
        target = int(data.image_size)
        keep = (
            f"(set data.image_size={common} or leave it null to keep their size)"
            if target != common
            else f"(resize them to {target} px yourself to choose how)"
        )
        smaller = sum(c for s, c in sides.items() if s < target)
        larger = sum(c for s, c in sides.items() if s > target)
        if larger:
            seen = max(s for s in sides if s > target)
            warn(
                f"data.image_size={target} but {_of(larger, shape)} images in {where} are larger "
                f"(up to {seen} px): training on {target} px downscaled images {keep}"
            )
        if smaller:
            seen = min(s for s in sides if s < target)
            warn(
                f"data.image_size={target} but {_of(smaller, shape)} images in {where} are smaller "
                f"(down to {seen} px): training on {target} px upscaled images {keep}"
            )
    oblong = [(size, count) for size, count in shape.sizes.items() if size[0] != size[1]]
    if oblong:
        (width, height), _ = max(oblong, key=lambda item: item[1])
        warn(
            f"{_of(sum(c for _, c in oblong), shape)} images in {where} are not square (e.g. "
            f"{width}x{height}): centre-cropped to squares (crop them yourself to keep other parts)"
        )
    alpha = sum(c for m, c in shape.modes.items() if m in ALPHA_MODES or m == "P+alpha")
    if alpha:
        warn(
            f"{_of(alpha, shape)} images in {where} have an alpha channel: it is dropped, "
            "transparent pixels keep the colour stored under them (often black; flatten them "
            "onto a background yourself to choose it)"
        )
    deep = sum(c for m, c in shape.modes.items() if m in HIGH_BIT_MODES)
    if deep:
        modes = sorted({m for m in shape.modes if m in HIGH_BIT_MODES})
        warn(
            f"{_of(deep, shape)} images in {where} have more than 8 bits ({', '.join(modes)}): "
            "scaled to 8 bits (save them as 8-bit images to choose the scaling)"
        )
    return shape


def _known_names(data: DictConfig) -> list[str] | None:
    """The class names a built-in dataset knows, in label order (None where unknown or costly)."""
    if data.name in ("fashion_mnist", "moving_fmnist"):
        from elt.data.fashion_mnist import CLASSES

        return list(CLASSES)
    if data.name == "ucf101" and data.root:
        from elt.data.ucf101 import LIST_DIR, read_class_index

        path = Path(data.root) / LIST_DIR / "classInd.txt"
        try:
            return read_class_index(path) if path.is_file() else None
        except (OSError, ValueError):
            return None
    return None


def resolve_data_section(data: DictConfig) -> None:
    """The ``data:`` section with its shape keys and class names filled in place (see the module
    docstring); one-line :class:`ConfigError` where the data contradicts it or a key cannot be
    inferred."""
    with open_dict(data):
        if "class_names" not in data:
            data.class_names = None
        if _signature(data) in _resolved:
            return  # resolved before in this command (its warnings were printed then)
        if data.name == "folder":
            resolve_folder(data)
        else:
            known = {
                "fashion_mnist": {"channels": 1, "num_classes": 10},
                "moving_fmnist": {"channels": 1, "num_classes": 10},
                "ucf101": {"channels": 3, "num_classes": 101},
            }.get(data.name, {})
            if data.name == "fashion_mnist":
                known["image_size"] = FASHION_MNIST_SIZE
            for key in SHAPE_KEYS:
                if data[key] is None:
                    if key not in known:
                        raise ConfigError(
                            f"data.{key}=null is inferred only for data.name=folder; set "
                            f"data.{key} for data.name={data.name}"
                        )
                    data[key] = known[key]
            if data.class_names is None:
                names = _known_names(data)
                if names is not None and len(names) == data.num_classes:
                    data.class_names = names
        names = data.class_names
        if names is not None:
            names = list(names)
            if len(names) != data.num_classes:
                raise ConfigError(
                    f"data.class_names has {len(names)} names but data.num_classes="
                    f"{data.num_classes}; give one name per class or leave it null"
                )
        _resolved.add(_signature(data))


def _signature(data: DictConfig) -> tuple:
    names = data.get("class_names")
    return (
        data.name,
        str(data.root),
        *(data.get(key) for key in SHAPE_KEYS),
        tuple(names) if names is not None else None,
    )


def resolve_data_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` (changed in place and returned) with ``data.image_size``, ``data.channels``,
    ``data.num_classes`` and ``data.class_names`` concrete, then validated again with them. Call it
    before building anything from the data config; calling it again is harmless (warnings are
    printed once per process)."""
    from elt.config import validate

    if OmegaConf.select(cfg, "data", default=None) is None:
        return cfg
    resolve_data_section(cfg.data)
    validate(cfg)
    return cfg


def class_names_of(cfg) -> list[str] | None:
    """The class names a (saved) config holds, in label order, or None (configs from before
    ``data.class_names``, or data without names)."""
    names = OmegaConf.select(cfg, "data.class_names", default=None) if cfg is not None else None
    return [str(n) for n in names] if names else None
