"""Pure train steps, EG3D's four phases (training/loss.py StyleGAN2Loss.accumulate_gradients):

    Gmain  non-saturating loss of fakes           every step     (lr, β scaled for laziness)
    Greg   L1 density regularisation × interval  every g_reg_interval steps
    Dmain  logistic loss of fakes and reals      every step
    Dreg   R1 on real images × interval          every d_reg_interval steps

Each phase is `(state, batch, key, schedule) -> (state, metrics)`; the loop picks the phases
of a step (so each compiles once per neural resolution) and then calls `finish_step` (G EMA,
counters). The generator and D phases share one Adam state each, as EG3D's do.

batch: image uint8 [B, R, R, 3], label float32 [B, 25]. Fakes are rendered at cameras drawn
from the batch's own labels in a random order (EG3D draws them from the dataset's labels).
Keys: every phase folds its own constant into the step key, so a step's randomness depends
only on (seed, step).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

from styleavatar_jax.nn.resample import resize_bilinear
from styleavatar_jax.train import losses, schedules
from styleavatar_jax.train.pose_labels import discriminator_label
from styleavatar_jax.train.state import Networks, TrainState

PHASE_KEYS = {"Gmain": 0, "Greg": 1, "Dmain": 2, "Dreg": 3}


def real_images(batch, neural_res: int, sigma, max_sigma: float):
    """uint8 [B, R, R, 3] -> image [B, R, R, 3] in [−1, 1] and image_raw [B, r, r, 3]
    (EG3D: filtered_resizing, antialiased, to the neural rendering resolution, then blurred
    like the final image: EG3D's blur_raw_target)."""
    image = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    raw = resize_bilinear(image, neural_res, antialias=True)
    return image, blur(raw, sigma, max_sigma)


def blur(image, sigma, max_sigma: float):
    """EG3D run_D's blur with a traced σ (`losses.blur_images`); σ < 1/3 leaves it as is."""
    return losses.blur_images(image, sigma, max_sigma=max_sigma)


def _fakes(nets: Networks, k, batch, sched, swap=losses.swap_conditioning):
    """z [B, z_dim], the cameras to render (the batch's labels in a random order) and the
    generator's (possibly swapped) pose conditioning."""
    labels = batch["label"]
    z = jax.random.normal(k[0], (labels.shape[0], nets.G.cfg.z_dim))
    c_gen = labels[jax.random.permutation(k[1], labels.shape[0])]
    return z, c_gen, swap(k[2], c_gen, sched["swap_prob"])


def _run_g(nets: Networks, g_vars, z, c_gen, c_cond, keys, neural_res, update_emas=False):
    """Mapping with conditioning c_cond, render at c_gen -> (outputs, new buffers)."""
    G = nets.G

    def fn(m):
        ws = m.mapping(z, c_cond, update_emas=update_emas)
        return m.synthesis(ws, c_gen, neural_res=neural_res, noise_mode="random")

    out, updates = G.apply(g_vars, method=fn, rngs={"render": keys[0], "noise": keys[1]},
                           mutable=["buffers"])  # fmt: skip
    return out, updates["buffers"]


def _run_d(nets: Networks, d_params, image, image_raw, c_d, sigma):
    image = blur(image, sigma, nets.train.blur_init_sigma)
    return nets.D.apply({"params": d_params}, image, image_raw, c_d)


def _apply(tx, params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def _keys(key, phase):
    return jax.random.split(jax.random.fold_in(key, PHASE_KEYS[phase]), 8)


def g_main(nets: Networks, state: TrainState, batch, key, sched, *, neural_res: int):
    """Gmain: softplus(−D(G(z, c))) with swapped pose conditioning."""
    k = _keys(key, "Gmain")
    z, c_gen, c_cond = _fakes(nets, k, batch, sched)
    c_d = discriminator_label(c_gen, k[3], nets.pose)

    def loss_fn(params):
        out, _ = _run_g(nets, {**state.g, "params": params}, z, c_gen, c_cond, k[4:6],
                        neural_res)  # fmt: skip
        logits = _run_d(nets, state.d["params"], out["image"], out["image_raw"], c_d,
                        sched["blur_sigma"])  # fmt: skip
        return jnp.mean(losses.g_nonsat_loss(logits)), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g["params"])
    params, opt = _apply(nets.g_tx, state.g["params"], state.g_opt, grads)
    state = state.replace(g={**state.g, "params": params}, g_opt=opt)
    return state, {"G/loss": loss, "G/fake_score": jnp.mean(logits)}


def g_reg(nets: Networks, state: TrainState, batch, key, sched, *, neural_res: int):
    """Greg: L1 between σ at random points and at slightly perturbed points, × interval."""
    k = _keys(key, "Greg")
    t = nets.train
    gain = max(t.g_reg_interval, 1)
    b = batch["label"].shape[0]
    z, c_gen, c_cond = _fakes(nets, k, batch, sched, losses.swap_conditioning_batch)
    initial, perturbed = losses.density_reg_points(k[3], b, t.density_reg_points,
                                                   t.density_reg_p_dist)  # fmt: skip
    coords = jnp.concatenate([initial, perturbed], axis=1)

    def loss_fn(params):
        def fn(m):
            planes = m.planes(m.mapping(z, c_cond), noise_mode="random")
            return m.sample_density(planes, coords)[1]

        sigma = nets.G.apply({**state.g, "params": params}, method=fn, rngs={"noise": k[4]})
        n = initial.shape[1]
        reg = losses.density_l1(sigma[:, :n], sigma[:, n:], t.density_reg)
        return reg * gain, reg

    (_, reg), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g["params"])
    params, opt = _apply(nets.g_tx, state.g["params"], state.g_opt, grads)
    state = state.replace(g={**state.g, "params": params}, g_opt=opt)
    return state, {"G/density_reg": reg}


def d_main(nets: Networks, state: TrainState, batch, key, sched, *, neural_res: int):
    """Dmain: softplus(D(fake)) + softplus(−D(real)); the fake pass updates G's w_avg."""
    k = _keys(key, "Dmain")
    z, c_gen, c_cond = _fakes(nets, k, batch, sched)
    fake, buffers = _run_g(nets, state.g, z, c_gen, c_cond, k[4:6], neural_res, update_emas=True)
    fake = jax.lax.stop_gradient(fake)
    real, real_raw = real_images(batch, neural_res, sched["blur_sigma"], nets.train.blur_init_sigma)
    c_fake = discriminator_label(c_gen, k[3], nets.pose)
    c_real = discriminator_label(batch["label"], k[6], nets.pose)

    def loss_fn(params):
        lf = _run_d(nets, params, fake["image"], fake["image_raw"], c_fake, sched["blur_sigma"])
        lr = _run_d(nets, params, real, real_raw, c_real, sched["blur_sigma"])
        return jnp.mean(losses.d_logistic_loss(lr, lf)), (lf, lr)

    (loss, (lf, lr)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d["params"])
    params, opt = _apply(nets.d_tx, state.d["params"], state.d_opt, grads)
    state = state.replace(d={"params": params}, d_opt=opt, g={**state.g, "buffers": buffers})
    return state, {"D/loss": loss, "D/fake_score": jnp.mean(lf), "D/real_score": jnp.mean(lr)}


def d_reg(nets: Networks, state: TrainState, batch, key, sched, *, neural_res: int):
    """Dreg: R1 (γ/2 · |∇D(real)|² over both images) × interval."""
    k = _keys(key, "Dreg")
    t = nets.train
    gain = max(t.d_reg_interval, 1)
    real, real_raw = real_images(batch, neural_res, sched["blur_sigma"], nets.train.blur_init_sigma)
    c_real = discriminator_label(batch["label"], k[0], nets.pose)

    def loss_fn(params):
        d_fn = lambda img, raw: _run_d(nets, params, img, raw, c_real, sched["blur_sigma"])
        penalty = losses.r1_penalty(d_fn, real, real_raw)
        return jnp.mean(penalty) * (t.r1_gamma / 2) * gain, penalty

    (_, penalty), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d["params"])
    params, opt = _apply(nets.d_tx, state.d["params"], state.d_opt, grads)
    return state.replace(d={"params": params}, d_opt=opt), {"D/r1_penalty": jnp.mean(penalty)}


def finish_step(nets: Networks, state: TrainState, batch_size: int):
    """G EMA (params lerped, buffers copied, as EG3D) and the counters."""
    t = nets.train
    beta = schedules.ema_beta(batch_size, state.nimg, t.ema_kimg, t.ema_rampup)
    params = schedules.ema_update(state.g_ema["params"], state.g["params"], beta)
    g_ema = {**state.g, "params": params}
    return state.replace(g_ema=g_ema, step=state.step + 1, nimg=state.nimg + batch_size)


PHASES = {"Gmain": g_main, "Greg": g_reg, "Dmain": d_main, "Dreg": d_reg}


def phases_at(train, step: int) -> tuple[str, ...]:
    """Phases run at iteration `step` (EG3D: a reg phase runs when step % interval == 0)."""
    out = ["Gmain"]
    if train.density_reg > 0 and train.g_reg_interval and step % train.g_reg_interval == 0:
        out.append("Greg")
    out.append("Dmain")
    if train.r1_gamma > 0 and train.d_reg_interval and step % train.d_reg_interval == 0:
        out.append("Dreg")
    return tuple(out)


def schedule_at(train, nimg: int) -> tuple[dict, int]:
    """The traced schedule values and the static neural resolution at cur_nimg."""
    sched = dict(
        blur_sigma=jnp.float32(schedules.blur_sigma(nimg, train.blur_init_sigma,
                                                    train.blur_fade_kimg)),
    )  # fmt: skip
    swap = schedules.gpc_swap_prob(nimg, train.gpc_reg_prob, train.gpc_reg_fade_kimg)
    sched["swap_prob"] = None if swap is None else jnp.float32(swap)  # None: condition on 0
    res = schedules.neural_res(nimg, train.neural_res_initial, train.neural_res_final,
                               train.neural_res_fade_kimg)  # fmt: skip
    return sched, int(res)


@partial(jax.jit, static_argnames=("nets", "phases", "neural_res"), donate_argnums=(1,))
def train_step(nets: Networks, state: TrainState, batch, key, sched, *, phases, neural_res):
    """One iteration: the given phases in order, then `finish_step`. key: the run's key;
    the step key is fold_in(key, state.step)."""
    step_key = jax.random.fold_in(key, state.step)
    metrics = {}
    for name in phases:
        state, m = PHASES[name](nets, state, batch, step_key, sched, neural_res=neural_res)
        metrics.update(m)
    state = finish_step(nets, state, batch["label"].shape[0])
    return state, metrics
