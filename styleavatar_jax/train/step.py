"""Pure train steps, EG3D's phases (training/loss.py StyleGAN2Loss.accumulate_gradients):

    Gmain  non-saturating loss of fakes           every step     (lr, β scaled for laziness)
    Greg   L1 density regularisation × interval  every g_reg_interval steps
    Dmain  logistic loss of fakes and reals      every step
    Dreg   R1 on real images × interval          every d_reg_interval steps

An interval of 0 is EG3D's `reg_interval=None` (no lazy regularisation): one phase per
step, Gboth (Gmain + Greg × 1) or Dboth (Dmain + Dreg × 1), whose summed gradient takes one
Adam step with unscaled lr and β (training_loop.py). Its two parts draw their inputs from
the Gmain/Greg (Dmain/Dreg) key streams (EG3D's Gboth reuses the main part's z and c: the
same distribution).

Each phase is a pure `(state, batch, key, schedule) -> (state, metrics)`; `Trainer` jits
each phase once (per neural resolution) with explicit shardings and runs the phases of an
iteration in order, then `finish_step` (G EMA, counters). Jitting phases apart (not the
whole iteration) compiles 5 programs instead of one per phase combination; on a
GPU the extra dispatches are microseconds against phases of milliseconds.

batch: image uint8 [B, R, R, 3], label float32 [B, 25]. Fakes are rendered at cameras drawn
from the batch's own labels in a random order (EG3D draws them from the dataset's labels).
Keys: every phase folds its own constant into fold_in(run key, step), so a step's
randomness depends only on (seed, step), never on the device count.

Gradient accumulation (train.accum_steps = A): a phase draws its per-sample inputs for the
whole batch, splits the batch into A strided micro-batches (rows i, i + A, ...: with the
batch sharded over 'data', every device keeps its own rows), sums the gradients of the
micro-batch losses in a `lax.scan` and takes one optimizer step, as EG3D's rounds of
batch_gpu do. With A = 1 it is one pass.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax.nn.resample import resize_bilinear
from styleavatar_jax.render.renderer import draw_uniforms
from styleavatar_jax.train import losses, schedules
from styleavatar_jax.train.pose_labels import discriminator_label
from styleavatar_jax.train.programs import Programs
from styleavatar_jax.train.state import Networks, TrainState

PHASE_KEYS = {"Gmain": 0, "Greg": 1, "Dmain": 2, "Dreg": 3}


def real_images(image_u8, neural_res: int, sigma, max_sigma: float):
    """uint8 [B, R, R, 3] -> image [B, R, R, 3] in [−1, 1] and image_raw [B, r, r, 3]
    (EG3D: filtered_resizing, antialiased, to the neural rendering resolution, then blurred
    like the final image: EG3D's blur_raw_target)."""
    image = image_u8.astype(jnp.float32) / 127.5 - 1.0
    raw = resize_bilinear(image, neural_res, antialias=True)
    return image, blur(raw, sigma, max_sigma)


def blur(image, sigma, max_sigma: float):
    """EG3D run_D's blur with a traced σ (`losses.blur_images`); σ < 1/3 leaves it as is."""
    return losses.blur_images(image, sigma, max_sigma=max_sigma)


def _keys(key, phase):
    """A phase's 8 keys: fold_in(key, phase) split 8 ways. Each phase unpacks them by use;
    a key's position fixes its random stream (a resumed run replays the same ones)."""
    return jax.random.split(jax.random.fold_in(key, PHASE_KEYS[phase]), 8)


def _fakes(nets: Networks, k_z, k_perm, k_swap, labels, sched, swap=losses.swap_conditioning):
    """Per-sample inputs of the fakes: z [B, z_dim], the cameras to render c_gen [B, 25]
    (the batch's labels in a random order) and the generator's pose conditioning."""
    z = jax.random.normal(k_z, (labels.shape[0], nets.G.cfg.z_dim))
    c_gen = labels[jax.random.permutation(k_perm, labels.shape[0])]
    return {"z": z, "c_gen": c_gen, "c_cond": swap(k_swap, c_gen, sched["swap_prob"])}


def _run_g(nets: Networks, g_vars, x, key, neural_res, update_emas=False):
    """Mapping with conditioning x['c_cond'], render at x['c_gen'] -> (outputs, buffers)."""
    G = nets.G
    k_render, k_noise = jax.random.split(key)
    uniforms = draw_uniforms(k_render, x["z"].shape[0], neural_res**2, G.cfg.render)

    def fn(m):
        ws = m.mapping(x["z"], x["c_cond"], update_emas=update_emas)
        return m.synthesis(ws, x["c_gen"], neural_res=neural_res, noise_mode="random",
                           uniforms=uniforms)  # fmt: skip

    out, updates = G.apply(g_vars, method=fn, rngs={"noise": k_noise}, mutable=["buffers"])
    return out, updates["buffers"]


def _run_d(nets: Networks, d_params, image, image_raw, c_d, sigma, key):
    """D's logits of blurred images; key: D's label noise (used when disc_c_noise > 0)."""
    image = blur(image, sigma, nets.train.blur_init_sigma)
    return nets.D.apply({"params": d_params}, image, image_raw, c_d, rngs={"c_noise": key})


def _micro(x, accum: int):
    """[B, ...] -> [A, B/A, ...], micro-batch i = rows i, i + A, ... (sharding-local)."""
    return x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)


def accumulate(loss_fn, params, carry, inputs: dict, key, accum: int):
    """Sum of gradients over `accum` micro-batches of `inputs` (a dict of [B, ...]).

    loss_fn(params, carry, micro, key) -> (loss, (carry, metrics)); carry threads state
    (G's buffers) through the micro-batches in order; key (a key or a pytree of keys) is
    fold_in(key, i) for micro-batch i. Returns (grads, carry, metrics averaged over
    micro-batches).
    """
    grad_fn = jax.grad(loss_fn, has_aux=True)  # losses are divided by A: the sum is the mean
    fold = lambda i: jax.tree.map(lambda k: jax.random.fold_in(k, i), key)
    if accum == 1:
        grads, (carry, metrics) = grad_fn(params, carry, inputs, fold(0))
        return grads, carry, metrics

    def body(acc, xs):
        grads, carry = acc
        i, micro = xs
        g, (carry, metrics) = grad_fn(params, carry, micro, fold(i))
        return (jax.tree.map(jnp.add, grads, g), carry), metrics

    zeros = jax.tree.map(jnp.zeros_like, params)
    micro = jax.tree.map(lambda x: _micro(x, accum), inputs)
    (grads, carry), metrics = jax.lax.scan(body, (zeros, carry), (jnp.arange(accum), micro))
    return grads, carry, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


def _apply(tx, params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def _combined(parts):
    """Loss parts [(inputs, loss_fn, key)] -> one part whose loss is their sum (metrics
    merged; carry threaded through the parts in order)."""
    if len(parts) == 1:
        return parts[0]

    def loss_fn(params, carry, mb, key):
        total, metrics = 0.0, {}
        for (_, fn, _), x, k in zip(parts, mb, key, strict=True):
            loss, (carry, m) = fn(params, carry, x, k)
            total, metrics = total + loss, {**metrics, **m}
        return total, (carry, metrics)

    return tuple(p[0] for p in parts), loss_fn, tuple(p[2] for p in parts)


def _update_g(nets: Networks, state: TrainState, parts):
    """One Adam step of G on the summed gradient of the loss parts -> (state, metrics)."""
    x, loss_fn, key = _combined(parts)
    grads, _, metrics = accumulate(loss_fn, state.g["params"], None, x, key,
                                   nets.train.accum_steps)  # fmt: skip
    params, opt = _apply(nets.g_tx, state.g["params"], state.g_opt, grads)
    return state.replace(g={**state.g, "params": params}, g_opt=opt), metrics


def _update_d(nets: Networks, state: TrainState, parts):
    """One Adam step of D on the summed gradient of the loss parts; G's buffers (w_avg,
    which the fakes of Dmain update) are threaded through -> (state, metrics)."""
    x, loss_fn, key = _combined(parts)
    grads, buffers, metrics = accumulate(loss_fn, state.d["params"], state.g["buffers"], x, key,
                                         nets.train.accum_steps)  # fmt: skip
    params, opt = _apply(nets.d_tx, state.d["params"], state.d_opt, grads)
    state = state.replace(d={"params": params}, d_opt=opt, g={**state.g, "buffers": buffers})
    return state, metrics


def _g_main_part(nets: Networks, state: TrainState, batch, key, sched, neural_res: int):
    """Gmain's (inputs, loss_fn, key): softplus(−D(G(z, c))) with swapped pose conditioning."""
    k_z, k_perm, k_swap, k_label, k_accum, _, _, _ = _keys(key, "Gmain")
    a = nets.train.accum_steps
    x = _fakes(nets, k_z, k_perm, k_swap, batch["label"], sched)
    x["c_d"] = discriminator_label(x["c_gen"], k_label, nets.pose)

    def loss_fn(params, carry, mb, key):
        out, _ = _run_g(nets, {**state.g, "params": params}, mb, key, neural_res)
        logits = _run_d(nets, state.d["params"], out["image"], out["image_raw"], mb["c_d"],
                        sched["blur_sigma"], jax.random.fold_in(key, 1))  # fmt: skip
        loss = jnp.mean(losses.g_nonsat_loss(logits))
        return loss / a, (carry, {"G/loss": loss, "G/fake_score": jnp.mean(logits)})

    return x, loss_fn, k_accum


def _g_reg_part(nets: Networks, state: TrainState, batch, key, sched, gain: float):
    """Greg's (inputs, loss_fn, key): L1 between σ at random points and at slightly
    perturbed points, × gain."""
    k_z, k_perm, k_swap, k_points, k_accum, _, _, _ = _keys(key, "Greg")
    t = nets.train
    a = t.accum_steps
    x = _fakes(nets, k_z, k_perm, k_swap, batch["label"], sched, losses.swap_conditioning_batch)
    initial, perturbed = losses.density_reg_points(k_points, x["z"].shape[0],
                                                   t.density_reg_points,
                                                   t.density_reg_p_dist)  # fmt: skip
    x["coords"] = jnp.concatenate([initial, perturbed], axis=1)
    n = initial.shape[1]

    def loss_fn(params, carry, mb, key):
        def fn(m):
            planes = m.planes(m.mapping(mb["z"], mb["c_cond"]), noise_mode="random")
            return m.sample_density(planes, mb["coords"])[1]

        sigma = nets.G.apply({**state.g, "params": params}, method=fn, rngs={"noise": key})
        reg = losses.density_l1(sigma[:, :n], sigma[:, n:], t.density_reg)
        return reg * gain / a, (carry, {"G/density_reg": reg})

    return x, loss_fn, k_accum


def _d_main_part(nets: Networks, state: TrainState, batch, key, sched, neural_res: int):
    """Dmain's (inputs, loss_fn, key): softplus(D(fake)) + softplus(−D(real)); the fake
    pass updates G's w_avg (the carry)."""
    k_z, k_perm, k_swap, k_fake_label, k_accum, _, k_real_label, _ = _keys(key, "Dmain")
    a = nets.train.accum_steps
    sigma = sched["blur_sigma"]
    x = _fakes(nets, k_z, k_perm, k_swap, batch["label"], sched)
    x["c_fake"] = discriminator_label(x["c_gen"], k_fake_label, nets.pose)
    x["c_real"] = discriminator_label(batch["label"], k_real_label, nets.pose)
    x["real"] = batch["image"]

    def loss_fn(params, buffers, mb, key):
        fake, buffers = _run_g(nets, {**state.g, "buffers": buffers}, mb, key, neural_res,
                               update_emas=True)  # fmt: skip
        fake = jax.lax.stop_gradient(fake)
        real, real_raw = real_images(mb["real"], neural_res, sigma, nets.train.blur_init_sigma)
        logits_fake = _run_d(nets, params, fake["image"], fake["image_raw"], mb["c_fake"], sigma,
                             jax.random.fold_in(key, 1))  # fmt: skip
        logits_real = _run_d(nets, params, real, real_raw, mb["c_real"], sigma,
                             jax.random.fold_in(key, 2))  # fmt: skip
        loss = jnp.mean(losses.d_logistic_loss(logits_real, logits_fake))
        metrics = {"D/loss": loss, "D/fake_score": jnp.mean(logits_fake),
                   "D/real_score": jnp.mean(logits_real)}  # fmt: skip
        return loss / a, (buffers, metrics)

    return x, loss_fn, k_accum


def _d_reg_part(nets: Networks, batch, key, sched, neural_res: int, gain: float):
    """Dreg's (inputs, loss_fn, key): R1 (γ/2 · |∇D(real)|² over both images) × gain."""
    k_real_label, _, _, _, k_accum, _, _, _ = _keys(key, "Dreg")
    t = nets.train
    a = t.accum_steps
    sigma = sched["blur_sigma"]
    x = {"real": batch["image"],
         "c_real": discriminator_label(batch["label"], k_real_label, nets.pose)}  # fmt: skip

    def loss_fn(params, carry, mb, key):
        real, real_raw = real_images(mb["real"], neural_res, sigma, t.blur_init_sigma)
        d_fn = lambda img, raw: _run_d(nets, params, img, raw, mb["c_real"], sigma,
                                       jax.random.fold_in(key, 2))  # fmt: skip
        penalty = jnp.mean(losses.r1_penalty(d_fn, real, real_raw))
        return penalty * (t.r1_gamma / 2) * gain / a, (carry, {"D/r1_penalty": penalty})

    return x, loss_fn, k_accum


def g_main(nets: Networks, state: TrainState, batch, key, sched, *, neural_res: int):
    """Gmain: softplus(−D(G(z, c))) with swapped pose conditioning."""
    return _update_g(nets, state, [_g_main_part(nets, state, batch, key, sched, neural_res)])


def g_reg(nets: Networks, state: TrainState, batch, key, sched, *, neural_res: int):
    """Greg: L1 between σ at random points and at slightly perturbed points, × interval."""
    gain = max(nets.train.g_reg_interval, 1)
    return _update_g(nets, state, [_g_reg_part(nets, state, batch, key, sched, gain)])


def g_both(nets: Networks, state: TrainState, batch, key, sched, *, neural_res: int):
    """Gboth (g_reg_interval 0): Gmain + Greg × 1 in one Adam step."""
    parts = [_g_main_part(nets, state, batch, key, sched, neural_res),
             _g_reg_part(nets, state, batch, key, sched, 1.0)]  # fmt: skip
    return _update_g(nets, state, parts)


def d_main(nets: Networks, state: TrainState, batch, key, sched, *, neural_res: int):
    """Dmain: softplus(D(fake)) + softplus(−D(real)); the fake pass updates G's w_avg."""
    return _update_d(nets, state, [_d_main_part(nets, state, batch, key, sched, neural_res)])


def d_reg(nets: Networks, state: TrainState, batch, key, sched, *, neural_res: int):
    """Dreg: R1 (γ/2 · |∇D(real)|² over both images) × interval."""
    gain = max(nets.train.d_reg_interval, 1)
    return _update_d(nets, state, [_d_reg_part(nets, batch, key, sched, neural_res, gain)])


def d_both(nets: Networks, state: TrainState, batch, key, sched, *, neural_res: int):
    """Dboth (d_reg_interval 0): Dmain + Dreg × 1 in one Adam step."""
    parts = [_d_main_part(nets, state, batch, key, sched, neural_res),
             _d_reg_part(nets, batch, key, sched, neural_res, 1.0)]  # fmt: skip
    return _update_d(nets, state, parts)


def finish_step(nets: Networks, state: TrainState, batch_size: int):
    """G EMA (params lerped, buffers copied, as EG3D) and the counters."""
    t = nets.train
    beta = schedules.ema_beta(batch_size, state.nimg, t.ema_kimg, t.ema_rampup)
    params = schedules.ema_update(state.g_ema["params"], state.g["params"], beta)
    g_ema = {**state.g, "params": params}
    return state.replace(g_ema=g_ema, step=state.step + 1, nimg=state.nimg + batch_size)


PHASES = {"Gmain": g_main, "Greg": g_reg, "Gboth": g_both,
          "Dmain": d_main, "Dreg": d_reg, "Dboth": d_both}  # fmt: skip


def _net_phases(name: str, interval: int, regularised: bool, step: int) -> tuple[str, ...]:
    """One network's phases at `step`: EG3D training_loop.py (a lazy reg phase runs when
    step % interval == 0; interval 0 = None: '<name>both', which is '<name>main' when the
    regulariser is off, as loss.py maps it)."""
    if not regularised:
        return (f"{name}main",)
    if interval == 0:
        return (f"{name}both",)
    return (f"{name}main", f"{name}reg") if step % interval == 0 else (f"{name}main",)


def phases_at(train, step: int) -> tuple[str, ...]:
    """Phases run at iteration `step`, G's then D's."""
    g = _net_phases("G", train.g_reg_interval, train.density_reg > 0, step)
    d = _net_phases("D", train.d_reg_interval, train.r1_gamma > 0, step)
    return g + d


def schedule_at(train, nimg: int) -> tuple[dict, int]:
    """The traced schedule values and the static neural resolution at cur_nimg."""
    sigma = schedules.blur_sigma(nimg, train.blur_init_sigma, train.blur_fade_kimg)
    sched = {"blur_sigma": jnp.float32(sigma)}
    swap = schedules.gpc_swap_prob(nimg, train.gpc_reg_prob, train.gpc_reg_fade_kimg)
    sched["swap_prob"] = None if swap is None else jnp.float32(swap)  # None: condition on 0
    res = schedules.neural_res(nimg, train.neural_res_initial, train.neural_res_final,
                               train.neural_res_fade_kimg)  # fmt: skip
    return sched, int(res)


def _phase(nets, state, batch, key, sched, *, phase, neural_res):
    if phase == "finish":
        return finish_step(nets, state, batch["label"].shape[0]), {}
    return PHASES[phase](nets, state, batch, jax.random.fold_in(key, state.step), sched,
                         neural_res=neural_res)  # fmt: skip


def phase_fn(nets: Networks, mesh: Mesh | None, phase: str, neural_res: int):
    """The jitted `phase` (a name of PHASES, or 'finish'): fn(state, batch,
    key, sched) -> (state, metrics), the state donated (compiled by `programs.Programs`)."""
    kw = {}
    if mesh is not None:
        rep, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        kw = dict(in_shardings=(rep, rows, rep, rep), out_shardings=rep)
    fn = partial(_phase, nets, phase=phase, neural_res=neural_res)
    return jax.jit(fn, donate_argnums=(0,), **kw)


def phases_between(train, first_step: int, last_step: int) -> tuple[str, ...]:
    """The phases `phases_at` runs at any step in [first_step, last_step] (one period of the
    lazy intervals is enough), in EG3D's order."""
    period = math.lcm(max(train.g_reg_interval, 1), max(train.d_reg_interval, 1))
    steps = range(first_step, min(last_step, first_step + period - 1) + 1)
    used = {p for step in steps for p in phases_at(train, step)}
    return tuple(p for p in PHASES if p in used)


class Trainer:
    """Jitted phases of `nets` on `mesh` (None: the default device, no explicit sharding).

    The state is replicated (P()), the batch sharded over the mesh axis 'data' (its batch
    dimension must divide by the axis size); metrics come back replicated. Parameters are
    replicated, data parallel; an FSDP layout would change only the state's sharding.
    Calls donate the state: use the returned one. Programs are compiled per neural
    resolution (`programs`); compile_ahead() prepares the next resolution's in the
    background (compile_ahead=False: only on first use). close() stops that thread.
    """

    def __init__(self, nets: Networks, mesh: Mesh | None = None, *, compile_ahead: bool = True):
        self.nets = nets
        self.mesh = mesh
        self.programs = Programs((nets, mesh), partial(phase_fn, nets, mesh), ahead=compile_ahead)

    def place(self, state):
        """Put a host or single-device state on the mesh, replicated."""
        if self.mesh is None:
            return state
        return jax.device_put(state, NamedSharding(self.mesh, P()))

    def phase(self, name: str, state, batch, key, sched, *, neural_res: int):
        """Run one phase -> (state, metrics)."""
        args = (state, batch, key, sched)
        res = 0 if name == "finish" else neural_res  # the EMA does not depend on it
        return self.programs.get(name, res, args)(*args)

    def compile_ahead(self, phases, state, batch, key, sched, *, neural_res: int) -> None:
        """Start compiling `phases` at neural_res for arguments shaped as these (returns at
        once; `phase` then finds them ready, or waits for the compile under way)."""
        self.programs.compile_ahead(phases, neural_res, (state, batch, key, sched))

    def close(self) -> None:
        self.programs.close()

    def step(self, state, batch, key, sched, *, phases, neural_res: int):
        """One iteration: `phases` in order, then the EMA and counters -> (state, metrics)."""
        metrics = {}
        for name in (*phases, "finish"):
            state, m = self.phase(name, state, batch, key, sched, neural_res=neural_res)
            metrics.update(m)
        return state, metrics
