"""Sample-quality metrics on feature sets: KID, precision/recall/density/coverage, Inception Score,
class accuracy. All take plain arrays (N×D features, N×C logits), so every feature extractor shares
them.

Distances and kernels run in torch (chunked, so 10k×10k comparisons never hold a full matrix) in
float64 by default: the neighbourhood tests compare distances with radii, and float32 round-off near
a radius would flip memberships."""

from __future__ import annotations

import math

import numpy as np
import torch


def _tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if t.ndim != 2:
        raise ValueError(f"expected an N×D feature array, got shape {tuple(t.shape)}")
    return t.to(dtype)


# -- KID -------------------------------------------------------------------------------------------
def _polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kid(
    real: np.ndarray,
    fake: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD² estimate with the cubic
    polynomial kernel k(x, y) = (x·y/d + 1)³, averaged over random subsets. Returns (mean, std over
    subsets).

    Unbiased: the within-set sums leave out the diagonal, so identical distributions give 0 in
    expectation (single estimates may be negative) and the value does not depend on N the way FD
    does."""
    x, y = _tensor(real, dtype), _tensor(fake, dtype)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        xs = x[torch.from_numpy(rng.choice(len(x), m, replace=False))]
        ys = y[torch.from_numpy(rng.choice(len(y), m, replace=False))]
        kxx, kyy, kxy = (
            _polynomial_kernel(xs, xs),
            _polynomial_kernel(ys, ys),
            _polynomial_kernel(xs, ys),
        )
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (
            m * (m - 1)
        )
        values.append(float(within - 2.0 * kxy.sum() / (m * m)))
    return float(np.mean(values)), float(np.std(values))


# -- precision / recall / density / coverage -------------------------------------------------------
def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min_(0.0)


def knn_radii(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest neighbour in the same set (itself
    excluded)."""
    if len(x) <= k:
        raise ValueError(f"need more than k={k} points to estimate k-NN radii, got {len(x)}")
    radii = []
    for start in range(0, len(x), chunk):
        d = _squared_distances(x[start : start + chunk], x)
        # self-distance is 0 and sorts first, so the k-th neighbour is the (k+1)-th smallest value
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def prdc(
    real: np.ndarray,
    fake: np.ndarray,
    k: int = 5,
    chunk: int = 1024,
    dtype: torch.dtype = torch.float64,
    real_radii: torch.Tensor | None = None,
) -> dict[str, float]:
    """Precision, recall (Kynkäänniemi et al. 2019) and density, coverage (Naeem et al. 2020) from
    k-NN balls.

    precision: share of fakes inside some real k-NN ball; recall: share of reals inside some fake
        k-NN ball;
    density: fakes' count of real balls containing them / k, averaged (≈1 when fake ~ real, can
        exceed 1);
    coverage: share of real balls that contain at least one fake. Balls are closed (distance ≤
    radius). With k=3 precision/recall are the standard (ADM) ones. ``real_radii``
    (``knn_radii(real, k)``) may be passed in when one real set is compared with many fake sets: it
    is a third of the work at equal sizes."""
    x, y = _tensor(real, dtype), _tensor(fake, dtype)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    real_r = knn_radii(x, k, chunk) if real_radii is None else real_radii.to(dtype)
    if real_r.shape != (len(x),):
        raise ValueError(f"real_radii has shape {tuple(real_r.shape)}, expected ({len(x)},)")
    fake_r = knn_radii(y, k, chunk)
    inside_real = torch.zeros(len(y), dtype=torch.bool)
    density_counts = torch.zeros(len(y), dtype=dtype)
    nearest_fake = torch.full((len(x),), math.inf, dtype=dtype)
    recalled = torch.zeros(len(x), dtype=torch.bool)
    for start in range(0, len(y), chunk):
        d = _squared_distances(y[start : start + chunk], x)  # fakes × reals
        within = d <= real_r[None, :]
        inside_real[start : start + chunk] = within.any(1)
        density_counts[start : start + chunk] = within.sum(1).to(dtype)
        nearest_fake = torch.minimum(nearest_fake, d.min(0).values)
        recalled |= (d <= fake_r[start : start + chunk, None]).any(0)
    return {
        "precision": float(inside_real.double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(density_counts.mean() / k),
        "coverage": float((nearest_fake <= real_r).double().mean()),
    }


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k=3, as in ADM's evaluator."""
    values = prdc(real, fake, k=k)
    return {"precision": values["precision"], "recall": values["recall"]}


# -- classifier-based ------------------------------------------------------------------------------
def class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples the classifier assigns to the class they were conditioned on."""
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits but {len(labels)} labels")
    return float((logits.argmax(1) == labels).mean())


def inception_score(logits: np.ndarray, split_size: int = 5000) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) ‖ p(y))) over consecutive splits of ``split_size`` samples
    (ADM's
    protocol: 50k samples → 10 splits of 5000). Returns (mean, std over splits)."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"expected N×C logits, got shape {tuple(logits.shape)}")
    scores = []
    for start in range(0, len(logits), split_size):
        log_p = torch.log_softmax(logits[start : start + split_size], dim=1)
        log_marginal = torch.logsumexp(log_p, dim=0) - math.log(len(log_p))
        kl = (log_p.exp() * (log_p - log_marginal[None, :])).sum(1).mean()
        scores.append(float(torch.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores))
