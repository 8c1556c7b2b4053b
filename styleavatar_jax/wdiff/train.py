"""Training the W-diffusion denoiser: a pure, sharded train step and the loop around it.

    WORKDIR/config.json             the config (configs/wdiff.py layout)
    WORKDIR/checkpoints/<step>/     orbax: state (params, EMA params, Adam, step, the w
                                    normaliser) and meta (JSON: pairs metadata, dims)
    WORKDIR/tb/                     TensorBoard scalars

The loss is the usual simple one: E‖target − model(x_t, t, y·keep)‖² with t uniform, the
target ε / x₀ / v, keep ~ Bernoulli(1 − p_drop). w is standardised per dimension with the
training pairs' mean/std (stored with the checkpoint). Exact resume as the GAN loop: step s
uses fold_in(key(seed), s) and the batch at position s of a seeded per-epoch permutation.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax import checkpoint
from styleavatar_jax.data.pipeline import stream_take
from styleavatar_jax.models.wdiffusion import DenoiserConfig, WDenoiser, init_params
from styleavatar_jax.runtime import Deadline, StopOnSignal, TrainingDiverged, TrainLog, data_mesh
from styleavatar_jax.wdiff import diffusion as df
from styleavatar_jax.wdiff import pairs as pairs_lib
from styleavatar_jax.wdiff.config import (
    SampleConfig,
    WDiffConfigs,
    WDiffTrainConfig,
    wdiff_configs,
)

FROZEN_SECTIONS = ("seed", "model", "diffusion", "train", "data.path")
RESUMABLE = ("train.total_steps",)


@flax.struct.dataclass
class WDiffState:
    step: jax.Array  # int32 []
    params: dict
    ema: dict  # EMA of params: what sampling uses
    opt: optax.OptState
    w_mean: jax.Array  # [w_dim] normaliser: w_n = (w − mean) / std
    w_std: jax.Array


@dataclasses.dataclass(frozen=True)
class Trainer:
    """What a step closes over (hashable: the jit cache key)."""

    model: WDenoiser
    schedule_kind: str
    num_train_steps: int
    train: WDiffTrainConfig

    @property
    def schedule(self) -> df.Schedule:
        return df.make_schedule(self.schedule_kind, self.num_train_steps)

    @property
    def tx(self) -> optax.GradientTransformation:
        t = self.train
        lr = optax.warmup_cosine_decay_schedule(
            0.0, t.lr, t.warmup_steps, max(t.total_steps, t.warmup_steps + 1), end_value=t.lr * 0.01
        )
        clip = [optax.clip_by_global_norm(t.grad_clip)] if t.grad_clip > 0 else []
        return optax.chain(*clip, optax.adamw(lr, b1=0.9, b2=0.999, weight_decay=t.weight_decay))


def make_trainer(tc: WDiffConfigs, w_dim: int, cond_dim: int) -> Trainer:
    model = WDenoiser(tc.denoiser(w_dim, cond_dim))
    return Trainer(model, tc.diffusion.schedule, tc.diffusion.num_train_steps, tc.train)


def init_state(tr: Trainer, key: jax.Array, w_train: np.ndarray) -> WDiffState:
    params = init_params(tr.model, key)
    mean = w_train.mean(0)
    std = w_train.std(0) + 1e-6
    return WDiffState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema=jax.tree.map(jnp.copy, params),  # own buffers: the step donates the state
        opt=tr.tx.init(params),
        w_mean=jnp.asarray(mean),
        w_std=jnp.asarray(std),
    )


def loss_fn(tr: Trainer, params, w_n, cond, key):
    """Denoising loss of a batch: w_n [B, w_dim] (standardised), cond [B, cond_dim]."""
    kt, kn, kd = jax.random.split(key, 3)
    b = w_n.shape[0]
    schedule = tr.schedule
    t = jax.random.randint(kt, (b,), 0, schedule.num_steps)
    noise = jax.random.normal(kn, w_n.shape)
    keep = jax.random.uniform(kd, (b,)) >= tr.train.p_drop
    x_t = df.q_sample(schedule, w_n, t, noise)
    out = tr.model.apply({"params": params}, x_t, t, cond, keep)
    a = schedule.alphas_cumprod[t][:, None]
    target = df.training_target(tr.model.cfg.prediction, w_n, noise, a)
    return jnp.mean(jnp.square(out - target))


def train_step(tr: Trainer, state: WDiffState, w, cond, key):
    """(state, w [B, w_dim] raw, cond [B, cond_dim], key) -> (state, metrics)."""
    w_n = (w - state.w_mean) / state.w_std
    loss, grads = jax.value_and_grad(functools.partial(loss_fn, tr))(state.params, w_n, cond, key)
    updates, opt = tr.tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    d = tr.train.ema_decay
    ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, state.ema, params)
    metrics = {"Loss/denoise_loss": loss, "Train/grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, params=params, ema=ema, opt=opt), metrics


@functools.lru_cache(maxsize=8)
def compiled_step(tr: Trainer, mesh: Mesh):
    rep, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(
        functools.partial(train_step, tr),
        in_shardings=(rep, rows, rows, rep),
        out_shardings=(rep, rep),
        donate_argnums=0,
    )


def batch_indices(n: int, batch: int, step: int, seed: int) -> np.ndarray:
    """Rows (of the n training pairs) of step `step`: positions step·batch … in the
    concatenation of per-epoch permutations rng([seed, epoch]).permutation(n)."""
    return stream_take(n, batch, step, lambda e: np.random.default_rng([seed, e]).permutation(n))


def save_state(mngr: ocp.CheckpointManager, step: int, state: WDiffState, meta: dict) -> None:
    """One orbax step (once per step): state and meta (JSON)."""
    if step not in mngr.all_steps():
        mngr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )
        mngr.wait_until_finished()


def _meta(pairs: pairs_lib.Pairs, w_dim: int, cond_dim: int) -> dict:
    return {"pairs": pairs.meta, "w_dim": w_dim, "cond_dim": cond_dim}


def train(
    cfg: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    mesh: Mesh | None = None,
    progress: bool = True,
    log=print,
) -> tuple[WDiffState, str]:
    """Train per `cfg` into `workdir` -> (state, status 'finished' | 'stopped' | 'interrupted')."""
    tc = wdiff_configs(cfg)
    t = tc.train
    workdir = Path(workdir).absolute()
    if not tc.data_path:
        raise ValueError("config.data.path is empty: pass --data PAIRS.npz (from wdiff-data)")
    pairs = pairs_lib.load_pairs(tc.data_path)
    train_idx, _ = pairs_lib.split(len(pairs), t.heldout, tc.seed)
    w_all, c_all = pairs.w[train_idx], np.asarray(pairs_lib.condition(pairs.e[train_idx]))
    w_dim, cond_dim = pairs.w.shape[1], pairs.e.shape[1]
    tr = make_trainer(tc, w_dim, cond_dim)

    ckpt_dir = workdir / checkpoint.CHECKPOINTS
    existing = checkpoint.check_resume(workdir, cfg, resume, FROZEN_SECTIONS, RESUMABLE)

    mesh = mesh or data_mesh()
    if t.batch_size % mesh.shape["data"]:
        raise ValueError(
            f"config.train.batch_size={t.batch_size} is not divisible by the "
            f"{mesh.shape['data']} devices"
        )
    key = jax.random.key(tc.seed)
    init_key, run_key = jax.random.split(key)
    rep = NamedSharding(mesh, P())
    state = init_state(tr, init_key, w_all)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0 and not existing:
        checkpoint.write_config(workdir, cfg)
    mngr = checkpoint.open_manager(workdir, tc.run.keep_checkpoints)
    if existing:
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state)
        restored = checkpoint.restore_step(
            mngr,
            existing[-1],
            dict(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
        )
        state = restored["state"]
        log(f"resumed {workdir} at step {int(state.step)}")
    else:
        state = jax.device_put(state, rep)

    step_fn = compiled_step(tr, mesh)
    step = int(state.step)
    last = t.total_steps if max_steps is None else min(t.total_steps, step + max_steps)
    logger = TrainLog(workdir, t.total_steps, step, progress, unit="step")
    status, metrics = "finished", {}
    meta = _meta(pairs, w_dim, cond_dim)

    try:
        with StopOnSignal() as stop:
            deadline = Deadline(max_seconds)
            while step < last:
                rows = batch_indices(len(w_all), t.batch_size, step, tc.seed)
                key = jax.random.fold_in(run_key, step)
                state, metrics = step_fn(state, w_all[rows], c_all[rows], key)
                step += 1
                # The flag read once (as the GAN loop): never "stop" without "save".
                stopping, timeout = stop.flag.is_set(), deadline.passed()
                done = step == last or stopping or timeout
                if step % tc.run.log_steps == 0 or done:
                    host = jax.device_get(metrics)
                    if not all(np.isfinite(v) for v in host.values()):
                        raise TrainingDiverged(
                            f"step {step}: the W-diffusion loss became NaN/Inf; the last good "
                            f"checkpoint is in {ckpt_dir}. Lower config.train.lr"
                        )
                    logger.scalars(host, step, step * t.batch_size, {"Progress/step": step})
                logger.advance(1)
                if step % tc.run.checkpoint_steps == 0 or done:
                    save_state(mngr, step, state, meta)
                if stopping:
                    status = "interrupted"
                    break
                if timeout:
                    break
            if status == "finished" and step < t.total_steps:
                status = "stopped"
    finally:
        logger.close()
        mngr.close()
    return state, status


@dataclasses.dataclass(frozen=True)
class WDiffModel:
    """A trained W-diffusion model: denoiser + schedule + EMA params + normaliser."""

    model: WDenoiser
    schedule_kind: str
    num_train_steps: int
    params: dict
    w_mean: np.ndarray
    w_std: np.ndarray
    meta: dict
    config: ml_collections.ConfigDict

    @property
    def cfg(self) -> DenoiserConfig:
        return self.model.cfg

    @property
    def sample(self) -> SampleConfig:
        """Sampling defaults of the run's config (steps, eta, guidance, clip_x0)."""
        return wdiff_configs(self.config).sample


def load_wdiff(workdir: str | Path, step: int | None = None) -> WDiffModel:
    """The EMA denoiser of a W-diffusion run directory (latest step unless given)."""
    workdir = Path(workdir).absolute()
    cfg = checkpoint.load_config(workdir)
    tc = wdiff_configs(cfg)
    ckpt = workdir / checkpoint.CHECKPOINTS
    if not ckpt.is_dir():
        raise FileNotFoundError(f"{ckpt}: no checkpoints; expected a wdiff-train run directory")
    with ocp.CheckpointManager(ckpt) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{ckpt}: holds no checkpoint step")
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        tr = make_trainer(tc, int(meta["w_dim"]), int(meta["cond_dim"]))
        abstract = jax.eval_shape(
            lambda: init_state(tr, jax.random.key(0), np.zeros((2, int(meta["w_dim"]))))
        )
        restored = mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]
    return WDiffModel(
        tr.model,
        tc.diffusion.schedule,
        tc.diffusion.num_train_steps,
        jax.device_get(restored.ema),
        np.asarray(restored.w_mean),
        np.asarray(restored.w_std),
        meta,
        cfg,
    )
