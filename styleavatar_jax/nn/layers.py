"""Equalized-learning-rate layers of StyleGAN2 as EG3D builds them, channels last.

Parameters are stored raw and scaled at run time (weight_gain, lr multiplier), exactly as
EG3D's `networks_stylegan2.py`, so converted checkpoints and Adam dynamics match. Dense
kernels are [in, out]; conv kernels HWIO. `dtype` is the compute dtype (float32, or
bfloat16 for the backbone, SR and D); parameters stay float32.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from styleavatar_jax.nn.resample import conv2d_resample, setup_filter

# name -> (function, default gain), EG3D's `bias_act.activation_funcs` (alpha 0.2 for lrelu).
ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (jax.nn.relu, math.sqrt(2)),
    "lrelu": (lambda x: jnp.where(x >= 0, x, x * 0.2), math.sqrt(2)),
    "tanh": (jnp.tanh, 1.0),
    "sigmoid": (jax.nn.sigmoid, 1.0),
    "softplus": (jax.nn.softplus, 1.0),
}


def bias_act(
    x: jax.Array,
    b: jax.Array | None = None,
    *,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
) -> jax.Array:
    """x + b (on the last axis), activation, × gain (default: the activation's), clamp ±clamp."""
    fn, def_gain = ACTIVATIONS[act]
    if b is not None:
        x = x + jnp.asarray(b, x.dtype)
    x = fn(x)
    gain = def_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = jnp.clip(x, -clamp, clamp)
    return x


def normalize_2nd_moment(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """x [B, D] / RMS over D."""
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


class FullyConnected(nn.Module):
    """EG3D `FullyConnectedLayer`: x [..., in] -> [..., features]."""

    features: int
    activation: str = "linear"
    lr_multiplier: float = 1.0
    bias_init: float = 0.0
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        kernel = self.param(
            "kernel",
            lambda k, s: jax.random.normal(k, s) / self.lr_multiplier,
            (fan_in, self.features),
        )
        w = jnp.asarray(kernel, x.dtype) * (self.lr_multiplier / math.sqrt(fan_in))
        b = None
        if self.use_bias:
            b = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
            b = jnp.asarray(b, x.dtype) * self.lr_multiplier
        return bias_act(x @ w, b, act=self.activation)


class Conv2d(nn.Module):
    """EG3D `Conv2dLayer`: x [B, H, W, I] -> [B, H·up/down, W·up/down, O]."""

    features: int
    kernel_size: int
    activation: str = "linear"
    use_bias: bool = True
    up: int = 1
    down: int = 1
    conv_clamp: float | None = None
    resample_filter: tuple[float, ...] = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x: jax.Array, gain: float = 1.0) -> jax.Array:
        k, fan_in = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.normal(1.0), (k, k, fan_in, self.features))
        w = jnp.asarray(kernel, x.dtype) * (1 / math.sqrt(fan_in * k * k))
        x = conv2d_resample(
            x,
            w,
            setup_filter(self.resample_filter),
            up=self.up,
            down=self.down,
            padding=k // 2,
            flip_weight=self.up == 1,
        )
        b = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
        act_gain = ACTIVATIONS[self.activation][1] * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)


def modulated_conv2d(
    x: jax.Array,
    weight: jax.Array,
    styles: jax.Array,
    *,
    noise: jax.Array | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: np.ndarray | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
) -> jax.Array:
    """StyleGAN2 modulated convolution in EG3D's non-fused form (its training path).

    x [B, H, W, I], weight [kh, kw, I, O], styles [B, I], noise broadcastable to the output
    -> [B, H·up, W·up, O]. Scaling activations before and after one shared convolution equals
    the per-sample (grouped) weights of the fused form and is much faster under XLA.
    """
    dtype = x.dtype
    styles = styles.astype(jnp.float32)
    dcoefs = None
    if demodulate:
        # Σ_{k,i} (w·s_i)² = s² @ Σ_k w²: [B, O] without materialising [B, kh, kw, I, O].
        wsq = jnp.sum(jnp.square(weight.astype(jnp.float32)), axis=(0, 1))  # [I, O]
        dcoefs = jax.lax.rsqrt(jnp.square(styles) @ wsq + 1e-8)  # [B, O]
    x = x * styles.astype(dtype)[:, None, None, :]
    x = conv2d_resample(
        x,
        jnp.asarray(weight, dtype),
        resample_filter,
        up=up,
        padding=padding,
        flip_weight=flip_weight,
    )
    if dcoefs is not None:
        x = x * dcoefs.astype(dtype)[:, None, None, :]
    if noise is not None:
        x = x + noise.astype(dtype)
    return x


def minibatch_std(x: jax.Array, group_size: int | None = 4, num_channels: int = 1) -> jax.Array:
    """EG3D `MinibatchStdLayer`: x [N, H, W, C] -> [N, H, W, C + num_channels].

    Sample n belongs to group n // (N / G) position n % (N / G), as EG3D's reshape(G, -1, ...).
    """
    n, h, w, c = x.shape
    g = min(group_size, n) if group_size is not None else n
    if n % g:
        raise ValueError(f"minibatch-std: batch {n} is not divisible by group size {g}")
    f = num_channels
    y = x.astype(jnp.float32).reshape(g, n // g, h, w, f, c // f)
    y = jnp.sqrt(jnp.mean(jnp.square(y - y.mean(axis=0)), axis=0) + 1e-8)  # [n/G, H, W, F, c]
    y = y.mean(axis=(1, 2, 4))  # [n/G, F]
    y = jnp.tile(y, (g, 1))[:, None, None, :]  # [N, 1, 1, F]
    y = jnp.broadcast_to(y, (n, h, w, f)).astype(x.dtype)
    return jnp.concatenate([x, y], axis=-1)
