"""Gaussian diffusion maths as pure functions: schedules, q_sample, DDPM and DDIM samplers,
classifier-free guidance. Nothing here knows what is being denoised (StyleAvatar3D: w).

Notation (Ho et al. 2020; Song et al. 2021, DDIM): T training steps, t ∈ {0..T-1},
ᾱ_t = Π_{s≤t} (1 − β_s); x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε.  A model predicts one of
    'eps'  ε,
    'x0'   x₀,
    'v'    v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀   (Salimans & Ho 2022),
and `split_prediction` turns any of them into (x₀, ε).

A denoiser is a function `(x_t [B, D], t [B] int32, keep [B] bool) -> prediction [B, D]`;
keep=False drops the condition (classifier-free guidance, Ho & Salimans 2022).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from styleavatar_jax.models.wdiffusion import PREDICTIONS

SCHEDULES = ("cosine", "linear")

Denoiser = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


# ---------------------------------------------------------------------------------------
# Schedules


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021 (improved DDPM): ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2) -> β [T]."""
    f = lambda t: math.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2
    return np.array([min(1 - f(i + 1) / f(i), max_beta) for i in range(num_steps)], np.float64)


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. 2020, rescaled to T steps as improved DDPM does (β·1000/T) -> β [T]."""
    scale = 1000 / num_steps
    return np.linspace(beta_start * scale, beta_end * scale, num_steps, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """β_t and ᾱ_t [T] (float32; computed in float64)."""

    betas: jax.Array
    alphas_cumprod: jax.Array

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])


jax.tree_util.register_dataclass(Schedule, data_fields=["betas", "alphas_cumprod"],
                                 meta_fields=[])  # fmt: skip


def make_schedule(kind: str, num_steps: int) -> Schedule:
    """kind 'cosine' | 'linear' -> Schedule over num_steps training steps."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule {kind!r}: expected one of {SCHEDULES}")
    if num_steps < 2:
        raise ValueError(f"schedule: num_steps={num_steps}, expected ≥ 2")
    betas = cosine_betas(num_steps) if kind == "cosine" else linear_betas(num_steps)
    alphas_cumprod = np.cumprod(1 - betas)
    return Schedule(jnp.asarray(betas, jnp.float32), jnp.asarray(alphas_cumprod, jnp.float32))


def _at(values: jax.Array, t: jax.Array, like: jax.Array) -> jax.Array:
    """values [T] gathered at t [B] and shaped to broadcast with like [B, ...]."""
    return values[t].reshape((-1,) + (1,) * (like.ndim - 1))


# ---------------------------------------------------------------------------------------
# Forward process and parameterisations


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x0 [B, D], t [B], noise [B, D] -> x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε."""
    a = _at(schedule.alphas_cumprod, t, x0)
    return jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise


def training_target(prediction: str, x0: jax.Array, noise: jax.Array, a: jax.Array):
    """What a `prediction` model regresses: ε, x₀ or v (a = ᾱ_t broadcast to x0)."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        return jnp.sqrt(a) * noise - jnp.sqrt(1 - a) * x0
    raise ValueError(f"prediction {prediction!r}: expected one of {PREDICTIONS}")


def split_prediction(prediction: str, out: jax.Array, x_t: jax.Array, a: jax.Array):
    """Model output -> (x̂₀, ε̂) given x_t and ᾱ_t (broadcast to x_t)."""
    sa, s1 = jnp.sqrt(a), jnp.sqrt(1 - a)
    if prediction == "eps":
        return (x_t - s1 * out) / sa, out
    if prediction == "x0":
        return out, (x_t - sa * out) / s1
    if prediction == "v":
        x0 = sa * x_t - s1 * out
        return x0, s1 * x_t + sa * out
    raise ValueError(f"prediction {prediction!r}: expected one of {PREDICTIONS}")


def guide(cond: jax.Array, uncond: jax.Array, guidance: float | jax.Array) -> jax.Array:
    """Classifier-free guidance: ε̂ = λ·ε(x, y) + (1 − λ)·ε(x). λ=1: the conditional model."""
    return guidance * cond + (1 - guidance) * uncond


def guided_eps(denoise: Denoiser, prediction: str, schedule: Schedule, x_t, t, guidance,
               clip_x0: float | None = None):  # fmt: skip
    """(x̂₀, ε̂) [B, D] with guidance λ: one batched call on [cond; uncond].

    λ = None: the conditional model alone (one call of batch B). Guidance combines ε; for
    'x0'/'v' models ε̂ is affine in the output at fixed x_t, so this equals guiding the
    output itself. clip_x0: clamp x̂₀ to [−c, c] and recompute ε̂ from it (ADM's
    clip_denoised): near t = T, ᾱ_t ≈ 0 and an ε model's x̂₀ = (x_t − √(1−ᾱ)ε̂)/√ᾱ
    magnifies its error ~1/√ᾱ_T, which a few-step sampler carries to the end."""
    b = x_t.shape[0]
    a = _at(schedule.alphas_cumprod, t, x_t)
    if guidance is None:
        out = denoise(x_t, t, jnp.ones((b,), bool))
        x0, eps = split_prediction(prediction, out, x_t, a)
    else:
        keep = jnp.concatenate([jnp.ones((b,), bool), jnp.zeros((b,), bool)])
        x2, a2 = jnp.concatenate([x_t, x_t]), jnp.concatenate([a, a])
        out = denoise(x2, jnp.concatenate([t, t]), keep)
        _, eps = split_prediction(prediction, out, x2, a2)
        eps = guide(eps[:b], eps[b:], guidance)
        x0 = (x_t - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a)
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
        eps = (x_t - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)
    return x0, eps


# ---------------------------------------------------------------------------------------
# Samplers


def sampling_timesteps(num_train_steps: int, num_steps: int) -> np.ndarray:
    """Evenly spaced timesteps, descending, ending at 0 (DDIM's 'uniform' skip) -> [num_steps]."""
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"--steps={num_steps}: expected 1..{num_train_steps} (the training steps)")
    ts = np.round(np.linspace(0, num_train_steps - 1, num_steps)).astype(np.int32)
    return ts[::-1].copy()


def ddim_step(x_t, x0, eps, a_t, a_prev, eta, noise):
    """One DDIM update t -> t_prev (Song et al. 2021, eq. 12); a_* = ᾱ, noise ~ N(0, I).

    σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev);  η=0: deterministic, η=1: DDPM-like."""
    sigma = eta * jnp.sqrt((1 - a_prev) / (1 - a_t)) * jnp.sqrt(1 - a_t / a_prev)
    direction = jnp.sqrt(jnp.maximum(1 - a_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(a_prev) * x0 + direction + sigma * noise


def ddim_sample(
    denoise: Denoiser,
    prediction: str,
    schedule: Schedule,
    x_T,
    key,
    *,
    num_steps: int,
    eta: float = 0.0,
    guidance: float | None = None,
    clip_x0: float | None = None,
) -> jax.Array:
    """x_T [B, D] ~ N(0, I) -> x₀ [B, D] in num_steps DDIM steps with guidance λ (None:
    conditional model only). key: the η > 0 noise. clip_x0: see `guided_eps`."""
    ts = jnp.asarray(sampling_timesteps(schedule.num_steps, num_steps))
    prev = jnp.concatenate([ts[1:], jnp.array([-1], jnp.int32)])
    ac = schedule.alphas_cumprod

    def body(x, inp):
        t, t_prev, k = inp
        tb = jnp.full((x.shape[0],), t, jnp.int32)
        x0, eps = guided_eps(denoise, prediction, schedule, x, tb, guidance, clip_x0)
        a_prev = jnp.where(t_prev >= 0, ac[jnp.maximum(t_prev, 0)], 1.0)
        return ddim_step(x, x0, eps, ac[t], a_prev, eta, jax.random.normal(k, x.shape)), None

    keys = jax.random.split(key, num_steps)
    x0, _ = jax.lax.scan(body, x_T, (ts, prev, keys))
    return x0


def ddim_invert(
    denoise: Denoiser,
    prediction: str,
    schedule: Schedule,
    x0,
    *,
    num_steps: int,
    guidance: float | None = None,
) -> jax.Array:
    """The η=0 DDIM ODE run forwards: x₀ [B, D] -> x_T [B, D] (Song et al. 2021, §4.3).
    `ddim_sample(η=0)` of the result returns x₀ up to the discretisation error."""
    ts = jnp.asarray(sampling_timesteps(schedule.num_steps, num_steps)[::-1].copy())
    prev = jnp.concatenate([jnp.array([-1], jnp.int32), ts[:-1]])
    ac = schedule.alphas_cumprod

    def body(x, inp):
        t_prev, t = inp  # x is at t_prev (−1: x₀); step it to t using ε̂ evaluated at t_prev
        a_prev = jnp.where(t_prev >= 0, ac[jnp.maximum(t_prev, 0)], 1.0)
        tb = jnp.full((x.shape[0],), jnp.maximum(t_prev, 0), jnp.int32)
        _, eps = guided_eps(denoise, prediction, schedule, x, tb, guidance)
        x0 = (x - jnp.sqrt(1 - a_prev) * eps) / jnp.sqrt(a_prev)
        return jnp.sqrt(ac[t]) * x0 + jnp.sqrt(1 - ac[t]) * eps, None

    x_T, _ = jax.lax.scan(body, x0, (prev, ts))
    return x_T


def ddpm_sample(
    denoise: Denoiser,
    prediction: str,
    schedule: Schedule,
    x_T,
    key,
    *,
    guidance: float | None = None,
    clip_x0: float | None = None,
) -> jax.Array:
    """Ancestral sampling over all T steps (Ho et al. 2020) with the posterior
    q(x_{t−1} | x_t, x̂₀): mean μ̃ = c₀·x̂₀ + c_t·x_t, variance β̃_t = β_t(1−ᾱ_{t−1})/(1−ᾱ_t).
    Equal in distribution (and, with the same noise, in value) to DDIM with η=1 over all
    steps. clip_x0: clamp x̂₀ to [−c, c] (off by default: w is not bounded)."""
    ac, betas = schedule.alphas_cumprod, schedule.betas
    ac_prev = jnp.concatenate([jnp.ones((1,), ac.dtype), ac[:-1]])
    ts = jnp.arange(schedule.num_steps - 1, -1, -1, dtype=jnp.int32)

    def body(x, inp):
        t, k = inp
        tb = jnp.full((x.shape[0],), t, jnp.int32)
        x0, _ = guided_eps(denoise, prediction, schedule, x, tb, guidance, clip_x0)
        c0 = betas[t] * jnp.sqrt(ac_prev[t]) / (1 - ac[t])
        ct = (1 - ac_prev[t]) * jnp.sqrt(1 - betas[t]) / (1 - ac[t])
        var = betas[t] * (1 - ac_prev[t]) / (1 - ac[t])
        noise = jax.random.normal(k, x.shape) * (t > 0)
        return c0 * x0 + ct * x + jnp.sqrt(var) * noise, None

    x0, _ = jax.lax.scan(body, x_T, (ts, jax.random.split(key, schedule.num_steps)))
    return x0
