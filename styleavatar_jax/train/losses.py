"""EG3D's losses and the pieces around them, as pure functions.

Source: `training/loss.py` StyleGAN2Loss (run_G, run_D, accumulate_gradients). Images are
channels last, [B, H, W, C]; logits are D's output [B, 1]. Per-sample losses come back as
[B]; the train step takes their mean, as EG3D does (`loss.mean().mul(gain)`).

Not ported: the 'monotonic-detach' and 'monotonic-fixed' density regularisers (and the
'l1-alt' / 'total-variation' names train.py accepts but loss.py never implements: with those
EG3D silently runs no density regularisation at all).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from styleavatar_jax.nn.resample import upfirdn2d


def _per_sample(x: jax.Array) -> jax.Array:
    """[B, ...] -> [B], summing the rest (D's logits are [B, 1])."""
    return x.reshape(x.shape[0], -1).sum(-1)


# ---------------------------------------------------------------------------------------
# Adversarial losses


def g_nonsat_loss(fake_logits: jax.Array) -> jax.Array:
    """Gmain, non-saturating: softplus(−D(G(z))). fake_logits [B, 1] -> [B].

    EG3D loss.py accumulate_gradients, `loss_Gmain = softplus(-gen_logits)`.
    """
    return _per_sample(jax.nn.softplus(-fake_logits))


def d_logistic_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Dmain: softplus(D(fake)) + softplus(−D(real)). [B, 1] each -> [B].

    EG3D loss.py accumulate_gradients, `loss_Dgen` + `loss_Dreal` (EG3D backpropagates
    the two means separately; the sum of means is the mean of this sum).
    """
    return _per_sample(jax.nn.softplus(fake_logits)) + _per_sample(jax.nn.softplus(-real_logits))


def r1_penalty(
    d_fn: Callable[[jax.Array, jax.Array], jax.Array], image: jax.Array, image_raw: jax.Array
) -> jax.Array:
    """R1 penalty: |∂ΣD/∂image|² + |∂ΣD/∂image_raw|², per sample -> [B].

    d_fn(image [B, H, W, C], image_raw [B, h, w, C]) -> logits [B, 1]. EG3D loss.py
    accumulate_gradients (Dreg, dual_discrimination=True, as every EG3D config has): the
    gradient of `real_logits.sum()` w.r.t. both real images, squares summed over [1, 2, 3]
    and added. Whatever d_fn does to its inputs is differentiated through. EG3D's R1 is the
    gradient w.r.t. the *blurred* images: run_D stores its blur of `image` back into the dict
    whose entries autograd.grad takes as inputs, and the real raw target is blurred before
    the gradient leaf; so pass both already blurred and a d_fn that does not blur (the
    train step's Dreg does; measured against EG3D in tests/test_eg3d_step_parity.py).
    """
    grads = jax.grad(lambda a, b: jnp.sum(d_fn(a, b)), argnums=(0, 1))(image, image_raw)
    return sum(jnp.sum(jnp.square(g), axis=(1, 2, 3)) for g in grads)


def r1_loss(penalty: jax.Array, gamma: float) -> jax.Array:
    """loss_Dr1 = penalty·γ/2 (EG3D loss.py: `r1_penalty * (r1_gamma / 2)`). [B] -> [B]."""
    return penalty * (gamma / 2)


# ---------------------------------------------------------------------------------------
# Blur of D's inputs (EG3D's progressive blur at the start of training)


def blur_kernel(sigma: float) -> np.ndarray:
    """EG3D run_D's 1-D blur taps: exp2(−(x/σ)²) for x in arange(−⌊3σ⌋, ⌊3σ⌋ + 1), normalised.

    Returns float32 [2⌊3σ⌋ + 1] (a single [1.] when ⌊3σ⌋ = 0, where EG3D does not blur).
    """
    size = math.floor(sigma * 3)
    if size <= 0:
        return np.ones((1,), np.float32)
    x = np.arange(-size, size + 1, dtype=np.float32)
    f = np.exp2(-np.square(x / np.float32(sigma)))
    return (f / f.sum()).astype(np.float32)


def blur_images(images: jax.Array, sigma, *, max_sigma: float | None = None) -> jax.Array:
    """EG3D's blur: separable filter2d with `blur_kernel(σ)`, zero padding ⌊3σ⌋ on every side.

    images [B, H, W, C] -> [B, H, W, C]; unchanged when ⌊3σ⌋ = 0 (σ < 1/3, EG3D's
    `if blur_size > 0`). EG3D loss.py run_D: `f = arange(-blur_size, blur_size + 1)
    .div(blur_sigma).square().neg().exp2()`, `upfirdn2d.filter2d(img, f / f.sum())`, whose
    padding for an odd filter of 2s + 1 taps is s before and after on both axes.

    sigma: a Python number (max_sigma None): the exact-size kernel, a new program per σ.
    Or a traced scalar with a static max_sigma ≥ σ: one program for the whole fade. The kernel
    has radius ⌊3·max_sigma⌋ and taps beyond ⌊3σ⌋ are 0, which with zero padding gives
    EG3D's values (up to float summation order).
    """
    if max_sigma is None:
        f = blur_kernel(float(sigma))
        s = (len(f) - 1) // 2
        if s == 0:
            return images
        return upfirdn2d(images, np.outer(f, f), padding=s)

    radius = math.floor(3 * max_sigma)
    if radius <= 0:
        return images
    sigma = jnp.asarray(sigma, jnp.float32)
    size = jnp.floor(sigma * 3)
    x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    f = jnp.where(jnp.abs(x) <= size, jnp.exp2(-jnp.square(x / jnp.maximum(sigma, 1e-8))), 0.0)
    f = (f / jnp.sum(f)).astype(images.dtype)
    h, w = images.shape[1:3]
    y = jnp.pad(images, [(0, 0), (radius, radius), (radius, radius), (0, 0)])
    # Symmetric taps: correlation = convolution. Shifted slices fuse into one XLA loop.
    y = sum(f[i] * y[:, i : i + h] for i in range(2 * radius + 1))
    y = sum(f[i] * y[:, :, i : i + w] for i in range(2 * radius + 1))
    return jnp.where(size > 0, y, images)


def blur_pair(
    image: jax.Array, image_raw: jax.Array, sigma, *, max_sigma: float | None = None
) -> tuple[jax.Array, jax.Array]:
    """What EG3D's run_D blurs: the final image only. image [B, H, W, C], image_raw
    [B, h, w, C] -> (blurred image, image_raw unchanged).

    EG3D loss.py run_D blurs `img['image']`; its `blur_sigma_raw` argument is never used,
    so fake raw images reach D unblurred. Real raw images are blurred once, outside run_D
    (accumulate_gradients, `blur_raw_target = True`): call `blur_images(real_raw, σ)` when
    making the real targets, before R1's gradient leaf.
    """
    return blur_images(image, sigma, max_sigma=max_sigma), image_raw


# ---------------------------------------------------------------------------------------
# Generator pose conditioning


def swap_coins(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The uniforms of the pose-conditioning swap: [B, 1] per sample (run_G's
    `rand((B, 1))`) or [] for Greg's one coin for the batch (`rand([])`)."""
    return jax.random.uniform(key, shape)


def swap_by_coins(coins: jax.Array, c: jax.Array, prob) -> jax.Array:
    """c [B, 25] -> c [B, 25]: where coins < prob, the previous sample's c.

    EG3D loss.py run_G: `torch.where(rand((B, 1)) < swapping_prob, roll(c, 1, 0), c)`;
    coins [B, 1] (per sample) or [] (Greg: the whole batch). prob None (no generator pose
    conditioning): zeros, as EG3D.
    """
    if prob is None:
        return jnp.zeros_like(c)
    return jnp.where(coins < prob, jnp.roll(c, 1, axis=0), c)


def swap_conditioning(key: jax.Array, c: jax.Array, prob) -> jax.Array:
    """c [B, 25] -> c [B, 25]: per sample, with probability prob, the previous sample's c
    (`swap_by_coins` with coins drawn from key). prob None: zeros, as EG3D."""
    return swap_by_coins(swap_coins(key, (c.shape[0], 1)), c, prob)


def swap_conditioning_batch(key: jax.Array, c: jax.Array, prob) -> jax.Array:
    """Greg's variant: one coin for the whole batch (EG3D loss.py density reg, `rand([])`).
    c [B, 25] -> c [B, 25]; prob None: zeros."""
    return swap_by_coins(swap_coins(key, ()), c, prob)


# ---------------------------------------------------------------------------------------
# Density regularisation (reg_type 'l1')


def density_reg_draws(
    key: jax.Array, batch: int, num_points: int = 1000
) -> tuple[jax.Array, jax.Array]:
    """Greg's random draws -> initial [B, N, 3] uniform in [−1, 1)³ and a standard normal
    [B, N, 3] (EG3D loss.py ('l1'): `rand((B, 1000, 3)) * 2 - 1`, `randn_like(...)`)."""
    k_init, k_perturb = jax.random.split(key)
    initial = jax.random.uniform(k_init, (batch, num_points, 3), minval=-1.0, maxval=1.0)
    return initial, jax.random.normal(k_perturb, initial.shape)


def perturb_points(initial: jax.Array, normal: jax.Array, p_dist: float) -> jax.Array:
    """initial + normal·p_dist (EG3D: `initial + randn_like(initial) * density_reg_p_dist`)."""
    return initial + normal * p_dist


def density_reg_points(
    key: jax.Array, batch: int, num_points: int = 1000, p_dist: float = 0.004
) -> tuple[jax.Array, jax.Array]:
    """Greg's sample points -> initial [B, N, 3] uniform in [−1, 1)³, perturbed = initial +
    N(0, p_dist²) per coordinate (`density_reg_draws`, `perturb_points`).

    These are world coordinates, passed straight to sample_mixed -> run_model ->
    sample_from_planes, which scales them by 2/box_warp: with box_warp = 1 (FFHQ) the
    tri-planes span [−0.5, 0.5]³, so only 1/8 of the points are inside the box and the rest
    read zero features from at least one plane (grid_sample, zero padding).
    """
    initial, normal = density_reg_draws(key, batch, num_points)
    return initial, perturb_points(initial, normal, p_dist)


def density_l1(sigma_initial: jax.Array, sigma_perturbed: jax.Array, strength: float) -> jax.Array:
    """TVloss = mean |σ_initial − σ_perturbed| · strength. [B, N, 1] each -> scalar.

    EG3D loss.py ('l1'): `l1_loss(sigma_initial, sigma_perturbed) * density_reg` (mean over
    every element; raw σ, before the renderer's softplus).
    """
    return jnp.mean(jnp.abs(sigma_initial - sigma_perturbed)) * strength
