"""Sliced Wasserstein distance: analytic cases, exact pyramid, ordering of distributions."""

import numpy as np
import pytest

from styleavatar_jax.metrics import swd as m


def test_one_dimensional_case_is_exact_w1():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 1)), rng.normal(2.0, 1.5, size=(500, 1))
    exact = np.mean(np.abs(np.sort(a[:, 0]) - np.sort(b[:, 0])))
    assert m.sliced_wasserstein(a, b, dirs_per_repeat=8) == pytest.approx(exact, rel=1e-5)


def test_translation_gives_mean_projected_shift():
    # b = a + t: every projection is shifted by t·v, so SWD = mean |t·v| over the directions.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 5)).astype(np.float32)
    t = np.array([1.0, -2.0, 0.5, 0.0, 3.0], np.float32)
    got = m.sliced_wasserstein(a, a + t, dir_repeats=2, dirs_per_repeat=64, seed=3)
    dirs_rng, want = np.random.default_rng(3), []
    for _ in range(2):
        v = dirs_rng.standard_normal((5, 64)).astype(np.float32)
        v /= np.linalg.norm(v, axis=0, keepdims=True)
        want.append(np.mean(np.abs(t @ v)))
    assert got == pytest.approx(np.mean(want), rel=1e-4)


def test_pyramid_reconstructs_exactly():
    x = np.random.default_rng(2).uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
    levels = m.laplacian_pyramid(x, 16)
    assert [lv.shape[1] for lv in levels] == [64, 32, 16]
    np.testing.assert_allclose(m.reconstruct(levels), x, atol=1e-5)


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32] / 32.0
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)[..., None]
        color = rng.uniform(-1, 1, 3)
        out.append(np.where(mask, color, -0.8))
    return np.asarray(out, np.float32)


def test_same_distribution_far_below_different():
    a, b = _blobs(64, 0), _blobs(64, 1)
    noise = np.random.default_rng(2).uniform(-1, 1, (64, 32, 32, 3)).astype(np.float32)
    same = m.swd(a, b, descriptors_per_image=64)
    diff = m.swd(a, noise, descriptors_per_image=64)
    assert m.swd(a, a, descriptors_per_image=64)["mean"] == 0.0
    assert set(same["levels"]) == {32, 16}
    assert diff["mean"] > 5 * same["mean"] > 0


def test_uint8_equals_float_input():
    x = np.random.default_rng(3).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    f = x.astype(np.float32) / 127.5 - 1
    assert m.swd(x, x[::-1])["mean"] == pytest.approx(m.swd(f, f[::-1])["mean"], rel=1e-5)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((4, 32, 16, 3), "square RGB"),
        ((4, 32, 32, 1), "square RGB"),
        ((4, 8, 8, 3), "power of two"),
    ],
)
def test_bad_input_names_the_problem(shape, match):
    with pytest.raises(ValueError, match=match):
        m.swd(np.zeros(shape, np.float32), np.zeros(shape, np.float32))
