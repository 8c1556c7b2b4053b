"""The W-space denoiser of StyleAvatar3D: a prior transformer (as DALL·E 2's diffusion
prior, Ramesh et al. 2022) over four tokens:

    [condition embedding, timestep embedding, noisy w, learned output token]

+ learned positions -> pre-LayerNorm transformer -> the output token -> prediction [B, w_dim]
(ε, x₀ or v; `styleavatar_jax.wdiff.diffusion`). A dropped condition (classifier-free guidance)
is replaced by a learned null embedding, so one network is both ε(w, y) and ε(w).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# What the denoiser's output means (styleavatar_jax.wdiff.diffusion turns each into x₀ and ε).
PREDICTIONS = ("eps", "x0", "v")


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    w_dim: int = 512
    cond_dim: int = 512  # CLIP embedding width (ViT-B/32: 512, ViT-L/14: 768)
    width: int = 512  # token width
    depth: int = 6  # transformer blocks
    heads: int = 8
    mlp_ratio: int = 4
    prediction: str = "x0"  # 'x0' | 'eps' | 'v' (DESIGN §11: x0 learns the w manifold)
    num_train_steps: int = 1000  # timestep embedding frequencies are scaled to this range

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction {self.prediction!r}: expected one of {PREDICTIONS}")
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is not divisible by heads={self.heads}")


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of t [B] (any real values) -> [B, dim] (Vaswani et al.; ADM)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class Block(nn.Module):
    """Pre-LN transformer block: x + MHA(LN x); x + MLP(LN x). x [B, N, width]."""

    heads: int
    mlp_ratio: int

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        h = nn.LayerNorm(name="ln_attn")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attn")(h, h)
        h = nn.LayerNorm(name="ln_mlp")(x)
        h = nn.gelu(nn.Dense(width * self.mlp_ratio, name="fc1")(h))
        return x + nn.Dense(width, name="fc2")(h)


class WDenoiser(nn.Module):
    """(w_t [B, w_dim], t [B] int, cond [B, cond_dim], keep [B] bool) -> prediction [B, w_dim]."""

    cfg: DenoiserConfig = DenoiserConfig()

    @nn.compact
    def __call__(self, w_t, t, cond, keep):
        cfg = self.cfg
        null = self.param("null_cond", nn.initializers.normal(1.0), (cfg.cond_dim,))
        cond = jnp.where(keep[:, None], cond, null[None].astype(cond.dtype))
        temb = timestep_embedding(t * (1000.0 / cfg.num_train_steps), cfg.width)
        temb = nn.Dense(cfg.width, name="time_out")(
            nn.silu(nn.Dense(cfg.width, name="time_in")(temb))
        )
        out_token = self.param("out_token", nn.initializers.normal(0.02), (cfg.width,))
        tokens = jnp.stack(
            [
                nn.Dense(cfg.width, name="cond_in")(cond),
                temb,
                nn.Dense(cfg.width, name="w_in")(w_t),
                jnp.broadcast_to(out_token, (w_t.shape[0], cfg.width)),
            ],
            axis=1,
        )  # [B, 4, width]
        pos = self.param("pos", nn.initializers.normal(0.02), (4, cfg.width))
        x = tokens + pos[None]
        for i in range(cfg.depth):
            x = Block(cfg.heads, cfg.mlp_ratio, name=f"block{i}")(x)
        x = nn.LayerNorm(name="ln_out")(x[:, -1])
        return nn.Dense(cfg.w_dim, kernel_init=nn.initializers.zeros, name="head")(x)


def init_params(model: WDenoiser, key: jax.Array) -> dict:
    """Random params of `model` (a batch of one)."""
    cfg = model.cfg
    w = jnp.zeros((1, cfg.w_dim))
    return model.init(key, w, jnp.zeros((1,), jnp.int32), jnp.zeros((1, cfg.cond_dim)),
                      jnp.ones((1,), bool))["params"]  # fmt: skip
