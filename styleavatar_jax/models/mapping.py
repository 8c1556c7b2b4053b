"""Mapping network z (+ c) -> w, EG3D's `MappingNetwork` (networks_stylegan2.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from styleavatar_jax.nn.layers import FullyConnected, normalize_2nd_moment


class MappingNetwork(nn.Module):
    """z [B, z_dim], c [B, c_dim] -> ws [B, num_ws, w_dim] (or w [B, w_dim] if num_ws is None).

    norm(z) ‖ norm(embed(c)) -> `num_layers` lrelu FCs with lr multiplier 0.01. The running
    mean of w (`buffers/w_avg`, for truncation) updates when called with update_emas=True
    and mutable=["buffers"].
    """

    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int | None
    num_layers: int = 8
    embed_features: int | None = None  # None = w_dim
    layer_features: int | None = None  # None = w_dim
    activation: str = "lrelu"
    lr_multiplier: float = 0.01
    w_avg_beta: float | None = 0.998  # None = no running mean (D's mapping)

    @nn.compact
    def __call__(
        self,
        z: jax.Array | None,
        c: jax.Array | None,
        *,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> jax.Array:
        parts = []
        if self.z_dim > 0:
            _check_shape("z", z, self.z_dim)
            parts.append(normalize_2nd_moment(z.astype(jnp.float32)))
        if self.c_dim > 0:
            _check_shape("c", c, self.c_dim)
            embed = FullyConnected(self.embed_features or self.w_dim, name="embed")
            parts.append(normalize_2nd_moment(embed(c.astype(jnp.float32))))
        x = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        for idx in range(self.num_layers):
            last = idx == self.num_layers - 1
            features = self.w_dim if last else (self.layer_features or self.w_dim)
            x = FullyConnected(
                features,
                activation=self.activation,
                lr_multiplier=self.lr_multiplier,
                name=f"fc{idx}",
            )(x)

        if self.num_ws is None or self.w_avg_beta is None:
            if truncation_psi != 1:
                raise ValueError("truncation needs a mapping network that tracks w_avg")
            return x if self.num_ws is None else jnp.repeat(x[:, None], self.num_ws, axis=1)
        w_avg = self.variable("buffers", "w_avg", jnp.zeros, (self.w_dim,), jnp.float32)
        if update_emas and not self.is_initializing():
            mean = jax.lax.stop_gradient(x).mean(axis=0)
            w_avg.value = mean + self.w_avg_beta * (w_avg.value - mean)  # torch lerp
        ws = jnp.repeat(x[:, None], self.num_ws, axis=1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            trunc = w_avg.value + truncation_psi * (ws[:, :cut] - w_avg.value)
            ws = ws.at[:, :cut].set(trunc)
        return ws


def _check_shape(name: str, x: jax.Array | None, dim: int) -> None:
    if x is None or x.ndim != 2 or x.shape[1] != dim:
        got = None if x is None else tuple(x.shape)
        raise ValueError(f"{name}: expected shape [batch, {dim}], got {got}")
