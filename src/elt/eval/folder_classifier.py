"""A domain classifier for any image folder (one subfolder per class): the Fashion-MNIST CNN of
:mod:`elt.eval.classifier` with C input channels and S px inputs, trained on a seeded stratified
split of the folder and scored on the held-out rest.

    elt eval train-classifier --data shapes/ --out shapes-classifier
    elt eval --ckpt runs/shapes --classifier shapes-classifier --num 200 --loops 1-4

``CLS_DIR`` then holds

* ``classifier.safetensors``: the weights;
* ``classifier.json``: held-out accuracy, class names, image size, channels, data root, the
  SHA-256 of the weights, settings, time, and the real-vs-real floor;
* ``reference.npz``: the real reference in this classifier's feature space: features (N×128),
  logits and labels of every readable image of the folder, with ``heldout`` marking the held-out
  split. The evaluation compares generated images with the TRAINING split's features (the
  reference), and its real-vs-real floor is the held-out split against that same reference (two
  disjoint real sets); class accuracy of the floor is the held-out accuracy. The folder itself is
  not needed afterwards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from elt.errors import UserError
from elt.eval.classifier import (
    FEATURE_DIM,
    ClassifierFeatures,
    Features,
    FMNISTClassifier,
    ImageFormatError,
    evaluate_accuracy,
    file_sha256,
    fit_classifier,
    load_weights,
)
from elt.fileio import (
    InputFileError,
    load_npz,
    save_npz,
    write_json,
    write_via,
)

WEIGHTS_FILE = "classifier.safetensors"
RECORD_FILE = "classifier.json"
REFERENCE_FILE = "reference.npz"
NAME = "folder-classifier"


def infer_folder_shape(root: str | Path) -> tuple[int, int]:
    """(channels, image size) of an image folder as training infers them
    (:func:`elt.data.shape.inspect_folder`): 3 when any looked-at image has colour, else 1; the
    most common short side."""
    from elt.data.shape import inspect_folder

    try:
        shape = inspect_folder(root)
    except UserError as exc:  # the same one line, naming this command's flag
        raise UserError(str(exc).replace("data.root", "--data")) from None
    if not shape.short_sides:
        raise UserError(f"--data {root}: none of the images looked at could be read")
    return (3 if shape.has_colour else 1), shape.short_sides.most_common(1)[0][0]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the held-out images: ``fraction`` of every class (at least one image of a
    class with two or more), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    heldout = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        take = min(len(index) - 1, max(1, round(fraction * len(index))))
        if take > 0:
            heldout[rng.permutation(index)[:take]] = True
    return heldout


def make_prepare(channels: int, size: int):
    """uint8 N×S×S×C (or N×S×S for one channel, or N×C×S×S) → float N×C×S×S in [-1, 1]; any other
    shape is one line naming what this classifier takes."""

    def prepare(images) -> torch.Tensor:
        x = images if torch.is_tensor(images) else torch.from_numpy(np.array(images))
        if x.dtype != torch.uint8:
            raise ImageFormatError(
                f"expected uint8 images (as the generators write them), got {x.dtype}"
            )
        if x.ndim == 3 and channels == 1:
            x = x.unsqueeze(-1)
        if x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] == channels:
            x = x.permute(0, 2, 3, 1)
        if x.ndim != 4 or tuple(x.shape[1:]) != (size, size, channels):
            raise ImageFormatError(
                f"this folder classifier takes {size}×{size}×{channels} images, got shape "
                f"{tuple(x.shape)}"
            )
        return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    return prepare


class FolderClassifierFeatures(ClassifierFeatures):
    """A folder classifier as a feature extractor, with its record and stored real reference."""

    def __init__(self, model, record: dict, folder: Path, digest: str, device="cpu"):
        super().__init__(
            model,
            digest,
            name=NAME,
            device=device,
            prepare=make_prepare(record["channels"], record["image_size"]),
        )
        self.record = record
        self.folder = folder

    def reference(self) -> dict:
        """The stored real features: ``features``, ``logits``, ``labels``, ``heldout``."""
        path = self.folder / REFERENCE_FILE
        if not path.is_file():
            raise InputFileError(
                f"{path} not found; retrain with 'elt eval train-classifier --data DIR --out "
                f"{self.folder}'"
            )
        return load_npz(path, "classifier reference")

    def provenance(self) -> dict:
        return {
            **super().provenance(),
            "classifier_dir": str(self.folder),
            "data_root": self.record.get("data_root"),
            "heldout_accuracy": self.record.get("heldout_accuracy"),
        }


def read_record(folder: str | Path) -> dict:
    """``classifier.json`` of a folder classifier (one line when it is missing or not one)."""
    path = Path(folder) / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"--classifier {folder}: no {RECORD_FILE} (write one with 'elt eval train-classifier "
            "--data DIR --out CLS_DIR')"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--classifier {folder}: cannot read {RECORD_FILE}: {exc}") from None
    keys = ("image_size", "channels", "num_classes", "class_names", "weights")
    if not isinstance(record, dict) or any(key not in record for key in keys):
        raise UserError(f"--classifier {folder}: {RECORD_FILE} is not a folder classifier's record")
    return record


def load_folder_classifier(
    folder: str | Path, device: str | torch.device = "cpu"
) -> FolderClassifierFeatures:
    folder = Path(folder)
    record = read_record(folder)
    weights = folder / record["weights"]
    model = load_weights(
        FMNISTClassifier(num_classes=record["num_classes"], channels=record["channels"]),
        weights,
        str(folder / RECORD_FILE),
    )
    return FolderClassifierFeatures(model, record, folder, file_sha256(weights), device=device)


def load_folder(root: Path, channels: int, size: int, progress: bool):
    """Every readable image of the folder as float N×C×S×S in [-1, 1], its labels and classes."""
    import warnings

    from elt.data.folders import ImageFolder

    folder = ImageFolder(root, image_size=size, channels=channels)
    images, labels = [], []
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always")
        for i in tqdm(range(len(folder)), desc="read images", disable=not progress, leave=False):
            item = folder.load(i)
            if item is not None:
                images.append(item[0])
                labels.append(item[1])
    if skipped:
        import sys

        print(
            f"elt: warning: skipped {len(folder) - len(images)} unreadable image(s) in {root}",
            file=sys.stderr,
        )
    if not images:
        raise UserError(f"--data {root}: no readable images")
    return torch.stack(images), torch.tensor(labels), folder.classes, folder.root


@torch.no_grad()
def features_of(model, images: torch.Tensor, batch_size: int = 500) -> Features:
    model.eval()
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        h, z = model(images[start : start + batch_size])
        feats.append(h)
        logits.append(z)
    return Features(torch.cat(feats).numpy(), torch.cat(logits).numpy())


def train_folder_classifier(
    data: str | Path,
    out_dir: str | Path,
    image_size: int | None = None,
    channels: int | None = None,
    epochs: int = 5,
    batch_size: int | None = None,
    lr: float = 3e-3,
    holdout: float = 0.15,
    seed: int = 0,
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """Train the classifier on ``data`` (class subfolders) and write weights, record and real
    reference to ``out_dir`` (see the module docstring). ``image_size``/``channels`` default to the
    folder's (:func:`infer_folder_shape`). Same recipe as the Fashion-MNIST classifier (AdamW,
    one-cycle, label smoothing 0.05, random ±S/16 px shifts), seeded and with a fixed thread
    count; the batch defaults to a tenth of the training split (8..64), so that a small folder
    still gets ten steps per epoch."""
    root = Path(data)
    if not 0 < holdout < 1:
        raise UserError(f"--holdout {holdout} must lie strictly between 0 and 1")
    if image_size is None or channels is None:
        found_channels, found_size = infer_folder_shape(root)
        channels = channels or found_channels
        image_size = image_size or found_size
    if channels not in (1, 3):
        raise UserError(f"--channels {channels}: allowed 1 or 3")
    if image_size < 8:
        raise UserError(f"--image-size {image_size}: allowed 8 or more")
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    start_time = time.perf_counter()
    images, labels, classes, used_root = load_folder(root, channels, image_size, progress)
    if len(classes) < 2:
        raise UserError(f"--data {root}: needs at least 2 class subfolders, found {len(classes)}")
    heldout = torch.from_numpy(stratified_split(labels.numpy(), holdout, seed))
    if not heldout.any():
        raise UserError(f"--data {root}: too few images for a held-out split ({len(images)})")
    train_x, train_y = images[~heldout], labels[~heldout]
    batch_size = batch_size or min(64, max(8, len(train_x) // 10))  # ≥ 10 steps per epoch
    model = FMNISTClassifier(num_classes=len(classes), channels=channels)
    shift = max(1, image_size // 16)
    losses = fit_classifier(model, train_x, train_y, epochs, batch_size, lr, seed, shift, progress)
    accuracy = evaluate_accuracy(model, images[heldout], labels[heldout])
    real = features_of(model, images)
    seconds = time.perf_counter() - start_time
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    write_via(out / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    reference = {
        "features": real.features.astype(np.float32),
        "logits": real.logits.astype(np.float32),
        "labels": labels.numpy().astype(np.int64),
        "heldout": heldout.numpy(),
    }
    save_npz(out / REFERENCE_FILE, **reference)
    record = {
        "name": NAME,
        "weights": WEIGHTS_FILE,
        "reference": REFERENCE_FILE,
        "sha256": file_sha256(out / WEIGHTS_FILE),
        "heldout_accuracy": accuracy,
        "class_names": list(classes),
        "num_classes": len(classes),
        "image_size": image_size,
        "channels": channels,
        "data_root": str(Path(used_root).resolve()),
        "train_images": int((~heldout).sum()),
        "heldout_images": int(heldout.sum()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "feature_dim": FEATURE_DIM,
        "input": f"uint8 N×{image_size}×{image_size}×{channels}, scaled to [-1, 1]",
        "reference_note": "reference.npz: features/logits/labels of every image; evaluation "
        "compares with the training split, the floor is the held-out split against it",
        "settings": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "holdout": holdout,
            "seed": seed,
            "threads": threads,
            "optimizer": "AdamW(wd=0.05), OneCycle",
            "augmentation": f"random roll ±{shift} px",
            "label_smoothing": 0.05,
        },
        "train_seconds": round(seconds, 1),
        "final_train_loss": float(np.mean(losses[-20:])),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": f"elt eval train-classifier --data {root} --out {out} --image-size "
        f"{image_size} --epochs {epochs} --seed {seed}",
        "torch": torch.__version__,
    }
    write_json(out / RECORD_FILE, record, ensure_ascii=False)
    return record
