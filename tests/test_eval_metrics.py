"""Metric maths against closed forms, scipy, brute force and constructed point sets."""

import numpy as np
import pytest
import scipy.linalg
import torch

from elt.eval.frechet import (
    frechet_distance,
    frechet_distance_features,
    gaussian_stats,
    trace_sqrt_product,
)
from elt.eval.metrics import class_accuracy, inception_score, kid, knn_radii, prdc, precision_recall


def random_spd(d, rng, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


# -- Fréchet distance ------------------------------------------------------------------------------
def test_frechet_closed_form_diagonal_and_shared_eigenbasis():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # commuting covariances: same eigenvectors
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T) == pytest.approx(
        expected, rel=1e-9
    )


def test_frechet_closed_form_non_commuting_2d():
    # For 2×2 SPD A, B: tr((AB)^½) = sqrt(tr(AB) + 2 sqrt(det A det B)) (eigenvalues of AB are
    # positive)
    a = np.array([[2.0, 0.7], [0.7, 1.0]])
    b = np.array([[0.5, -0.3], [-0.3, 1.5]])
    assert not np.allclose(a @ b, b @ a)
    trace_root = np.sqrt(np.trace(a @ b) + 2 * np.sqrt(np.linalg.det(a) * np.linalg.det(b)))
    assert trace_sqrt_product(a, b) == pytest.approx(trace_root, rel=1e-12)
    mu1, mu2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(a) + np.trace(b) - 2 * trace_root
    assert frechet_distance(mu1, a, mu2, b) == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_scipy_sqrtm_on_random_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 24)) @ rng.normal(size=(24, 24))
    y = rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24)) + 0.3
    mu1, s1 = gaussian_stats(x)
    mu2, s2 = gaussian_stats(y)
    root = scipy.linalg.sqrtm(s1 @ s2)
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(root))
    assert frechet_distance_features(x, y) == pytest.approx(reference, rel=1e-8)


def test_frechet_symmetric_zero_for_identical_and_finite_when_singular():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(50, 8)), rng.normal(size=(60, 8)) * 2
    assert frechet_distance_features(x, y) == pytest.approx(
        frechet_distance_features(y, x), rel=1e-9
    )
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-9)
    # fewer samples than dimensions: rank-deficient covariances, still finite and >= 0
    small_a, small_b = rng.normal(size=(10, 64)), rng.normal(size=(12, 64)) + 1
    value = frechet_distance_features(small_a, small_b)
    assert np.isfinite(value) and value > 0
    assert frechet_distance_features(small_a, small_a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_of_samples_converges_to_population_value():
    rng = np.random.default_rng(3)
    s1, s2 = random_spd(5, rng), random_spd(5, rng, 2.0)
    mu1, mu2 = np.zeros(5), np.ones(5) * 0.5
    exact = frechet_distance(mu1, s1, mu2, s2)
    x = rng.multivariate_normal(mu1, s1, size=200_000)
    y = rng.multivariate_normal(mu2, s2, size=200_000)
    assert frechet_distance_features(x, y) == pytest.approx(exact, rel=0.02)


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(np.zeros((1, 3)))


# -- KID -------------------------------------------------------------------------------------------
def brute_force_mmd2(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * k(x, y).mean()
    )


def test_kid_equals_unbiased_mmd_when_subset_is_everything():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(80, 7)), rng.normal(size=(80, 7)) + 0.4
    mean, std = kid(x, y, subsets=3, subset_size=80)
    assert mean == pytest.approx(brute_force_mmd2(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)  # every subset is the whole (permuted) set


def test_kid_is_unbiased_on_identical_distributions():
    rng = np.random.default_rng(5)
    unbiased, biased = [], []
    for _ in range(40):
        x, y = rng.normal(size=(100, 10)), rng.normal(size=(100, 10))
        unbiased.append(kid(x, y, subsets=1, subset_size=100)[0])
        kxx = (x @ x.T / 10 + 1) ** 3
        kyy = (y @ y.T / 10 + 1) ** 3
        biased.append(kxx.mean() + kyy.mean() - 2 * ((x @ y.T / 10 + 1) ** 3).mean())
    unbiased, biased = np.array(unbiased), np.array(biased)
    stderr = unbiased.std() / np.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 3 * stderr  # zero in expectation
    assert (unbiased < 0).any()  # single unbiased estimates straddle zero
    assert (
        biased.mean() > 10 * stderr and biased.mean() > unbiased.mean() + 10 * stderr
    )  # the biased one does not


def test_kid_grows_with_distribution_shift():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(500, 16))
    values = [
        kid(x, rng.normal(size=(500, 16)) + shift, subsets=10, subset_size=200)[0]
        for shift in (0, 0.3, 1)
    ]
    assert values[0] < values[1] < values[2]


# -- precision / recall / density / coverage -------------------------------------------------------
def brute_force_prdc(real, fake, k):
    drr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    dff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    drf = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # reals × fakes
    r_real = np.sort(drr, axis=1)[:, k]
    r_fake = np.sort(dff, axis=1)[:, k]
    inside = drf <= r_real[:, None]
    return {
        "precision": inside.any(0).mean(),
        "recall": (drf <= r_fake[None, :]).any(1).mean(),
        "density": inside.sum(0).mean() / k,
        "coverage": (drf.min(1) <= r_real).mean(),
    }


def test_prdc_on_a_constructed_point_set():
    real = np.arange(10, dtype=np.float64)[:, None]  # 0..9 on a line: every k=1 radius is 1
    fake = np.array([[0.5], [100.0]])  # one fake inside the balls of reals 0 and 1, one far away
    values = prdc(real, fake, k=1)
    assert values["precision"] == pytest.approx(0.5)
    assert values["density"] == pytest.approx(1.0)  # (2 balls + 0 balls) / 2 fakes / k=1
    assert values["coverage"] == pytest.approx(0.2)  # only reals 0 and 1 have a fake in their ball
    assert values["recall"] == pytest.approx(
        1.0
    )  # the fakes' k=1 radius is 99.5: every real is inside


def test_prdc_matches_brute_force_and_is_independent_of_chunking():
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(150, 5)), rng.normal(size=(120, 5)) * 1.3 + 0.2
    for k in (3, 5):
        expected = brute_force_prdc(real, fake, k)
        got = prdc(real, fake, k=k)
        chunked = prdc(real, fake, k=k, chunk=7)
        precomputed = prdc(real, fake, k=k, real_radii=knn_radii(torch.as_tensor(real), k))
        assert precomputed == got
        for key in expected:
            assert got[key] == pytest.approx(expected[key], abs=1e-12), key
            assert chunked[key] == got[key], key
    assert precision_recall(real, fake) == {
        k: v for k, v in prdc(real, fake, k=3).items() if k in ("precision", "recall")
    }


def test_prdc_separates_disjoint_and_identical_sets():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(200, 4))
    same = prdc(real, real.copy(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # a mode-collapsed fake set (all near one real point) is precise but covers little
    collapsed = prdc(real, real[:1] + rng.normal(size=(200, 4)) * 1e-3, k=5)
    assert (
        collapsed["precision"] == 1.0 and collapsed["coverage"] < 0.1 and collapsed["recall"] < 0.1
    )


def test_prdc_needs_more_points_than_k():
    with pytest.raises(ValueError, match="more than k"):
        prdc(np.zeros((3, 2)), np.zeros((10, 2)), k=5)


# -- classifier-based metrics ----------------------------------------------------------------------
def test_inception_score_extremes_and_splits():
    uniform = np.zeros((10_000, 7))
    assert inception_score(uniform) == pytest.approx((1.0, 0.0))
    confident = np.full((10_000, 10), -1e4)
    confident[np.arange(10_000), np.arange(10_000) % 10] = 0  # one-hot, all classes equally often
    mean, std = inception_score(confident, split_size=5000)
    assert mean == pytest.approx(10.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # a single-class generator scores 1 however confident it is
    single = np.full((100, 10), -1e4)
    single[:, 3] = 0
    assert inception_score(single)[0] == pytest.approx(1.0)


def test_class_accuracy():
    logits = torch.eye(4).numpy()[[0, 1, 2, 3, 0]]
    assert class_accuracy(logits, np.array([0, 1, 2, 3, 1])) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="labels"):
        class_accuracy(logits, np.array([0, 1]))
