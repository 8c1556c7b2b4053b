"""The full training state (G, D, G_ema, both optimizers, counters) and its creation."""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import optax

from styleavatar_jax.models.discriminator import DiscriminatorConfig, DualDiscriminator
from styleavatar_jax.models.triplane import GeneratorConfig, TriPlaneGenerator, init_variables
from styleavatar_jax.train import schedules
from styleavatar_jax.train.config import TrainConfig
from styleavatar_jax.train.pose_labels import PoseLabelConfig, label_dim


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. `step` counts finished iterations, `nimg` images shown
    (EG3D's cur_nimg); G holds {'params', 'buffers'} (w_avg, noise_const), D {'params'}."""

    step: jax.Array  # int32 []
    nimg: jax.Array  # int32 [] (2.1e9 images = 2.1M kimg before it wraps)
    g: dict
    g_ema: dict
    d: dict
    g_opt: optax.OptState
    d_opt: optax.OptState


@dataclasses.dataclass(frozen=True)
class Networks:
    """The modules and hyperparameters a step closes over (hashable: a static argument)."""

    G: TriPlaneGenerator
    D: DualDiscriminator
    train: TrainConfig
    pose: PoseLabelConfig

    @property
    def g_tx(self) -> optax.GradientTransformation:
        return adam(self.train.lr_g, self.train.betas, self.train.eps, self.train.g_reg_interval)

    @property
    def d_tx(self) -> optax.GradientTransformation:
        return adam(self.train.lr_d, self.train.betas, self.train.eps, self.train.d_reg_interval)


def adam(lr: float, betas, eps: float, reg_interval: int) -> optax.GradientTransformation:
    """torch.optim.Adam with StyleGAN2's lazy-regularisation scaling (`schedules.lazy_adam`:
    lr·k/(k+1), β**(k/(k+1)) for reg_interval k > 0; unscaled for 0, EG3D's None).
    State: (ScaleByAdamState with a step count per parameter, optax's scale state)."""
    lr, (b1, b2) = schedules.lazy_adam(lr, betas, reg_interval)
    return optax.chain(scale_by_adam_per_param(b1, b2, eps), optax.scale_by_learning_rate(lr))


def scale_by_adam_per_param(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """optax.scale_by_adam with one step count per parameter, as torch.optim.Adam keeps
    (`state[p]['step']`): a phase that leaves a parameter out (train/step.py `UNTOUCHED`) keeps
    its count with its moments, so its later bias corrections are torch's. `count` is a tree
    like the params of int32 []; with equal counts the arithmetic is optax.scale_by_adam's."""

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        count = jax.tree.map(lambda _: jnp.zeros([], jnp.int32), params)
        return optax.ScaleByAdamState(count=count, mu=zeros, nu=jax.tree.map(jnp.copy, zeros))

    def update_fn(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * (g**2) + b2 * v, updates, state.nu)
        count = jax.tree.map(optax.safe_increment, state.count)

        def step(m, v, k):
            m_hat = m / (1 - b1**k).astype(m.dtype)
            v_hat = v / (1 - b2**k).astype(v.dtype)
            return m_hat / (jnp.sqrt(v_hat) + eps)

        return jax.tree.map(step, mu, nu, count), optax.ScaleByAdamState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def per_param_counts(opt_state):
    """An optimizer state saved with one step count for all parameters (before per-parameter
    counts) -> the same state with that count given to every parameter."""
    adam, *rest = opt_state
    if jax.tree.structure(adam.count) == jax.tree.structure(adam.mu):
        return opt_state
    # A copy per parameter: leaves sharing one buffer cannot be donated to the train step.
    count = jax.tree.map(lambda _: jnp.array(adam.count, jnp.int32, copy=True), adam.mu)
    return (adam._replace(count=count), *rest)


def make_networks(g_cfg: GeneratorConfig, d_cfg: DiscriminatorConfig, train: TrainConfig,
                  pose: PoseLabelConfig) -> Networks:  # fmt: skip
    """Modules for a run; D's conditioning width follows the pose-label mode."""
    want = label_dim(pose)
    if d_cfg.c_dim != want:
        d_cfg = dataclasses.replace(d_cfg, c_dim=want)
    return Networks(TriPlaneGenerator(g_cfg), DualDiscriminator(d_cfg), train, pose)


def init_state(nets: Networks, key: jax.Array, g_vars: dict | None = None,
               d_vars: dict | None = None) -> TrainState:  # fmt: skip
    """Fresh state from `key` (or from given variables, e.g. converted EG3D weights)."""
    g_key, d_key = jax.random.split(key)
    g = g_vars if g_vars is not None else init_variables(nets.G, g_key)
    if d_vars is None:
        d_cfg = nets.D.cfg
        img = jnp.zeros((1, d_cfg.img_resolution, d_cfg.img_resolution, d_cfg.img_channels))
        raw = jnp.zeros((1, 16, 16, d_cfg.img_channels))
        d_vars = jax.jit(nets.D.init)({"params": d_key, "c_noise": d_key}, img, raw,
                                      jnp.zeros((1, d_cfg.c_dim)))  # fmt: skip
    d = {"params": d_vars["params"]}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        nimg=jnp.zeros((), jnp.int32),
        g=g,
        g_ema=jax.tree.map(jnp.copy, g),
        d=d,
        g_opt=nets.g_tx.init(g["params"]),
        d_opt=nets.d_tx.init(d["params"]),
    )
