"""UCF-101 clips for users who have the data (13,320 YouTube action videos, 101 classes).

Expected layout under ``root`` (the official archives unpacked side by side)::

    ROOT/ucfTrainTestlist/classInd.txt              "1 ApplyEyeMakeup" ... (1-based class ids)
    ROOT/ucfTrainTestlist/trainlist0{1,2,3}.txt     "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    ROOT/ucfTrainTestlist/testlist0{1,2,3}.txt      "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    ROOT/UCF-101/<Class>/<video>.avi                or  ROOT/<Class>/<video>.avi

The split files name the videos; labels come from the class folder via ``classInd.txt`` (0-based
here). Paths are matched case-insensitively when the exact spelling is missing, because the official
lists and archive disagree on a few names (``HandStandPushups`` vs ``HandstandPushups``). Videos
listed but absent are dropped with one warning saying how many; videos present but undecodable are
skipped when read, with a warning that counts them (the dataset then returns the next readable
video, as :class:`~elt.data.folders.ImageFolder` does).

A clip is ``frames`` frames taken every ``frame_stride`` frames. The test split takes the centred
window; the train split a window starting at a position drawn from ``(seed, index)``, so the same
item is the same clip every epoch (a token cache built from it stays valid). Videos shorter than the
window repeat their last frame. Frames are decoded with PyAV (``pip install 'elt-looped[video]'``),
resized so the short side is ``image_size`` and centre-cropped (ADM's resize, as for image folders).
Items are (3×T×S×S float in [-1, 1], int label)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from elt.data.folders import center_crop_adm

SPLIT_FILES = {"train": "trainlist0{fold}.txt", "test": "testlist0{fold}.txt"}
LIST_DIR = "ucfTrainTestlist"


class UnreadableVideoWarning(UserWarning):
    """A video file could not be decoded and was skipped."""


def _import_av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "data.name=ucf101 decodes videos with PyAV: pip install 'elt-looped[video]' (or av)"
        ) from exc
    return av


def read_class_index(path: Path) -> list[str]:
    """Class names in label order from ``classInd.txt`` (``<1-based id> <name>`` per line)."""
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{number}: expected '<id> <ClassName>', got {line.strip()!r}")
        entries[int(parts[0])] = parts[1]
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise ValueError(f"{path}: class ids must run 1..N without gaps")
    return [entries[i] for i in range(1, len(entries) + 1)]


def clip_indices(length: int, frames: int, stride: int, start: int) -> np.ndarray:
    """Frame numbers of a clip starting at ``start``; past the video's end the last frame
    repeats."""
    return np.minimum(start + stride * np.arange(frames), length - 1)


class UCF101(Dataset):
    """Clips of the official UCF-101 train/test split ``fold`` (1..3); see the module docstring.

    Args:
        root: folder holding ``ucfTrainTestlist/`` and the videos (``UCF-101/<Class>/`` or
            ``<Class>/``).
        split: ``train`` or ``test``.
        fold: official split 1, 2 or 3.
        frames: frames per clip.
        image_size: output side (short side resize + centre crop).
        frame_stride: take every k-th frame.
        limit: keep only the first ``limit`` videos of the split list.
        seed: selects the training clips' start positions.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        fold: int = 1,
        frames: int = 16,
        image_size: int = 128,
        frame_stride: int = 1,
        limit: int | None = None,
        seed: int = 0,
    ):
        if split not in SPLIT_FILES:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLIT_FILES)}")
        if fold not in (1, 2, 3):
            raise ValueError(f"data.fold={fold} must be 1, 2 or 3 (the official UCF-101 splits)")
        if frames < 1 or frame_stride < 1:
            raise ValueError(f"frames ({frames}) and frame_stride ({frame_stride}) must be >= 1")
        _import_av()
        root = Path(root)
        lists = root / LIST_DIR
        list_file = lists / SPLIT_FILES[split].format(fold=fold)
        for needed in (lists / "classInd.txt", list_file):
            if not needed.is_file():
                raise FileNotFoundError(
                    f"UCF-101 split file {needed} not found (data.root must hold "
                    f"{LIST_DIR}/ from the official UCF101TrainTestSplits archive)"
                )
        self.root = root
        self.split = split
        self.frames = frames
        self.image_size = image_size
        self.frame_stride = frame_stride
        self.seed = seed
        self.classes = read_class_index(lists / "classInd.txt")
        by_name = {name.lower(): label for label, name in enumerate(self.classes)}
        video_dir = root / "UCF-101" if (root / "UCF-101").is_dir() else root
        self.video_dir = video_dir
        self._lower_index: dict[str, Path] | None = None
        files: list[tuple[Path, int]] = []
        missing = 0
        for number, line in enumerate(list_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            relative = line.split()[0]
            class_name = relative.replace("\\", "/").split("/")[0]
            if class_name.lower() not in by_name:
                raise ValueError(
                    f"{list_file}:{number}: class {class_name!r} is not in classInd.txt"
                )
            path = self._resolve(relative)
            if path is None:
                missing += 1
                continue
            files.append((path, by_name[class_name.lower()]))
            if limit and len(files) >= limit:
                break
        if missing:
            warnings.warn(
                f"{missing} videos listed in {list_file.name} are missing under {video_dir}; "
                "they are left out",
                UnreadableVideoWarning,
                stacklevel=2,
            )
        if not files:
            raise FileNotFoundError(
                f"none of the videos listed in {list_file} exist under {video_dir}"
            )
        self.files = files
        self.labels = torch.tensor([label for _, label in files], dtype=torch.long)
        self.skipped: set[int] = set()

    def _resolve(self, relative: str) -> Path | None:
        path = self.video_dir / relative
        if path.is_file():
            return path
        if (
            self._lower_index is None
        ):  # built once, only if some name is spelled differently on disk
            self._lower_index = {
                str(p.relative_to(self.video_dir)).replace("\\", "/").lower(): p
                for p in self.video_dir.rglob("*")
                if p.is_file()
            }
        return self._lower_index.get(relative.replace("\\", "/").lower())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def _start(self, index: int, length: int) -> int:
        span = (self.frames - 1) * self.frame_stride + 1
        if length <= span:
            return 0
        if self.split == "test":
            return (length - span) // 2
        return int(np.random.default_rng([self.seed, index]).integers(0, length - span + 1))

    def decode(self, path: Path) -> list:
        """All frames of a video as PyAV frames (UCF-101 videos are a few seconds at 320×240)."""
        av = _import_av()
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            decoded = list(container.decode(stream))
        if not decoded:
            raise ValueError("no decodable frames")
        return decoded

    def load(self, index: int) -> tuple[torch.Tensor, int] | None:
        """Clip ``index`` as 3×T×S×S in [-1, 1] with its label, or ``None`` (and a counted warning)
        if the video cannot be decoded."""
        av = _import_av()
        path, label = self.files[index]
        try:
            decoded = self.decode(path)
        except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
            self._skip(index, exc)
            return None
        chosen = clip_indices(
            len(decoded), self.frames, self.frame_stride, self._start(index, len(decoded))
        )
        converted: dict[int, np.ndarray] = {}
        for i in chosen.tolist():
            if i not in converted:
                image = Image.fromarray(decoded[i].to_ndarray(format="rgb24"))
                converted[i] = np.asarray(center_crop_adm(image, self.image_size), dtype=np.float32)
        clip = np.stack([converted[i] for i in chosen.tolist()])  # T×S×S×3
        tensor = torch.from_numpy(clip).permute(3, 0, 1, 2).div(127.5).sub(1.0)
        return tensor.contiguous(), label

    def _skip(self, index: int, exc: Exception) -> None:
        if index in self.skipped:
            return
        self.skipped.add(index)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warnings.warn(
            f"skipped unreadable video {self.files[index][0]} ({reason}); "
            f"{len(self.skipped)} skipped so far",
            UnreadableVideoWarning,
            stacklevel=3,
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for offset in range(len(self.files)):
            item = self.load((index + offset) % len(self.files))
            if item is not None:
                return item
        raise RuntimeError(f"no readable video in {self.video_dir}")
