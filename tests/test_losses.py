"""EG3D's losses (train/losses.py): pinned values, analytic gradients, blur references.

Expected values follow EG3D training/loss.py; the blur reference is EG3D's formula (taps
exp2(−(x/σ)²), x in arange(−⌊3σ⌋, ⌊3σ⌋ + 1), normalised) applied by direct zero-padded
2-D convolution in float64.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax.train import losses

from .conftest import rand

pytestmark = pytest.mark.usefixtures("fast_compile")

# Static σ: one program per σ; jitted so the taps are not dispatched one op at a time.
blur_static = jax.jit(losses.blur_images, static_argnums=1)
blur_traced = jax.jit(lambda x, s: losses.blur_images(x, s, max_sigma=3.0))

LOGITS = np.array([[0.0], [2.0], [-3.0]], np.float32)


def softplus(x):
    return np.log1p(np.exp(x))


def test_g_nonsat_loss():
    out = losses.g_nonsat_loss(jnp.asarray(LOGITS))
    assert out.shape == (3,)
    np.testing.assert_allclose(out, [math.log(2), softplus(-2.0), softplus(3.0)], rtol=1e-6)


def test_d_logistic_loss():
    fake = np.array([[1.0], [-1.0], [0.5]], np.float32)
    out = losses.d_logistic_loss(jnp.asarray(LOGITS), jnp.asarray(fake))
    expected = softplus(fake[:, 0].astype(np.float64)) + softplus(-LOGITS[:, 0].astype(np.float64))
    assert out.shape == (3,)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_r1_penalty_of_a_quadratic_d_counts_both_images():
    # D(x, y) = Σ a·x² + Σ b·y per sample: ∂/∂x = 2a·x, ∂/∂y = b.
    x, y = rand(0, 2, 4, 4, 3), rand(1, 2, 2, 2, 3)
    a, b = rand(2, 4, 4, 3), rand(3, 2, 2, 3)

    def d_fn(img, raw):
        return (jnp.sum(a * img**2, axis=(1, 2, 3)) + jnp.sum(b * raw, axis=(1, 2, 3)))[:, None]

    penalty = losses.r1_penalty(d_fn, jnp.asarray(x), jnp.asarray(y))
    x64, a64, b64 = (v.astype(np.float64) for v in (x, a, b))
    grad_x = np.sum((2 * a64 * x64) ** 2, axis=(1, 2, 3))
    grad_y = np.sum(b64**2) * np.ones(2)
    assert penalty.shape == (2,)
    np.testing.assert_allclose(penalty, grad_x + grad_y, rtol=1e-5)
    assert np.all(grad_y > 0) and np.all(grad_x > 0)  # both terms matter
    np.testing.assert_allclose(losses.r1_loss(penalty, 10.0), 5.0 * (grad_x + grad_y), rtol=1e-5)


def eg3d_kernel(sigma):
    s = math.floor(3 * sigma)
    x = np.arange(-s, s + 1, dtype=np.float64)
    f = np.exp2(-((x / sigma) ** 2))
    return f / f.sum()


def blur_ref(images, sigma):
    """Zero-padded 2-D convolution with outer(f, f), float64. images [B, H, W, C]."""
    if math.floor(3 * sigma) == 0:
        return np.asarray(images, np.float64)
    f = eg3d_kernel(sigma)
    k, s = np.outer(f, f), (len(f) - 1) // 2
    b, h, w, c = images.shape
    padded = np.pad(np.asarray(images, np.float64), [(0, 0), (s, s), (s, s), (0, 0)])
    out = np.zeros((b, h, w, c))
    for i in range(len(f)):
        for j in range(len(f)):
            out += k[i, j] * padded[:, i : i + h, j : j + w]
    return out


def test_blur_kernel():
    f = losses.blur_kernel(2.0)
    assert f.shape == (13,)  # ⌊3·2⌋ = 6 taps each side
    np.testing.assert_allclose(f, eg3d_kernel(2.0), rtol=1e-6)
    np.testing.assert_allclose(losses.blur_kernel(0.3), [1.0])


def test_blur_of_a_delta_is_the_kernel():
    sigma, n = 2.0, 21
    delta = np.zeros((1, n, n, 1), np.float32)
    delta[0, 10, 10, 0] = 1.0
    out = np.asarray(blur_static(jnp.asarray(delta), sigma))[0, :, :, 0]
    f = eg3d_kernel(sigma)
    expected = np.zeros((n, n))
    expected[4:17, 4:17] = np.outer(f, f)
    np.testing.assert_allclose(out, expected, atol=1e-7)
    assert out.sum() == pytest.approx(1.0, abs=1e-6)  # sum kept away from the borders


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_blur_identity_below_one_third(sigma):
    x = jnp.asarray(rand(4, 2, 8, 8, 3))
    np.testing.assert_array_equal(losses.blur_images(x, sigma), x)
    np.testing.assert_array_equal(blur_traced(x, jnp.float32(sigma)), x)


def test_blur_matches_reference_with_zero_padding_at_borders():
    x = rand(5, 2, 12, 10, 3)
    for sigma in (0.5, 1.7, 3.0):
        np.testing.assert_allclose(blur_static(x, sigma), blur_ref(x, sigma), atol=2e-6)


def test_blur_traced_sigma_equals_static():
    x = rand(6, 2, 16, 16, 3)
    for sigma in (0.2, 0.5, 1.234, 2.9, 3.0):
        np.testing.assert_allclose(
            blur_traced(x, jnp.float32(sigma)), blur_ref(x, sigma), atol=2e-6
        )


def test_blur_pair_blurs_the_final_image_only():
    image, raw = jnp.asarray(rand(7, 1, 12, 12, 3)), jnp.asarray(rand(8, 1, 6, 6, 3))
    out, out_raw = jax.jit(losses.blur_pair, static_argnums=2)(image, raw, 1.0)
    np.testing.assert_allclose(out, blur_ref(np.asarray(image), 1.0), atol=2e-6)
    np.testing.assert_array_equal(out_raw, raw)


def test_swap_conditioning():
    c = jnp.asarray(rand(9, 6, 25))
    key = jax.random.key(0)
    np.testing.assert_array_equal(losses.swap_conditioning(key, c, 0.0), c)
    np.testing.assert_array_equal(losses.swap_conditioning(key, c, 1.0), jnp.roll(c, 1, 0))
    np.testing.assert_array_equal(losses.swap_conditioning(key, c, None), jnp.zeros_like(c))
    # prob 0.5: every row is its own c or its predecessor's, and both happen.
    big = jnp.asarray(rand(10, 256, 25))
    out = np.asarray(losses.swap_conditioning(key, big, 0.5))
    own = np.all(out == np.asarray(big), axis=1)
    prev = np.all(out == np.roll(np.asarray(big), 1, 0), axis=1)
    assert np.all(own ^ prev) and 0.35 < prev.mean() < 0.65


def test_swap_conditioning_batch_is_all_or_nothing():
    c = jnp.asarray(rand(11, 8, 25))
    for seed in range(4):
        out = np.asarray(losses.swap_conditioning_batch(jax.random.key(seed), c, 0.5))
        assert np.array_equal(out, c) or np.array_equal(out, np.roll(c, 1, 0))
    np.testing.assert_array_equal(losses.swap_conditioning_batch(key := jax.random.key(1), c, 0), c)
    np.testing.assert_array_equal(losses.swap_conditioning_batch(key, c, 1), jnp.roll(c, 1, 0))


def test_density_reg_points():
    initial, perturbed = losses.density_reg_points(jax.random.key(0), 4, 1000, 0.004)
    assert initial.shape == perturbed.shape == (4, 1000, 3)
    initial, perturbed = np.asarray(initial), np.asarray(perturbed)
    assert initial.min() >= -1.0 and initial.max() < 1.0
    assert abs(initial.mean()) < 0.03 and abs(initial.var() - 1 / 3) < 0.02  # uniform
    d = perturbed - initial
    assert abs(d.std() - 0.004) < 0.0002 and abs(d.mean()) < 0.0002


def test_density_l1():
    a = jnp.array([[[1.0], [2.0]], [[0.0], [-1.0]]])
    b = jnp.array([[[1.5], [2.0]], [[1.0], [-1.0]]])
    assert float(losses.density_l1(a, b, 0.25)) == pytest.approx((0.5 + 0 + 1 + 0) / 4 * 0.25)
