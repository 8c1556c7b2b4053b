"""Sampling w from a trained W-diffusion model: conditions -> w, jitted over a batch and
sharded over devices (each condition row is independent, so the batch axis splits)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax.models.wdiffusion import WDenoiser
from styleavatar_jax.wdiff import diffusion as df
from styleavatar_jax.wdiff.pairs import condition


@functools.lru_cache(maxsize=16)
def make_w_sampler(
    model: WDenoiser,
    schedule_kind: str,
    num_train_steps: int,
    *,
    steps: int,
    eta: float,
    guidance: float | None,
    clip_x0: float | None,
    mesh: Mesh,
):
    """-> jitted fn(params, w_mean [w], w_std [w], cond [B, D], key) -> w [B, w_dim].

    DDIM with `steps` steps (η = eta) and guidance λ (None: conditional only); x_T is drawn
    per batch from `key`. cond is the denoiser's condition (`pairs.condition(e)`)."""
    schedule = df.make_schedule(schedule_kind, num_train_steps)
    df.sampling_timesteps(num_train_steps, steps)  # validates --steps before compiling

    def sample(params, w_mean, w_std, cond, key):
        denoise = lambda x, t, keep: model.apply(
            {"params": params},
            x,
            t,
            jnp.concatenate([cond] * (x.shape[0] // cond.shape[0])),
            keep,
        )
        k_init, k_noise = jax.random.split(key)
        x_T = jax.random.normal(k_init, (cond.shape[0], model.cfg.w_dim))
        w_n = df.ddim_sample(
            denoise,
            model.cfg.prediction,
            schedule,
            x_T,
            k_noise,
            num_steps=steps,
            eta=eta,
            guidance=guidance,
            clip_x0=clip_x0,
        )
        return w_n * w_std + w_mean

    rep, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(sample, in_shardings=(rep, rep, rep, rows, rep), out_shardings=rows)


def sample_w(
    wd,
    embeddings: np.ndarray,
    *,
    num: int = 1,
    steps: int,
    eta: float = 0.0,
    guidance: float | None,
    clip_x0: float | None = None,
    seed: int = 0,
    batch: int = 64,
    mesh: Mesh,
) -> np.ndarray:
    """embeddings [N, D] (CLIP image or text) -> w [N, num, w_dim]: `num` samples each.

    `wd` is a `train.WDiffModel`; clip_x0 None: its config's sample.clip_x0. Rows run in
    fixed batches (padded; one compilation); chunk i draws its x_T from fold_in(key(seed), i)."""
    if clip_x0 is None:
        clip_x0 = wd.sample.clip_x0
    e = np.asarray(embeddings, np.float32)
    if e.ndim != 2 or e.shape[1] != wd.cfg.cond_dim:
        raise ValueError(
            f"condition embeddings: expected [N, {wd.cfg.cond_dim}] (the "
            f"denoiser's cond_dim), got {e.shape}"
        )
    if num < 1:
        raise ValueError(f"--num={num}: expected ≥ 1 sample per condition")
    batch = max(mesh.size, batch - batch % mesh.size)
    fn = make_w_sampler(
        wd.model,
        wd.schedule_kind,
        wd.num_train_steps,
        steps=steps,
        eta=eta,
        guidance=guidance,
        clip_x0=clip_x0,
        mesh=mesh,
    )
    cond = np.asarray(condition(np.repeat(e, num, axis=0)))
    out = []
    for i, start in enumerate(range(0, len(cond), batch)):
        chunk = cond[start : start + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
        key = jax.random.fold_in(jax.random.key(seed), i)
        w = fn(wd.params, wd.w_mean, wd.w_std, padded, key)
        out.append(np.asarray(jax.device_get(w))[: len(chunk)])
    return np.concatenate(out).reshape(len(e), num, -1)


def ws_from_w(
    w: np.ndarray, num_ws: int, w_avg: np.ndarray | None = None, truncation_psi: float = 1.0
) -> np.ndarray:
    """w [..., w_dim] -> ws [..., num_ws, w_dim] (every layer the same w, as the mapping net
    gives), truncated towards G's w_avg when psi < 1."""
    if truncation_psi != 1.0:
        if w_avg is None:
            raise ValueError("truncation needs G's w_avg")
        w = w_avg + truncation_psi * (w - w_avg)
    return np.repeat(np.asarray(w, np.float32)[..., None, :], num_ws, axis=-2)
