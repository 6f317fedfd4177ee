"""Metric suites: a feature extractor, a real reference set and the metrics computed between them.

A sweep takes one suite and calls ``suite.evaluate(images, labels)`` per (model, loop count, steps),
so the extractor is injectable: the Fashion-MNIST classifier (``DomainSuite.fashion_mnist``),
Inception (``InceptionSuite``), I3D (``FVDSuite``), or anything with the same call signature (tests
use a toy one). Reference features are computed once per suite and reused for every model and loop
count."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from elt.eval.classifier import Features
from elt.eval.frechet import frechet_distance, gaussian_stats
from elt.eval.metrics import class_accuracy, inception_score, kid, knn_radii, prdc, precision_recall
from elt.fileio import InputFileError, load_npz

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class Reference:
    """Real data to compare against: images (and labels) and/or precomputed Gaussian statistics."""

    description: str
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def load_reference(path: str | Path) -> Reference:
    """A reference ``.npz`` (ADM layout: ``mu``/``sigma`` statistics and/or ``arr_0`` uint8 images,
    e.g. ``VIRTUAL_imagenet256_labeled.npz``; ``elt sample`` output also works) or a folder of image
    files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
        from PIL import Image

        arrays, unreadable = [], []
        for f in files:
            try:
                with Image.open(f) as handle:
                    arrays.append(np.asarray(handle.convert("RGB")))
            except (
                OSError,
                ValueError,
                SyntaxError,
            ) as exc:  # PIL's errors for damaged or foreign files
                unreadable.append((f, exc))
        if not arrays:
            raise InputFileError(
                f"none of the {len(files)} image files in {path} is readable (e.g. "
                f"{unreadable[0][0].name}: {str(unreadable[0][1]).splitlines()[0][:120]})"
            )
        if unreadable:
            import warnings

            warnings.warn(
                f"skipped {len(unreadable)} unreadable image file(s) in {path} (e.g. "
                f"{unreadable[0][0].name})",
                stacklevel=2,
            )
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(
                f"images in {path} differ in size ({sorted(shapes)[:3]}…); resize them to one size"
            )
        return Reference(f"folder {path} ({len(arrays)} images)", images=np.stack(arrays))
    if not path.is_file():
        raise FileNotFoundError(
            f"reference {path} not found (expected an .npz with mu/sigma or arr_0, or a folder "
            "of images)"
        )
    data = load_npz(path, "reference")
    keys = set(data)
    mu, sigma, images, labels = (data.get(key) for key in ("mu", "sigma", "arr_0", "arr_1"))
    if (mu is None or sigma is None) and images is None:
        raise ValueError(
            f"{path} has neither mu/sigma nor arr_0 images (keys: {', '.join(sorted(keys))})"
        )
    if images is not None and images.dtype != np.uint8:
        raise ValueError(f"{path}: arr_0 must hold uint8 images, found {images.dtype}")
    return Reference(f"{path.name}", images=images, labels=labels, mu=mu, sigma=sigma)


class MetricSuite:
    """Base: holds the extractor and reference, caches the reference features and statistics."""

    name = "suite"
    # (metric key, axis label) pairs that the sweep plots against compute
    plot_metrics: list[tuple[str, str]] = []

    def __init__(self, extractor, reference: Reference, progress: bool = False):
        self.extractor = extractor
        self.reference = reference
        self.progress = progress
        self._ref_features: Features | None = None
        self._ref_stats: tuple[np.ndarray, np.ndarray] | None = None

    def features(self, images: np.ndarray) -> Features:
        return self.extractor(images, progress=self.progress)

    def reference_features(self) -> Features | None:
        if self._ref_features is None and self.reference.images is not None:
            self._ref_features = self.features(self.reference.images)
        return self._ref_features

    def reference_stats(self) -> tuple[np.ndarray, np.ndarray]:
        if self._ref_stats is None:
            if self.reference.mu is not None and self.reference.sigma is not None:
                self._ref_stats = (
                    np.asarray(self.reference.mu, np.float64),
                    np.asarray(self.reference.sigma, np.float64),
                )
            else:
                self._ref_stats = gaussian_stats(self.reference_features().features)
        return self._ref_stats

    def frechet(self, features: np.ndarray) -> float:
        return frechet_distance(*gaussian_stats(features), *self.reference_stats())

    def evaluate(self, images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        raise NotImplementedError

    def floor(self, num: int) -> dict[str, float] | None:
        """Real-vs-real values at ``num`` samples (what a perfect generator would score), if
        known."""
        return None

    def provenance(self) -> dict:
        info = dict(self.extractor.provenance()) if hasattr(self.extractor, "provenance") else {}
        info.update(suite=self.name, reference=self.reference.description)
        return info


class DomainSuite(MetricSuite):
    """FD_cls, KID, precision/recall/density/coverage (k=5) and class accuracy in a domain
    classifier's feature space, with the real-vs-real floor from a second real set
    (``floor_images``)."""

    name = "domain"
    plot_metrics = [
        ("fd_cls", "FD_cls (lower is better)"),
        ("class_acc", "class accuracy (higher is better)"),
    ]

    def __init__(
        self,
        extractor,
        reference: Reference,
        floor_images: np.ndarray | None = None,
        k: int = 5,
        reference_features: Features | None = None,
        floor_features: Features | None = None,
        floor_labels: np.ndarray | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
        progress: bool = False,
    ):
        super().__init__(extractor, reference, progress)
        if reference.images is None and reference_features is None:
            raise ValueError("the domain suite needs reference images (not only statistics)")
        self._ref_features = reference_features
        self.floor_images = floor_images
        self.floor_features = floor_features
        self.floor_labels = floor_labels
        self.k = k
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self._real_radii = None

    @classmethod
    def fashion_mnist(
        cls, extractor=None, data_root=None, progress: bool = False, **kwargs
    ) -> DomainSuite:
        """Reference = the 10k test images; floor = training images (a seeded random subset per
        N)."""
        from elt.data.fashion_mnist import load_arrays
        from elt.eval.classifier import load_classifier

        extractor = extractor or load_classifier()
        test_images, test_labels = load_arrays(data_root, "test")
        train_images, _ = load_arrays(data_root, "train")
        reference = Reference(
            "Fashion-MNIST test split (10000 images)", images=test_images, labels=test_labels
        )
        return cls(extractor, reference, floor_images=train_images, progress=progress, **kwargs)

    @classmethod
    def from_folder_classifier(cls, extractor, progress: bool = False, **kwargs) -> DomainSuite:
        """The suite of a classifier trained with ``elt eval train-classifier --data DIR``
        (:mod:`elt.eval.folder_classifier`): reference = the stored features of the folder's
        training split; floor = its held-out split (features stored, class accuracy = the
        held-out accuracy)."""
        data = extractor.reference()
        heldout = np.asarray(data["heldout"], bool)
        labels = np.asarray(data["labels"])
        feats, logits = np.asarray(data["features"]), np.asarray(data["logits"])
        record = extractor.record
        reference = Reference(
            f"folder {record.get('data_root')}: training split of "
            f"{extractor.folder} ({int((~heldout).sum())} images; floor: "
            f"{int(heldout.sum())} held-out images)",
            labels=labels[~heldout],
        )
        return cls(
            extractor,
            reference,
            reference_features=Features(feats[~heldout], logits[~heldout]),
            floor_features=Features(feats[heldout], logits[heldout]),
            floor_labels=labels[heldout],
            progress=progress,
            **kwargs,
        )

    def compare(self, fake: Features, labels: np.ndarray | None) -> dict[str, float]:
        real = self.reference_features()
        kid_mean, kid_std = kid(
            real.features, fake.features, self.kid_subsets, self.kid_subset_size, self.seed
        )
        values = {"fd_cls": self.frechet(fake.features), "kid": kid_mean, "kid_std": kid_std}
        if min(len(real.features), len(fake.features)) <= self.k:
            # k-NN balls need more than k points on each side (a tiny folder or --num): not computed
            values.update(dict.fromkeys(("precision", "recall", "density", "coverage")))
        else:
            if self._real_radii is None:  # the reference's radii: the same for every evaluated set
                self._real_radii = knn_radii(
                    torch.as_tensor(real.features, dtype=torch.float64), self.k
                )
            values.update(prdc(real.features, fake.features, k=self.k, real_radii=self._real_radii))
        if labels is not None and fake.logits is not None:
            values["class_acc"] = class_accuracy(fake.logits, labels)
        return values

    def evaluate(self, images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        return self.compare(self.features(images), labels)

    def floor(self, num: int) -> dict[str, float] | None:
        """``num`` real images from the floor set vs the reference; class accuracy is the
        classifier's on the reference set against its true labels."""
        if self.floor_features is not None:  # stored real features (a folder classifier)
            rng = np.random.default_rng(self.seed)
            count = min(num, len(self.floor_features.features))
            pick = np.sort(rng.choice(len(self.floor_features.features), count, replace=False))
            values = self.compare(Features(self.floor_features.features[pick]), None)
            if self.floor_labels is not None and self.floor_features.logits is not None:
                values["class_acc"] = class_accuracy(self.floor_features.logits, self.floor_labels)
            values["n"] = int(count)
            return values
        if self.floor_images is None:
            return None
        rng = np.random.default_rng(self.seed)
        pick = np.sort(
            rng.choice(len(self.floor_images), min(num, len(self.floor_images)), replace=False)
        )
        values = self.compare(self.features(self.floor_images[pick]), None)
        ref = self.reference_features()
        if self.reference.labels is not None and ref.logits is not None:
            values["class_acc"] = class_accuracy(ref.logits, self.reference.labels)
        values["n"] = len(pick)
        return values

    def provenance(self) -> dict:
        info = super().provenance()
        info.update(
            prdc_k=self.k,
            kid={
                "subsets": self.kid_subsets,
                "subset_size": self.kid_subset_size,
                "kernel": "(x.y/d + 1)^3",
            },
            floor="real training images (seeded subset of the same N) vs the reference; class "
            "accuracy of the reference set"
            if self.floor_features is None
            else "the held-out real images (seeded subset of at most N) vs the reference (the "
            "training split); class accuracy = held-out accuracy",
        )
        return info


class InceptionSuite(MetricSuite):
    """FID against reference statistics (or images), Inception Score over 5000-sample splits, and
    precision / recall (k=3) against reference images when the reference has them (ADM's reference
    batches do)."""

    name = "inception"
    plot_metrics = [("fid", "FID (lower is better)"), ("is", "Inception Score (higher is better)")]

    def __init__(
        self,
        extractor,
        reference: Reference,
        is_split_size: int = 5000,
        k: int = 3,
        progress: bool = False,
    ):
        super().__init__(extractor, reference, progress)
        self.is_split_size = is_split_size
        self.k = k

    def evaluate(self, images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        return self.compare(self.features(images), labels)

    def compare(self, fake: Features, labels: np.ndarray | None = None) -> dict[str, float]:
        """The metrics of already extracted features (``elt eval`` under torchrun extracts them on
        every rank)."""
        is_mean, is_std = inception_score(fake.logits, self.is_split_size)
        values = {"fid": self.frechet(fake.features), "is": is_mean, "is_std": is_std}
        real = self.reference_features()
        if real is not None:
            values.update(precision_recall(real.features, fake.features, k=self.k))
        return values

    def provenance(self) -> dict:
        info = super().provenance()
        info.update(is_split_size=self.is_split_size, precision_recall_k=self.k)
        return info


class FVDSuite(MetricSuite):
    """FVD: Fréchet distance on I3D logits against reference videos or their statistics."""

    name = "fvd"
    plot_metrics = [("fvd", "FVD (lower is better)")]

    def evaluate(self, images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        return self.compare(self.features(images), labels)

    def compare(self, fake: Features, labels: np.ndarray | None = None) -> dict[str, float]:
        return {"fvd": self.frechet(fake.features)}
