"""Sliced Wasserstein distance on Laplacian-pyramid patches, after Karras et al.,
"Progressive Growing of GANs for Improved Quality, Stability, and Variation" (ICLR 2018),
metrics/sliced_wasserstein.py. Needs no pretrained network; numpy only.

Per image set:
  1. a Laplacian pyramid per image: 5×5 binomial filter ([1, 4, 6, 4, 1] / 16, outer
     product; mirrored borders as cv2.pyrDown / scipy 'mirror'), levels at R, R/2, ...,
     min_res; each level is image − up(down(image)), the last is the Gaussian residue;
  2. from every level `descriptors_per_image` random 7×7×3 patches per image, flattened
     channel-major (as PGGAN's NCHW gather) to 147-d descriptors;
  3. each level's descriptors normalised per channel by the mean and std of *that set's*
     descriptors (PGGAN's finalize_descriptors; the two sets are normalised separately).

Per level the SWD is the mean over `dir_repeats` × `dirs_per_repeat` random unit directions
of the 1-D Wasserstein-1 distance between the two sets' projections (mean |difference| of
the sorted projections). Values are reported ×1e3 as PGGAN does, per level (finest first)
and averaged. Lower is better; independent draws of one distribution give a small positive
floor. Differences from PGGAN: randomness comes from explicit seeds (numpy Generators), patch
positions cover every valid offset (PGGAN's randint excludes the last one), and a channel of
zero std is left unscaled instead of dividing by zero.
"""

from __future__ import annotations

import numpy as np

_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0


def _check_resolution(shape: tuple, name: str, min_res: int) -> None:
    """Square [N, R, R, C] with N ≥ 1 and R a power of two ≥ min_res, else ValueError."""
    if min_res < 1 or min_res & (min_res - 1):
        raise ValueError(f"min_res: must be a power of two, got {min_res}")
    if len(shape) != 4 or shape[1] != shape[2] or shape[0] < 1:
        raise ValueError(f"{name}: expected square images [N, R, R, C], N ≥ 1, got shape {shape}")
    r = shape[1]
    if r < min_res or r & (r - 1):
        raise ValueError(
            f"{name}: resolution {r} must be a power of two ≥ min_res={min_res}, got shape {shape}"
        )


def _as_images(images, name: str, min_res: int) -> np.ndarray:
    """uint8 [N, R, R, 3] in 0..255 or float [N, R, R, 3] in [−1, 1] -> float32 in [−1, 1]."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected RGB images [N, R, R, 3], got shape {x.shape}")
    _check_resolution(x.shape, name, min_res)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 127.5 - 1.0
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 (0..255) or float in [-1, 1], got {x.dtype}")
    return x.astype(np.float32)


def _blur(x: np.ndarray) -> np.ndarray:
    """Separable 5×5 binomial filter, mirrored borders (d c b | a b c d): [N, H, W, C]."""
    p = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    y = sum(_BINOMIAL[i] * p[:, i : i + h] for i in range(5))
    return sum(_BINOMIAL[i] * y[:, :, i : i + w] for i in range(5))


def pyr_down(x: np.ndarray) -> np.ndarray:
    """[N, H, W, C] -> [N, H/2, W/2, C]: blur, keep even pixels (cv2.pyrDown)."""
    return _blur(x)[:, ::2, ::2]


def pyr_up(x: np.ndarray) -> np.ndarray:
    """[N, H, W, C] -> [N, 2H, 2W, C]: zero-insert, blur ×4 (cv2.pyrUp)."""
    n, h, w, c = x.shape
    y = np.zeros((n, 2 * h, 2 * w, c), x.dtype)
    y[:, ::2, ::2] = x
    return _blur(y) * 4.0


def laplacian_pyramid(images: np.ndarray, min_res: int = 16) -> list[np.ndarray]:
    """float [N, R, R, C] -> float32 levels [N, R, R, C], [N, R/2, R/2, C], ...,
    [N, min_res, min_res, C]; the last is the Gaussian residue. `reconstruct` inverts it."""
    x = np.asarray(images, np.float32)
    _check_resolution(x.shape, "images", min_res)
    levels = []
    while x.shape[1] > min_res:
        small = pyr_down(x)
        levels.append(x - pyr_up(small))
        x = small
    levels.append(x)
    return levels


def reconstruct(levels: list[np.ndarray]) -> np.ndarray:
    """Inverse of `laplacian_pyramid`: levels -> [N, R, R, C]."""
    x = levels[-1]
    for lap in reversed(levels[:-1]):
        x = pyr_up(x) + lap
    return x


def _gather_patches(level: np.ndarray, count: int, patch: int, rng) -> np.ndarray:
    """[N, H, W, C] -> [N·count, C, patch, patch] at uniform random valid offsets."""
    n, h, w, _ = level.shape
    ys = rng.integers(0, h - patch + 1, (n, count))
    xs = rng.integers(0, w - patch + 1, (n, count))
    windows = np.lib.stride_tricks.sliding_window_view(level, (patch, patch), axis=(1, 2))
    d = windows[np.arange(n)[:, None], ys, xs]  # [N, count, C, patch, patch]
    return d.reshape(n * count, *d.shape[2:])


def _normalize(desc: np.ndarray) -> np.ndarray:
    """[M, C, p, p] -> [M, C·p·p] minus the per-channel mean, over the per-channel std."""
    mean = desc.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)  # float64 sums
    std = desc.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    scale = 1.0 / np.where(std > 0, std, 1.0)
    out = (desc - mean.astype(np.float32)) * scale.astype(np.float32)
    return out.reshape(len(desc), -1)


def patch_descriptors(images, *, descriptors_per_image: int = 128, patch: int = 7,
                      min_res: int = 16, seed: int = 0) -> list[np.ndarray]:  # fmt: skip
    """Images uint8 [N, R, R, 3] (0..255) or float [N, R, R, 3] in [−1, 1] -> per pyramid
    level (finest first) normalised descriptors float32 [N·descriptors_per_image,
    3·patch²]."""
    if min_res < patch:
        raise ValueError(f"min_res: must be ≥ patch={patch}, got {min_res}")
    x = _as_images(images, "images", min_res)
    rng = np.random.default_rng(seed)
    levels = laplacian_pyramid(x, min_res)
    return [_normalize(_gather_patches(lv, descriptors_per_image, patch, rng)) for lv in levels]


def _sorted_projections(x: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """[M, d] @ [d, K] -> [K, M], each row sorted (contiguous rows sort fastest)."""
    p = np.ascontiguousarray((x @ dirs).T)
    p.sort(axis=-1)
    return p


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, *, dir_repeats: int = 4,
                       dirs_per_repeat: int = 128, seed: int = 0) -> float:  # fmt: skip
    """Point sets a [M, d], b [M', d] -> mean over `dir_repeats` × `dirs_per_repeat` random
    unit directions v of the 1-D Wasserstein-1 distance mean |sort(a·v) − sort(b·v)|.

    Directions: per repeat, `standard_normal((d, dirs_per_repeat))` from
    `np.random.default_rng(seed)`, each column scaled to unit length. If M ≠ M', the larger
    set is then subsampled without replacement (same generator) to the smaller size."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or 0 in a.shape + b.shape:
        raise ValueError(
            f"a, b: expected non-empty [M, d] arrays of one d, got {a.shape}, {b.shape}"
        )
    rng = np.random.default_rng(seed)
    dirs = []
    for _ in range(dir_repeats):
        v = rng.standard_normal((a.shape[1], dirs_per_repeat))
        dirs.append((v / np.linalg.norm(v, axis=0, keepdims=True)).astype(np.float32))
    m = min(len(a), len(b))
    a, b = (x if len(x) == m else x[np.sort(rng.choice(len(x), m, replace=False))] for x in (a, b))
    total = 0.0
    for v in dirs:
        diff = _sorted_projections(a, v)
        diff -= _sorted_projections(b, v)
        total += float(np.abs(diff, out=diff).mean(dtype=np.float64))
    return total / dir_repeats


def swd(images_a, images_b, *, descriptors_per_image: int = 128, min_res: int = 16,
        seed: int = 0) -> dict:  # fmt: skip
    """Two image sets, each uint8 [N, R, R, 3] (0..255) or float [N, R, R, 3] in [−1, 1]
    (one R, power of two ≥ min_res; the larger set is randomly subsampled to the smaller)
    -> {'levels': {resolution: SWD·1e3, finest first}, 'mean': mean of the levels}.

    Both sets take patches at the same seeded positions, so swd(x, x) is exactly 0."""
    a = _as_images(images_a, "images_a", min_res)
    b = _as_images(images_b, "images_b", min_res)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"images_a, images_b: resolutions differ, shapes {a.shape}, {b.shape}")
    n_levels = a.shape[1].bit_length() - min_res.bit_length() + 1
    patch_seed, subsample_seed, *dir_seeds = (
        int(s) for s in np.random.SeedSequence(seed).generate_state(2 + n_levels)
    )
    n = min(len(a), len(b))
    pick = np.random.default_rng(subsample_seed)
    a, b = (x if len(x) == n else x[np.sort(pick.choice(len(x), n, replace=False))] for x in (a, b))
    kw = dict(descriptors_per_image=descriptors_per_image, min_res=min_res, seed=patch_seed)
    da, db = patch_descriptors(a, **kw), patch_descriptors(b, **kw)
    levels = {
        a.shape[1] >> i: 1e3 * sliced_wasserstein(x, y, seed=dir_seeds[i])
        for i, (x, y) in enumerate(zip(da, db, strict=True))
    }
    return {"levels": levels, "mean": float(np.mean(list(levels.values())))}
