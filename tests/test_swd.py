"""Sliced Wasserstein distance (PGGAN metric): analytic cases, the exact pyramid, the order of
distributions, input checks."""

import math

import numpy as np
import pytest

from styleavatar_jax.eval import swd as m


def unit_dirs(seed, d, repeats, per_repeat):
    """The directions `sliced_wasserstein` documents: per repeat, normal columns of unit length."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        v = rng.standard_normal((d, per_repeat))
        out.append((v / np.linalg.norm(v, axis=0, keepdims=True)).astype(np.float32))
    return np.concatenate(out, axis=1)  # [d, repeats·per_repeat]


def test_one_dimensional_case_is_exact_w1():
    # d = 1: every direction is ±1, and W1 is invariant to flipping both sets.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 1)), rng.normal(2.0, 1.5, size=(500, 1))
    exact = np.mean(np.abs(np.sort(a[:, 0]) - np.sort(b[:, 0])))
    assert np.all(np.abs(unit_dirs(0, 1, 2, 8)) == 1.0)
    assert m.sliced_wasserstein(a, b, dir_repeats=2, dirs_per_repeat=8) == pytest.approx(
        exact, rel=1e-6
    )


def test_translation_gives_mean_projected_shift():
    # b = a + t: each projection shifts by t·v, so the SWD is the mean of |t·v|.
    rng = np.random.default_rng(1)
    d, t = 5, np.array([1.0, -2.0, 0.5, 0.0, 3.0], np.float32)
    a = rng.normal(size=(300, d)).astype(np.float32)
    got = m.sliced_wasserstein(a, a + t, dir_repeats=4, dirs_per_repeat=256, seed=3)
    assert got == pytest.approx(np.mean(np.abs(t @ unit_dirs(3, d, 4, 256))), rel=1e-4)
    # ... and close to its expectation |t|·E|v₁| = |t|·Γ(d/2) / (√π·Γ((d+1)/2)).
    expected = (
        np.linalg.norm(t) * math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d + 1) / 2))
    )
    assert got == pytest.approx(expected, rel=0.05)


def test_unequal_sizes_subsample_the_larger():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(200, 3))
    assert m.sliced_wasserstein(a, np.concatenate([a, a]), seed=1) < 0.2
    assert m.sliced_wasserstein(a[:1], a[:1] + [1.0, 0.0, 0.0]) > 0


def pyr_down_reference(x):
    """Direct 5×5 convolution (outer product of [1, 4, 6, 4, 1] / 16), mirrored borders."""
    k = np.array([1, 4, 6, 4, 1], np.float64) / 16
    k2 = np.outer(k, k)
    p = np.pad(x.astype(np.float64), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    out = sum(k2[i, j] * p[:, i : i + h, j : j + w] for i in range(5) for j in range(5))
    return out[:, ::2, ::2]


def test_pyramid_filter_and_exact_reconstruction():
    x = np.random.default_rng(2).uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(m.pyr_down(x), pyr_down_reference(x), atol=1e-6)
    levels = m.laplacian_pyramid(x, 16)
    assert [lv.shape for lv in levels] == [(3, 64, 64, 3), (3, 32, 32, 3), (3, 16, 16, 3)]
    np.testing.assert_allclose(m.reconstruct(levels), x, atol=1e-5)
    # A constant image has no detail: zero band-pass levels, the constant in the residue.
    flat = m.laplacian_pyramid(np.full((1, 32, 32, 3), 0.25, np.float32), 16)
    np.testing.assert_allclose(flat[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(flat[1], 0.25, atol=1e-6)


def test_patch_descriptors_shapes_and_normalisation():
    x = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    desc = m.patch_descriptors(x, descriptors_per_image=16, seed=1)
    assert [d.shape for d in desc] == [(64, 147), (64, 147)]
    per_channel = desc[0].reshape(64, 3, 49)  # channel-major, as PGGAN's NCHW patches
    np.testing.assert_allclose(per_channel.mean(axis=(0, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(axis=(0, 2)), 1.0, atol=1e-4)
    again = m.patch_descriptors(x, descriptors_per_image=16, seed=1)
    assert all(np.array_equal(p, q) for p, q in zip(desc, again, strict=True))


def blobs(n, seed, res=32):
    """Discs of random centre, radius and colour on a dark background, in [−1, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:res, :res] / res
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)[..., None]
        out.append(np.where(mask, rng.uniform(-1, 1, 3), -0.8))
    return np.asarray(out, np.float32)


def checkerboards(n, seed, res=32):
    """Two-colour checkerboards of random period (2..8 px) and phase, uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:res, :res]
    out = []
    for _ in range(n):
        period, dy, dx = rng.integers(2, 9), rng.integers(0, 8), rng.integers(0, 8)
        on = (((yy + dy) // period + (xx + dx) // period) % 2).astype(bool)[..., None]
        out.append(np.where(on, rng.integers(0, 256, 3), rng.integers(0, 256, 3)))
    return np.asarray(out, np.uint8)


def test_identical_zero_same_distribution_far_below_different():
    kw = dict(descriptors_per_image=32)
    a, b = blobs(48, 0), blobs(48, 1)
    noise = np.random.default_rng(2).uniform(-1, 1, (48, 32, 32, 3)).astype(np.float32)
    same = m.swd(a, b, **kw)
    assert m.swd(a, a, **kw) == {"levels": {32: 0.0, 16: 0.0}, "mean": 0.0}
    assert set(same["levels"]) == {32, 16}
    assert same["mean"] == pytest.approx(np.mean(list(same["levels"].values())))
    for other in (noise, checkerboards(48, 3)):
        diff = m.swd(a, other, **kw)
        assert diff["mean"] > 3 * same["mean"] > 0  # observed ≈ 4–5×
        assert all(diff["levels"][r] > 2 * same["levels"][r] for r in (32, 16))  # ≈ 3.4–6×


def test_uint8_equals_float_input_and_unequal_set_sizes():
    x = np.random.default_rng(3).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    f = x.astype(np.float32) / 127.5 - 1
    assert m.swd(x, x[::-1])["mean"] == pytest.approx(m.swd(f, f[::-1])["mean"], rel=1e-5)
    out = m.swd(x, np.concatenate([x, x]), seed=2)  # 16 images subsampled to 8
    assert list(out["levels"]) == [16] and out["mean"] >= 0


@pytest.mark.parametrize(
    "shape, dtype, match",
    [
        ((4, 32, 16, 3), np.float32, r"images_b: .*square.*\(4, 32, 16, 3\)"),
        ((4, 32, 32, 1), np.float32, r"images_b: .*RGB.*\(4, 32, 32, 1\)"),
        ((32, 32, 3), np.float32, r"images_b: .*\(32, 32, 3\)"),
        ((4, 8, 8, 3), np.uint8, r"images_b: resolution 8 must be a power of two ≥ min_res=16"),
        ((4, 48, 48, 3), np.uint8, r"images_b: resolution 48 must be a power of two"),
        ((4, 32, 32, 3), np.int32, r"images_b: expected uint8 .* got int32"),
    ],
)
def test_bad_input_names_the_argument(shape, dtype, match):
    good = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=match):
        m.swd(good, np.zeros(shape, dtype))


def test_bad_arguments_elsewhere():
    good = np.zeros((4, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="images_a: "):
        m.swd(good[:, :, :16], good)
    with pytest.raises(ValueError, match="images_a, images_b: resolutions differ"):
        m.swd(good, np.zeros((4, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="min_res: must be a power of two"):
        m.swd(good, good, min_res=12)
    with pytest.raises(ValueError, match="min_res: must be ≥ patch=7"):
        m.patch_descriptors(good, min_res=4)
    with pytest.raises(ValueError, match=r"images: .*\(2, 64, 32, 3\)"):
        m.laplacian_pyramid(np.zeros((2, 64, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"a, b: .*\(5, 3\), \(5, 4\)"):
        m.sliced_wasserstein(np.zeros((5, 3)), np.zeros((5, 4)))
