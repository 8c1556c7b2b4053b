"""EG3D's training schedules, as pure functions of cur_nimg (images shown so far).

Sources: `training/loss.py` StyleGAN2Loss.accumulate_gradients (blur σ, GPC swap
probability, neural rendering resolution) and `training/training_loop.py` (lazy-regularisation
Adam, G EMA). Note that EG3D's `train.py` rescales two of these by batch/32 before they get
here: blur_fade_kimg = batch·200/32 and ema_kimg = batch·10/32; callers pass the scaled values.

blur_sigma, gpc_swap_prob and ema_beta accept a Python number (-> float) or a traced array
(-> jax.Array); neural_res is static (it sets array shapes), so it takes a Python number.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Scalar = float | int | jax.Array


def _is_traced(x) -> bool:
    return isinstance(x, jax.Array)


def _ramp(cur_nimg: Scalar, fade_kimg: float) -> Scalar:
    """α = min(cur_nimg / (fade_kimg·1e3), 1), and 1 when there is no fade (fade_kimg ≤ 0)."""
    if fade_kimg <= 0:
        return 1.0
    if _is_traced(cur_nimg):
        return jnp.minimum(cur_nimg / (fade_kimg * 1e3), 1.0)
    return min(float(cur_nimg) / (fade_kimg * 1e3), 1.0)


def blur_sigma(cur_nimg: Scalar, init_sigma: float = 10.0, fade_kimg: float = 200.0) -> Scalar:
    """σ (pixels) of the Gaussian blur of D's inputs: init·max(1 − nimg/(fade·1e3), 0).

    EG3D loss.py accumulate_gradients: `blur_sigma = max(1 - cur_nimg / (blur_fade_kimg *
    1e3), 0) * blur_init_sigma if blur_fade_kimg > 0 else 0`.
    """
    if fade_kimg <= 0:
        return 0.0
    if _is_traced(cur_nimg):
        return jnp.maximum(1.0 - cur_nimg / (fade_kimg * 1e3), 0.0) * init_sigma
    return max(1.0 - float(cur_nimg) / (fade_kimg * 1e3), 0.0) * init_sigma


def gpc_swap_prob(
    cur_nimg: Scalar, reg_prob: float | None = 0.5, fade_kimg: float = 1000.0
) -> Scalar | None:
    """Generator-pose-conditioning swap probability, fading 1 → reg_prob over fade_kimg.

    EG3D loss.py accumulate_gradients: α = min(nimg/(gpc_reg_fade_kimg·1e3), 1) (1 if the
    fade is 0), swapping_prob = (1 − α)·1 + α·gpc_reg_prob. reg_prob None (EG3D: no
    `--gen_pose_cond`) returns None, for which EG3D conditions the mapping on zeros.
    """
    if reg_prob is None:
        return None
    alpha = _ramp(cur_nimg, fade_kimg)
    return (1.0 - alpha) * 1.0 + alpha * reg_prob


def neural_res(
    cur_nimg: float | int, initial: int = 64, final: int | None = None, fade_kimg: float = 1000.0
) -> int:
    """Neural rendering resolution: int(rint(initial·(1 − α) + final·α)), α = min(nimg/fade, 1).

    EG3D loss.py accumulate_gradients (neural_rendering_resolution_*); final None keeps
    `initial`. EG3D divides by fade_kimg without a guard; fade_kimg ≤ 0 here means α = 1.
    np.rint rounds halves to even (96.5 → 96).
    """
    if final is None:
        return int(initial)
    alpha = _ramp(cur_nimg, fade_kimg)
    return int(np.rint(initial * (1 - alpha) + final * alpha))


def neural_res_span(
    cur_nimg: int,
    batch_size: int,
    initial: int = 64,
    final: int | None = None,
    fade_kimg: float = 1000.0,
    end_nimg: int | None = None,
) -> tuple[int, int, int] | None:
    """The next resolution `neural_res` takes after cur_nimg, stepping batch_size images at
    a time, and the steps that use it, counted from cur_nimg's: (res, first, last), last
    included, all before end_nimg (a run's end; None: no end). None: no other resolution
    comes. The fade is monotone, so bisections find where it changes."""
    if final is None:
        return None
    now = neural_res(cur_nimg, initial, final, fade_kimg)
    end = max(0, math.ceil((fade_kimg * 1000 - cur_nimg) / batch_size)) + 1  # steps to α = 1
    if end_nimg is not None:
        end = min(end, (end_nimg - cur_nimg) // batch_size - 1)  # the last step that runs
    at = lambda k: neural_res(cur_nimg + k * batch_size, initial, final, fade_kimg)
    if end < 1 or at(end) == now:
        return None

    def first_not(value, lo, hi):  # at(lo) == value != at(hi) -> the first k with at(k) != value
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if at(mid) == value else (lo, mid)
        return hi

    first = first_not(now, 0, end)
    nxt = at(first)
    last = end if at(end) == nxt else first_not(nxt, first, end) - 1
    return nxt, first, last


def next_neural_res(cur_nimg: int, batch_size: int, initial: int = 64,
                    final: int | None = None, fade_kimg: float = 1000.0,
                    end_nimg: int | None = None) -> int | None:  # fmt: skip
    """The resolution of `neural_res_span` (None: no other one comes)."""
    span = neural_res_span(cur_nimg, batch_size, initial, final, fade_kimg, end_nimg)
    return None if span is None else span[0]


def lazy_adam(
    lr: float, betas: tuple[float, float], reg_interval: int | None
) -> tuple[float, tuple[float, float]]:
    """Adam's (lr, betas) for a network whose regulariser runs every reg_interval steps.

    EG3D training_loop.py (StyleGAN2 lazy regularisation): mb_ratio = k/(k + 1),
    lr·mb_ratio, β**mb_ratio; reg_interval None (or 0) leaves them as they are.
    """
    if not reg_interval:
        return lr, (betas[0], betas[1])
    ratio = reg_interval / (reg_interval + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


def ema_beta(
    batch_size: int, cur_nimg: Scalar, ema_kimg: float, ema_rampup: float | None
) -> Scalar:
    """G_ema decay for one step: 0.5 ** (batch / max(ema_nimg, 1e-8)).

    EG3D training_loop.py: ema_nimg = ema_kimg·1e3, ramped as min(ema_nimg, cur_nimg·rampup)
    when ema_rampup is not None. At cur_nimg = 0 with a ramp-up β = 0 (G_ema ← G).
    """
    ema_nimg = ema_kimg * 1000.0
    if _is_traced(cur_nimg):
        if ema_rampup is not None:
            ema_nimg = jnp.minimum(ema_nimg, cur_nimg * ema_rampup)
        return 0.5 ** (batch_size / jnp.maximum(ema_nimg, 1e-8))
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, float(cur_nimg) * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


def ema_update(ema_params, params, beta: Scalar):
    """ema ← params + (ema − params)·β, leaf by leaf over matching pytrees -> new ema.

    EG3D training_loop.py: `p_ema.copy_(p.lerp(p_ema, ema_beta))` for parameters. Buffers
    (w_avg, noise constants) are copied, not averaged: pass only parameters here and copy the
    buffers from G.
    """
    return jax.tree.map(lambda e, p: p + (e - p) * beta, ema_params, params)
