"""The domain feature extractor for Fashion-MNIST: a small CNN trained on the real training split.

Inception features are out of domain for 32×32 grey clothes, so sample quality is measured in the
penultimate (128-d) feature space of a classifier trained on the data itself (FD_cls, KID, PRDC),
and its logits give the class accuracy of class-conditional samples. Its weights ship in
``elt/assets`` (≈1.4 MB) with a JSON recording the test accuracy, the SHA-256 of the weights, and
the real-vs-real floor; they are reproduced by ``elt eval train-classifier`` (seeded, one thread, a
few minutes on a CPU).

Inputs: uint8 images N×H×W(×1) as the generators write them; 32×32 (Fashion-MNIST zero-padded from
28, as the generators are trained) or 28×28 (padded here with the background value)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from elt.errors import UserError
from elt.fileio import InputFileError, load_safetensors, write_json, write_via
from elt.runtime import resolve_device

ASSETS = Path(__file__).resolve().parent.parent / "assets"
WEIGHTS_NAME = "fmnist_classifier.safetensors"
RECORD_NAME = "fmnist_classifier.json"
IMAGE_SIZE = 32
FEATURE_DIM = 128
NUM_CLASSES = 10


class ClassifierMissingError(UserError, FileNotFoundError):
    """The shipped classifier weights are not where they should be."""


class ImageFormatError(UserError, ValueError):
    """Images the classifier cannot take (not grey, not 28/32 px, not uint8)."""


class FMNISTClassifier(nn.Module):
    """Three conv stages (32→16→8→4 px) and a 128-d embedding; ``features`` is the embedding
    (post-ReLU, like Inception's pool3), ``head`` maps it to 10 logits.

    ``channels`` and larger inputs serve the classifiers trained on an image folder
    (:mod:`elt.eval.folder_classifier`): an adaptive average pool brings the last stage to 4×4
    (the identity at 32 px, so the Fashion-MNIST weights and outputs are unchanged)."""

    def __init__(
        self,
        width: int = 32,
        feature_dim: int = FEATURE_DIM,
        num_classes: int = NUM_CLASSES,
        channels: int = 1,
    ):
        super().__init__()

        def stage(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(
            stage(channels, width), stage(width, 2 * width), stage(2 * width, 4 * width)
        )
        self.pool = nn.AdaptiveAvgPool2d(4)  # parameter-free: the state dict keys are unchanged
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * width * 4 * 4, feature_dim), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.pool(self.body(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features N×128, logits N×10) for images N×1×32×32 in [-1, 1]."""
        h = self.features(x)
        return h, self.head(self.dropout(h))


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W, N×H×W×1 or N×1×H×W (28 or 32 px) → float N×1×32×32 in [-1, 1],
    zero(-1)-padded."""
    x = (
        images if torch.is_tensor(images) else torch.from_numpy(np.array(images))
    )  # copy: inputs may be read-only
    if x.dtype != torch.uint8:
        raise ImageFormatError(
            f"expected uint8 images (as the generators write them), got {x.dtype}"
        )
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    elif x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ImageFormatError(
            f"the Fashion-MNIST classifier takes grey images N×H×W(×1), got shape {tuple(x.shape)}"
        )
    x = x.float().div(127.5).sub(1.0).unsqueeze(1)
    size = x.shape[-1]
    if x.shape[-2] != size or size not in (28, IMAGE_SIZE):
        raise ImageFormatError(
            f"the Fashion-MNIST classifier takes 28×28 or 32×32 images, got {tuple(x.shape[-2:])}"
        )
    if size == 28:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)
    return x


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Features:
    """What a feature extractor returns: N×D features and, when it classifies, N×C logits."""

    features: np.ndarray
    logits: np.ndarray | None = None


class ClassifierFeatures:
    """Feature extractor over the Fashion-MNIST classifier: ``extractor(uint8 images) ->
    Features``."""

    def __init__(
        self,
        model: FMNISTClassifier,
        digest: str,
        name: str = "fmnist-classifier",
        batch_size: int = 1000,
        device: str | torch.device = "cpu",
        prepare=None,
    ):
        self.model = model.to(device).eval()
        self.prepare = prepare or to_model_input  # uint8 images -> the model's float input
        self.digest = digest
        self.name = name
        self.batch_size = batch_size
        self.device = resolve_device(str(device))

    @torch.no_grad()
    def __call__(self, images: np.ndarray, progress: bool = False) -> Features:
        feats, logits = [], []
        for start in tqdm(
            range(0, len(images), self.batch_size),
            desc="features",
            disable=not progress,
            leave=False,
        ):
            x = self.prepare(images[start : start + self.batch_size]).to(self.device)
            h, z = self.model(x)
            feats.append(h.cpu())
            logits.append(z.cpu())
        if not feats:
            classes = self.model.head.out_features
            return Features(
                np.zeros((0, FEATURE_DIM), np.float32), np.zeros((0, classes), np.float32)
            )
        return Features(torch.cat(feats).numpy(), torch.cat(logits).numpy())

    def provenance(self) -> dict:
        return {"extractor": self.name, "sha256": self.digest, "feature_dim": FEATURE_DIM}


def load_weights(model: FMNISTClassifier, weights: Path, fits: str, hint: str = ""):
    """``model`` with the safetensors ``weights`` loaded; weights that do not fit it are one
    :class:`InputFileError` line (``… do not fit <fits> (<why>)<hint>``)."""
    state = load_safetensors(weights, "classifier weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputFileError(
            f"classifier weights {str(weights)!r} do not fit {fits} "
            f"({str(exc).splitlines()[0][:160]}){hint}"
        ) from None
    return model


def load_classifier(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> ClassifierFeatures:
    """The shipped classifier (or weights at ``path``, or the folder 'elt eval train-classifier'
    wrote them to) as a feature extractor. (:func:`elt.eval.inputs.load_classifier` also loads
    the classifiers of ``elt eval train-classifier --data DIR``.)"""
    if path and Path(path).is_dir() and (Path(path) / WEIGHTS_NAME).is_file():
        path = Path(path) / WEIGHTS_NAME
    weights = Path(path) if path else ASSETS / WEIGHTS_NAME
    if not weights.is_file():
        raise ClassifierMissingError(
            f"classifier weights {weights} not found; recreate them with "
            "'elt eval train-classifier' (a few minutes on a CPU)"
        )
    model = load_weights(
        FMNISTClassifier(),
        weights,
        "the Fashion-MNIST classifier",
        "; use weights from 'elt eval train-classifier'",
    )
    return ClassifierFeatures(model, file_sha256(weights), device=device)


def shipped_record() -> dict | None:
    """The JSON shipped next to the weights (test accuracy, SHA-256, real-vs-real floor), if
    present."""
    path = ASSETS / RECORD_NAME
    return json.loads(path.read_text()) if path.is_file() else None


# -- training --------------------------------------------------------------------------------------
def fit_classifier(
    model: FMNISTClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    shift: int,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` on ``images`` (N×C×S×S in [-1, 1]) and ``labels``; returns the batch losses.
    AdamW (weight decay 0.05) with a one-cycle learning rate, batches in a seeded order, a random
    roll of up to ±``shift`` px per batch as the only augmentation, label smoothing 0.05."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    total = epochs * ((len(images) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total, pct_start=0.15
    )
    order_rng = torch.Generator().manual_seed(seed)
    bar = tqdm(total=total, desc="train classifier", disable=not progress)
    losses = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=order_rng)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            shifts = torch.randint(-shift, shift + 1, (2,), generator=order_rng).tolist()
            x = torch.roll(images[index], shifts=shifts, dims=(2, 3))
            _, logits = model(x)
            loss = F.cross_entropy(logits, labels[index], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    bar.close()
    return losses


@torch.no_grad()
def evaluate_accuracy(
    model: FMNISTClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        _, logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(images)


def train_classifier(
    out_dir: str | Path = ASSETS,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    threads: int = 1,
    data_root: str | Path | None = None,
    limit: int | None = None,
    test_limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Train the classifier on the Fashion-MNIST training split and write
    ``fmnist_classifier.safetensors`` plus ``fmnist_classifier.json`` (test accuracy, SHA-256,
    settings) to ``out_dir``. ``limit`` and ``test_limit`` use only the first images of each split
    (quick runs, tests).

    Reproducible: seeded initialisation and batch order, a fixed thread count (the reduction order
    of CPU kernels depends on it). AdamW with a one-cycle (warm-up, cosine decay) learning rate;
    random ±2 px shifts as the only augmentation, so the features tolerate the small misplacements
    of generated images."""
    from elt.data.fashion_mnist import FashionMNIST

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_set = FashionMNIST(data_root, "train", image_size=IMAGE_SIZE, limit=limit)
    test_set = FashionMNIST(data_root, "test", image_size=IMAGE_SIZE, limit=test_limit)
    model = FMNISTClassifier()
    start_time = time.perf_counter()
    losses = fit_classifier(
        model, train_set.images, train_set.labels, epochs, batch_size, lr, seed, 2, progress
    )
    seconds = time.perf_counter() - start_time
    test_accuracy = evaluate_accuracy(model, test_set.images, test_set.labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_NAME
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    write_via(weights, lambda tmp: save_file(state, str(tmp)))
    record = {
        "name": "fmnist-classifier",
        "weights": WEIGHTS_NAME,
        "sha256": file_sha256(weights),
        "parameters": sum(p.numel() for p in model.parameters()),
        "feature_dim": FEATURE_DIM,
        "input": "uint8 N×32×32(×1) (28×28 is padded), scaled to [-1, 1]",
        "test_accuracy": test_accuracy,
        "train_images": len(train_set),
        "test_images": len(test_set),
        "settings": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "threads": threads,
            "optimizer": "AdamW(wd=0.05), OneCycle",
            "augmentation": "random roll ±2 px",
            "label_smoothing": 0.05,
        },
        "train_seconds": round(seconds, 1),
        "final_train_loss": float(np.mean(losses[-50:])),
        "command": f"elt eval train-classifier --epochs {epochs} --seed {seed} --threads {threads}",
        "torch": torch.__version__,
    }
    write_json(out / RECORD_NAME, record, ensure_ascii=False)
    return record
