"""EG3D's schedules (train/schedules.py) at pinned points.

Expected values are EG3D's formulas (training/loss.py accumulate_gradients,
training/training_loop.py) evaluated by hand or in plain Python.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax.train import schedules


@pytest.mark.parametrize("kimg, sigma", [(0, 10.0), (100, 5.0), (150, 2.5), (200, 0.0), (300, 0.0)])
def test_blur_sigma(kimg, sigma):
    assert schedules.blur_sigma(kimg * 1000, 10, 200) == pytest.approx(sigma)
    traced = jax.jit(lambda n: schedules.blur_sigma(n, 10, 200))(jnp.float32(kimg * 1000))
    assert float(traced) == pytest.approx(sigma, abs=1e-6)


def test_blur_sigma_without_fade():
    assert schedules.blur_sigma(0, 10, 0) == 0.0


@pytest.mark.parametrize("kimg, prob", [(0, 1.0), (500, 0.75), (1000, 0.5), (5000, 0.5)])
def test_gpc_swap_prob(kimg, prob):
    assert schedules.gpc_swap_prob(kimg * 1000, 0.5, 1000) == pytest.approx(prob)
    traced = jax.jit(lambda n: schedules.gpc_swap_prob(n, 0.5, 1000))(jnp.float32(kimg * 1000))
    assert float(traced) == pytest.approx(prob)


def test_gpc_swap_prob_edges():
    assert schedules.gpc_swap_prob(0, None, 1000) is None  # no pose conditioning
    assert schedules.gpc_swap_prob(0, 0.5, 0) == 0.5  # fade 0: α = 1 (EG3D resume)


@pytest.mark.parametrize("kimg, res", [(0, 64), (250, 80), (500, 96), (1000, 128), (3000, 128)])
def test_neural_res(kimg, res):
    out = schedules.neural_res(kimg * 1000, 64, 128, 1000)
    assert out == res and isinstance(out, int)


def test_neural_res_rounding_and_fixed():
    # 64 + 64·α = 96.5 at α = 0.5078125: np.rint rounds the half to even.
    assert schedules.neural_res(507_812.5, 64, 128, 1000) == 96
    assert schedules.neural_res(530_000, 64, 128, 1000) == int(np.rint(64 + 64 * 0.53))
    assert schedules.neural_res(10**7, 64, None, 1000) == 64


def test_lazy_adam():
    lr, (b1, b2) = schedules.lazy_adam(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17)
    assert b1 == 0.0
    assert b2 == pytest.approx(0.99 ** (16 / 17))
    assert schedules.lazy_adam(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))
    assert schedules.lazy_adam(0.002, (0.0, 0.99), 0) == (0.002, (0.0, 0.99))


@pytest.mark.parametrize("nimg", [0, 10_000, 1_000_000])
def test_ema_beta(nimg):
    batch, ema_kimg, rampup = 32, 10, 0.05
    ema_nimg = min(ema_kimg * 1000, nimg * rampup)
    expected = 0.5 ** (batch / max(ema_nimg, 1e-8))
    assert schedules.ema_beta(batch, nimg, ema_kimg, rampup) == pytest.approx(expected)
    traced = jax.jit(lambda n: schedules.ema_beta(batch, n, ema_kimg, rampup))(jnp.int32(nimg))
    np.testing.assert_allclose(float(traced), expected, rtol=1e-6)


def test_ema_beta_values_and_no_rampup():
    assert schedules.ema_beta(32, 0, 10, 0.05) == 0.0  # G_ema ← G at the start
    assert schedules.ema_beta(32, 10_000, 10, 0.05) == pytest.approx(0.5 ** (32 / 500))
    assert schedules.ema_beta(32, 0, 10, None) == pytest.approx(0.5 ** (32 / 10_000))


def test_ema_update():
    ema = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(4.0)}}
    params = {"a": jnp.array([3.0, 0.0]), "b": {"c": jnp.array(0.0)}}
    out = schedules.ema_update(ema, params, 0.25)
    np.testing.assert_allclose(out["a"], [3 + (1 - 3) * 0.25, 0 + 2 * 0.25])
    np.testing.assert_allclose(out["b"]["c"], 1.0)
    np.testing.assert_allclose(schedules.ema_update(ema, params, 0.0)["a"], params["a"])
    np.testing.assert_allclose(schedules.ema_update(ema, params, 1.0)["a"], ema["a"])
