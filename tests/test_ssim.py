"""SSIM / MS-SSIM / PSNR (invert/losses.py) against skimage and an independent scipy version."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from styleavatar_jax.invert import losses as L


def _pair(seed, shape, noise=0.2):
    rng = np.random.default_rng(seed)
    x = rng.random(shape).astype(np.float32)
    y = np.clip(x + noise * rng.standard_normal(shape), 0, 1).astype(np.float32)
    return x, y


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (1, 40, 27, 3), (3, 16, 20, 1)])
def test_ssim_matches_skimage(shape):
    x, y = _pair(0, shape)
    ours = np.asarray(L.ssim(x, y, data_range=1.0))
    ref = [
        structural_similarity(x[i], y[i], channel_axis=-1, data_range=1.0,
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for i in range(shape[0])
    ]  # fmt: skip
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert 0.2 < ours.min() and ours.max() < 0.95  # a real, non-trivial similarity


def test_ssim_data_range_scales():
    x, y = _pair(1, (1, 24, 24, 3))
    np.testing.assert_allclose(L.ssim(255 * x, 255 * y, 255.0), L.ssim(x, y, 1.0), atol=1e-5)


def test_identical_images_score_one():
    x, _ = _pair(2, (2, 64, 64, 3))
    np.testing.assert_allclose(L.ssim(x, x), 1.0, atol=1e-6)
    np.testing.assert_allclose(L.ms_ssim(x, x), 1.0, atol=1e-6)


def _ms_ssim_reference(x, y, weights):
    """Independent numpy/scipy MS-SSIM: scipy's Gaussian filter, border cropped (= 'valid')."""
    c1, c2 = 0.01**2, 0.03**2
    out = np.ones(x.shape[-1])
    for j, w in enumerate(weights):
        for ch in range(x.shape[-1]):
            a, b = x[..., ch].astype(np.float64), y[..., ch].astype(np.float64)
            f = lambda t: gaussian_filter(t, 1.5, truncate=3.5)[5:-5, 5:-5]
            ma, mb = f(a), f(b)
            va, vb, cab = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
            cs = (2 * cab + c2) / (va + vb + c2)
            lum = (2 * ma * mb + c1) / (ma**2 + mb**2 + c1)
            term = (lum * cs).mean() if j == len(weights) - 1 else cs.mean()
            out[ch] *= max(term, 1e-6) ** w
        x, y = _pool(x), _pool(y)
    return out.mean()


def _pool(t):
    h, w = t.shape[0] // 2, t.shape[1] // 2
    return t[: 2 * h, : 2 * w].reshape(h, 2, w, 2, -1).mean((1, 3))


@pytest.mark.parametrize("size,scales", [(64, 3), (176, 5), (50, 3)])
def test_ms_ssim_matches_reference(size, scales):
    assert L.ms_ssim_scales(size, size) == scales
    x, y = _pair(3, (1, size, size, 3), noise=0.1)
    w = np.asarray(L.MS_WEIGHTS[:scales]) / np.sum(L.MS_WEIGHTS[:scales])
    ours = float(L.ms_ssim(x, y)[0])
    np.testing.assert_allclose(ours, _ms_ssim_reference(x[0], y[0], w), atol=1e-5)


def test_one_scale_ms_ssim_is_ssim():
    x, y = _pair(4, (2, 24, 24, 3))
    np.testing.assert_allclose(L.ms_ssim(x, y, scales=1), L.ssim(x, y), atol=1e-6)


def test_too_small_is_an_error():
    x = np.zeros((1, 10, 30, 3), np.float32)
    with pytest.raises(ValueError, match="smaller than the 11"):
        L.ms_ssim(x, x)


def test_ms_ssim_gradient_is_finite_on_anticorrelated_images():
    x, _ = _pair(5, (1, 32, 32, 3))
    g = jax.grad(lambda a: L.ms_ssim(a, 1 - jnp.asarray(x))[0])(jnp.asarray(x))
    assert np.all(np.isfinite(np.asarray(g)))


def test_psnr_known_value():
    x = np.zeros((1, 8, 8, 3), np.float32)
    np.testing.assert_allclose(L.psnr(x, x + 0.1, 1.0), [20.0], atol=1e-4)  # MSE 0.01
    np.testing.assert_allclose(L.psnr(x, x + 0.2, 2.0), [20.0], atol=1e-4)
