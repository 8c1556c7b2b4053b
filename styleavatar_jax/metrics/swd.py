"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al., "Progressive
Growing of GANs", ICLR 2018, metrics/sliced_wasserstein.py). Needs no pretrained network.

Per image set: a Laplacian pyramid per image (5-tap binomial filter, levels R, R/2, ...,
min_res; the last level is the Gaussian residue); from every level `descriptors_per_image`
random 7×7×3 patches, flattened to 147-d descriptors and normalised per channel by the
set's own mean and std (PGGAN's finalize_descriptors). Per level the SWD is the mean over
`dir_repeats` × `dirs_per_repeat` random unit directions of the mean |difference| between
the sorted projections of the two sets. Values are reported ×1e3 as PGGAN does, per level
(finest first) and averaged. Lower is better; independent draws of one distribution give a
small positive floor.
"""

from __future__ import annotations

import numpy as np

_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0


def _as_float(images, name: str) -> np.ndarray:
    """uint8 [N, H, W, 3] (0..255) or float [N, H, W, 3] in [−1, 1] -> float32 [−1, 1]."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"{name}: expected square RGB images [N, R, R, 3], got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 127.5 - 1.0
    return x.astype(np.float32)


def _blur(x: np.ndarray) -> np.ndarray:
    """Separable 5-tap binomial filter with edge-reflecting padding: [N, H, W, C]."""
    p = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    y = sum(_BINOMIAL[i] * p[:, i : i + h] for i in range(5))
    return sum(_BINOMIAL[i] * y[:, :, i : i + w] for i in range(5))


def _down(x: np.ndarray) -> np.ndarray:
    return _blur(x)[:, ::2, ::2]


def _up(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    y = np.zeros((n, 2 * h, 2 * w, c), x.dtype)
    y[:, ::2, ::2] = x
    return _blur(y) * 4.0


def laplacian_pyramid(images: np.ndarray, min_res: int = 16) -> list[np.ndarray]:
    """float32 [N, R, R, C] -> levels [N, R, R, C], [N, R/2, R/2, C], ..., [N, m, m, C] (m =
    min_res, the Gaussian residue); `reconstruct` inverts it exactly."""
    levels, x = [], np.asarray(images, np.float32)
    while x.shape[1] > min_res:
        small = _down(x)
        levels.append(x - _up(small))
        x = small
    levels.append(x)
    return levels


def reconstruct(levels: list[np.ndarray]) -> np.ndarray:
    x = levels[-1]
    for lap in reversed(levels[:-1]):
        x = _up(x) + lap
    return x


def patch_descriptors(images, *, descriptors_per_image: int = 128, patch: int = 7,
                      min_res: int = 16, seed: int = 0) -> list[np.ndarray]:  # fmt: skip
    """Images (see `_as_float`) -> per pyramid level descriptors [N·D, patch²·3] (finest
    first), normalised per channel over the set."""
    x = _as_float(images, "images")
    r = x.shape[1]
    if r < min_res or r & (r - 1) or min_res < patch:
        raise ValueError(
            f"images: resolution {r} must be a power of two ≥ min_res={min_res} ≥ patch={patch}"
        )
    rng = np.random.default_rng(seed)
    out = []
    for level in laplacian_pyramid(x, min_res):
        n, h, w, c = level.shape
        ys = rng.integers(0, h - patch + 1, (n, descriptors_per_image))
        xs = rng.integers(0, w - patch + 1, (n, descriptors_per_image))
        off = np.arange(patch)
        rows = ys[..., None, None] + off[:, None]  # [n, D, p, 1]
        cols = xs[..., None, None] + off[None, :]  # [n, D, 1, p]
        d = level[np.arange(n)[:, None, None, None], rows, cols]  # [n, D, p, p, C]
        d = d.reshape(n * descriptors_per_image, patch * patch, c)
        d = (d - d.mean(axis=(0, 1))) / (d.std(axis=(0, 1)) + 1e-8)
        out.append(d.reshape(len(d), -1).astype(np.float32))
    return out


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, *, dir_repeats: int = 4,
                       dirs_per_repeat: int = 128, seed: int = 0) -> float:  # fmt: skip
    """Descriptors a, b [M, d] (equal M) -> mean over random unit directions of the 1-D
    Wasserstein-1 distance between the projections (mean |sorted a·v − sorted b·v|)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a, b: expected two [M, d] arrays of one shape, got {a.shape}, {b.shape}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(dir_repeats):
        v = rng.standard_normal((a.shape[1], dirs_per_repeat)).astype(np.float32)
        v /= np.linalg.norm(v, axis=0, keepdims=True)
        pa, pb = np.sort(a @ v, axis=0), np.sort(b @ v, axis=0)
        total += float(np.mean(np.abs(pa - pb)))
    return total / dir_repeats


def swd(images_a, images_b, *, descriptors_per_image: int = 128, min_res: int = 16,
        seed: int = 0) -> dict:  # fmt: skip
    """Two image sets (uint8 or [−1, 1] float, [N, R, R, 3], same R; the larger set is
    subsampled to the smaller) -> {'levels': {resolution: SWD·1e3}, 'mean': float}."""
    a, b = _as_float(images_a, "images_a"), _as_float(images_b, "images_b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"images_a {a.shape[1:]} and images_b {b.shape[1:]} differ in size")
    n = min(len(a), len(b))
    kw = dict(descriptors_per_image=descriptors_per_image, min_res=min_res)
    da = patch_descriptors(a[:n], seed=seed, **kw)
    db = patch_descriptors(b[:n], seed=seed, **kw)  # same patch positions: swd(a, a) = 0
    levels = {}
    for i, (x, y) in enumerate(zip(da, db, strict=True)):
        levels[a.shape[1] >> i] = 1e3 * sliced_wasserstein(x, y, seed=seed + 2 + i)
    return {"levels": levels, "mean": float(np.mean(list(levels.values())))}
