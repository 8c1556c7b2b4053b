"""Depths along rays: stratified and importance sampling, EG3D's `ImportanceRenderer`.

Each sampler takes its uniforms `u` from the caller (drawn from a PRNG key, or injected
from a reference run to compare draw for draw).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def stratified_depths(u: jax.Array, ray_start, ray_end, num_samples: int) -> jax.Array:
    """Jittered uniform depths: linspace(start, end, S) + u·(end − start)/(S − 1).

    u [B, R, S, 1] in [0, 1); ray_start/ray_end floats or [B, R, 1] -> depths [B, R, S, 1].
    """
    steps = jnp.linspace(0.0, 1.0, num_samples, dtype=jnp.float32)[:, None]  # [S, 1]
    start = jnp.asarray(ray_start, jnp.float32)
    end = jnp.asarray(ray_end, jnp.float32)
    if start.ndim:  # per-ray limits [B, R, 1] -> [B, R, 1, 1]
        start, end = start[..., None, :], end[..., None, :]
    base = start + steps * (end - start)
    return base + u * ((end - start) / (num_samples - 1))


def stratified_disparity_depths(u: jax.Array, ray_start, ray_end, num_samples: int) -> jax.Array:
    """Jittered samples uniform in disparity (EG3D `disparity_space_sampling`): u [B, R, S, 1]."""
    t = jnp.linspace(0.0, 1.0, num_samples, dtype=jnp.float32)[:, None] + u / (num_samples - 1)
    return 1.0 / (1.0 / ray_start * (1.0 - t) + 1.0 / ray_end * t)


def smooth_weights(weights: jax.Array) -> jax.Array:
    """EG3D's importance weights: max-pool 2 (pad 1), avg-pool 2, + 0.01.

    weights [N, S−1] -> [N, S−1].
    """
    pad = jnp.full_like(weights[:, :1], -jnp.inf)
    padded = jnp.concatenate([pad, weights, pad], axis=1)
    pooled = jnp.maximum(padded[:, :-1], padded[:, 1:])  # [N, S]
    return 0.5 * (pooled[:, :-1] + pooled[:, 1:]) + 0.01


def sample_pdf(u: jax.Array, bins: jax.Array, weights: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Inverse-CDF sampling of a piecewise-constant pdf (NeRF; EG3D `sample_pdf`).

    u [N, K] in [0, 1), bins [N, B] edges, weights [N, W] with W ≤ B − 1 -> samples [N, K].
    """
    n_bins = weights.shape[1]
    weights = weights + eps
    pdf = weights / jnp.sum(weights, axis=-1, keepdims=True)
    cdf = jnp.concatenate([jnp.zeros_like(pdf[:, :1]), jnp.cumsum(pdf, axis=-1)], axis=-1)
    inds = jax.vmap(lambda c, x: jnp.searchsorted(c, x, side="right"))(cdf, u)
    below = jnp.maximum(inds - 1, 0)
    above = jnp.minimum(inds, n_bins)
    cdf0 = jnp.take_along_axis(cdf, below, axis=1)
    cdf1 = jnp.take_along_axis(cdf, above, axis=1)
    bin0 = jnp.take_along_axis(bins, below, axis=1)
    bin1 = jnp.take_along_axis(bins, above, axis=1)
    denom = cdf1 - cdf0
    denom = jnp.where(denom < eps, 1.0, denom)
    return bin0 + (u - cdf0) / denom * (bin1 - bin0)


def importance_depths(u: jax.Array, depths: jax.Array, weights: jax.Array) -> jax.Array:
    """Fine depths drawn where the coarse pass put weight, without gradient (EG3D).

    u [B·R, K], depths [B, R, S, 1], weights [B, R, S−1, 1] -> [B, R, K, 1].
    """
    b, r, s, _ = depths.shape
    z = jax.lax.stop_gradient(depths).reshape(b * r, s)
    w = smooth_weights(jax.lax.stop_gradient(weights).reshape(b * r, s - 1))
    mids = 0.5 * (z[:, :-1] + z[:, 1:])
    samples = sample_pdf(u, mids, w[:, 1:-1])
    return jax.lax.stop_gradient(samples).reshape(b, r, -1, 1)
