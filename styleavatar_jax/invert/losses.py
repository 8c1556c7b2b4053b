"""Image similarity for reconstruction losses and reports: PSNR, SSIM and multi-scale SSIM.

SSIM follows Wang et al. 2004 ("Image quality assessment: from error visibility to
structural similarity") with its usual settings, those of skimage's
`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`:
an 11-tap Gaussian window of σ = 1.5 (skimage: radius int(3.5σ + 0.5) = 5), K1 = 0.01,
K2 = 0.03, statistics only where the window fits inside the image ('valid'), mean over the
map and the channels.

MS-SSIM follows Wang, Simoncelli & Bovik 2003 ("Multi-scale structural similarity"): the
contrast-structure term at scales 1..M−1 and the full SSIM at scale M, 2×2 average pooling
between scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). An image too small for
five scales (each scale's side must be ≥ 11, the window) uses the first M weights divided
by their sum. As TensorFlow's `tf.image.ssim_multiscale`, each channel gets its own
MS-SSIM and the channels are averaged; per-scale values are clipped below at 1e-6 before
the fractional powers (tf uses relu; the clip keeps the gradient finite).

Images are channels-last [B, H, W, C] in [0, data_range].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """Normalised 1-d Gaussian [size] (scipy.ndimage's taps for radius (size − 1)/2)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).astype(np.float32)


def _band(n: int, taps: np.ndarray) -> np.ndarray:
    """[n − k + 1, n] matrix whose rows are the window at each 'valid' position."""
    k = taps.shape[0]
    m = np.zeros((n - k + 1, n), np.float32)
    for i in range(n - k + 1):
        m[i, i : i + k] = taps
    return m


def _blur(x: jax.Array) -> jax.Array:
    """Separable 'valid' Gaussian filter: [B, H, W, C] -> [B, H − 10, W − 10, C].

    As two banded matmuls: at these image sizes XLA runs them faster than a depthwise conv.
    """
    taps = gaussian_window()
    bh, bw = _band(x.shape[1], taps), _band(x.shape[2], taps)
    x = jnp.einsum("ih,bhwc->biwc", bh, x, precision="highest")
    return jnp.einsum("jw,biwc->bijc", bw, x, precision="highest")


def _ssim_terms(x: jax.Array, y: jax.Array, data_range: float) -> tuple[jax.Array, jax.Array]:
    """-> SSIM and contrast-structure, each the spatial mean per channel [B, C]."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim: expected two [B, H, W, C] images, got {x.shape} and {y.shape}")
    if min(x.shape[1:3]) < WINDOW:
        raise ValueError(f"ssim: images {x.shape[1:3]} are smaller than the {WINDOW}² window")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    mx, my = _blur(x), _blur(y)
    vx = _blur(x * x) - mx * mx
    vy = _blur(y * y) - my * my
    cxy = _blur(x * y) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return jnp.mean(lum * cs, axis=(1, 2)), jnp.mean(cs, axis=(1, 2))


def ssim(x: jax.Array, y: jax.Array, data_range: float = 1.0) -> jax.Array:
    """Single-scale SSIM [B] of images [B, H, W, C] (mean over the map and channels)."""
    return jnp.mean(_ssim_terms(x, y, data_range)[0], axis=-1)


def ms_ssim_scales(height: int, width: int, max_scales: int = len(MS_WEIGHTS)) -> int:
    """Number of scales whose side stays ≥ the window: 5 from 176², 3 at 64², 1 at 11²."""
    side, n = min(height, width), 0
    while n < max_scales and side >= WINDOW:
        n, side = n + 1, side // 2
    if n == 0:
        raise ValueError(f"ms_ssim: images {height}x{width} are smaller than the {WINDOW}² window")
    return n


def ms_ssim(
    x: jax.Array, y: jax.Array, data_range: float = 1.0, scales: int | None = None
) -> jax.Array:
    """Multi-scale SSIM [B] of images [B, H, W, C] (see the module docstring)."""
    n = scales or ms_ssim_scales(x.shape[1], x.shape[2])
    weights = np.asarray(MS_WEIGHTS[:n], np.float64)
    weights = (weights / weights.sum()).astype(np.float32)
    value = 1.0
    for i in range(n):
        s, cs = _ssim_terms(x, y, data_range)
        term = s if i == n - 1 else cs
        value = value * jnp.maximum(term, 1e-6) ** weights[i]
        if i < n - 1:
            x, y = _pool2(x), _pool2(y)
    return jnp.mean(value, axis=-1)


def _pool2(x: jax.Array) -> jax.Array:
    """2×2 average pooling [B, H, W, C] -> [B, H//2, W//2, C] (an odd last row/column dropped)."""
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def psnr(x: jax.Array, y: jax.Array, data_range: float = 1.0) -> jax.Array:
    """PSNR [B] in dB: 10·log10(range² / MSE) over each image."""
    mse = jnp.mean((x.astype(jnp.float32) - y.astype(jnp.float32)) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-20))
