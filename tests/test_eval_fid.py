"""FID and KID on features: closed forms, scipy's sqrtm route, shifts, the sharded extractor."""

import numpy as np
import pytest
import scipy.linalg

from styleavatar_jax.eval import fid


def _gaussian(seed, n, d, shift=0.0):
    """n draws of one correlated Gaussian in d dims (the mixing is fixed), plus `shift`."""
    mix = np.random.default_rng(100).standard_normal((d, d)) / np.sqrt(d)
    return np.random.default_rng(seed).standard_normal((n, d)) @ mix + shift


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_shift():
    x = _gaussian(0, 500, 64)
    mu, sigma = fid.feature_stats(x)
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (64, 64)
    assert fid.frechet_distance(mu, sigma, mu, sigma) <= 1e-6 * np.trace(sigma)
    # rank-deficient (N < d, as 16 images of 2048-d features): still 0
    few = _gaussian(1, 16, 256)
    m2, s2 = fid.feature_stats(few)
    assert fid.frechet_distance(m2, s2, m2, s2) <= 1e-6 * np.trace(s2)
    assert fid.fid_from_features(few, few) <= 1e-6 * np.trace(s2)  # the N×N route
    values = [fid.fid_from_features(x, x + s) for s in (0.1, 0.3, 1.0)]
    assert 0 < values[0] < values[1] < values[2]
    # A pure mean shift leaves Σ unchanged: FD = |Δμ|² exactly (d · s²).
    np.testing.assert_allclose(values, [64 * s**2 for s in (0.1, 0.3, 1.0)], rtol=1e-6)


def test_closed_form_for_gaussians_and_scipy_sqrtm():
    rng = np.random.default_rng(2)
    d = 32
    a = rng.standard_normal((d, d))
    sigma = a @ a.T / d + 0.1 * np.eye(d)
    delta = rng.standard_normal(d)
    # Equal covariances: |Δμ|²
    assert fid.frechet_distance(delta, sigma, 0 * delta, sigma) == pytest.approx(
        delta @ delta, rel=1e-9
    )
    # Scaled covariance c²Σ: tr Σ (1 − c)² + |Δμ|²
    c = 1.7
    expected = delta @ delta + np.trace(sigma) * (1 - c) ** 2
    assert fid.frechet_distance(delta, sigma, 0 * delta, c * c * sigma) == pytest.approx(
        expected, rel=1e-9
    )
    # General case vs pytorch-fid's formula with scipy.linalg.sqrtm
    b = rng.standard_normal((d, d))
    sigma2 = b @ b.T / d
    covmean = scipy.linalg.sqrtm(sigma @ sigma2).real
    ref = delta @ delta + np.trace(sigma) + np.trace(sigma2) - 2 * np.trace(covmean)
    assert fid.frechet_distance(delta, sigma, 0 * delta, sigma2) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="do not match"):
        fid.frechet_distance(delta, sigma, delta[:3], sigma)
    with pytest.raises(ValueError, match="N ≥ 2"):
        fid.feature_stats(np.zeros((1, 4)))


def test_few_images_route_equals_covariance_route():
    """N ≤ d: the N1×N2 nuclear-norm route equals Fréchet distance of the statistics."""
    a, b = _gaussian(7, 20, 64), _gaussian(8, 13, 64, shift=0.2) * 1.3
    ref = fid.frechet_distance(*fid.feature_stats(a), *fid.feature_stats(b))
    assert fid.fid_from_features(a, b) == pytest.approx(ref, rel=1e-9)
    big = _gaussian(9, 80, 64)  # N > d: the covariance route itself
    assert fid.fid_from_features(big, b) == pytest.approx(
        fid.frechet_distance(*fid.feature_stats(big), *fid.feature_stats(b)), rel=1e-12
    )


def _kid_reference(real, fake, subsets, m, seed):
    """The unbiased MMD² written out term by term (loops), same subsets as fid.kid."""
    rng = np.random.default_rng(seed)
    d = real.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3
    total = 0.0
    for _ in range(subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
        yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
        xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
        total += (xx + yy) / (m * (m - 1)) - 2 * xy / m**2
    return total / subsets


def test_kid_matches_term_by_term_mmd_and_grows_with_shift():
    x = _gaussian(3, 40, 8)
    y = _gaussian(4, 30, 8, shift=0.5)
    ours = fid.kid_from_features(x, y, num_subsets=3, max_subset_size=12, seed=5)
    ref = _kid_reference(x, y, 3, 12, 5)
    assert ours == pytest.approx(ref, rel=1e-10)
    big = _gaussian(5, 400, 16)
    other = _gaussian(6, 400, 16)
    same = fid.kid_from_features(big, other, num_subsets=20, max_subset_size=200)
    shifted = [fid.kid_from_features(big, other + s, num_subsets=20, max_subset_size=200)
               for s in (0.5, 1.0, 2.0)]  # fmt: skip
    assert abs(same) < 0.05 * shifted[0]
    assert 0 < shifted[0] < shifted[1] < shifted[2]
    # The whole set against itself: the unbiased estimator's exact value
    # 2/(m − 1)·(mean K − mean diag K), negative (k(x, x) exceeds the average k).
    m = 50
    xs = big[:m]
    kxx = (xs @ xs.T / 16 + 1) ** 3
    closed = (2 * (kxx.sum() - np.trace(kxx)) / (m - 1) - 2 * kxx.sum() / m) / m
    assert fid.kid_from_features(xs, xs, num_subsets=2) == pytest.approx(closed, rel=1e-9)
    assert closed == pytest.approx(2 / (m - 1) * (kxx.mean() - np.diag(kxx).mean()), rel=1e-9)
    assert closed < 0


def test_to_uint8_is_stylegans_quantisation():
    x = np.array([-1.0, -0.999, 0.0, 0.5, 1.0, 1.5], np.float32)
    np.testing.assert_array_equal(fid.to_uint8(x), [0, 0, 128, 191, 255, 255])
