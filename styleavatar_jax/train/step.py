"""Pure train steps, EG3D's phases (training/loss.py StyleGAN2Loss.accumulate_gradients):

    Gmain  non-saturating loss of fakes           every step     (lr, β scaled for laziness)
    Greg   L1 density regularisation × interval  every g_reg_interval steps
    Dmain  logistic loss of fakes and reals      every step
    Dreg   R1 on real images × interval          every d_reg_interval steps

An interval of 0 is EG3D's `reg_interval=None` (no lazy regularisation): one phase per
step, Gboth (Gmain + Greg × 1) or Dboth (Dmain + Dreg × 1), whose summed gradient takes one
Adam step with unscaled lr and β (training_loop.py). Its two parts are drawn as Gmain's and
Greg's (Dmain's and Dreg's), from their key streams (EG3D's Gboth reuses the main part's z
and c: the same distribution).

Randomness apart from computation: each phase is a pure `(state, batch, draws, schedule)
-> (state, metrics)` (`PHASES`; `GRADS` stops before the optimizer step), where `draws` is a
pytree of every random tensor the phase uses (z, the cameras to render, swap coins, D-label
coins, D's label noise when disc_c_noise > 0, the renderer's uniforms, every noise layer's
noise, Greg's points and perturbations), made by `DRAWS[phase](nets, state, batch, key)`;
EG3D parity tests pass EG3D's recorded draws instead (train/eg3d_parity.py). `Trainer` jits
draw + phase as one program per phase (per neural resolution) with explicit shardings and
runs the phases of an iteration in order, then `finish_step` (G EMA, counters). Jitting
phases apart (not the whole iteration) compiles at most 5 programs (4 phases and the EMA)
instead of one per phase combination; on a GPU the extra dispatches are microseconds
against phases of milliseconds.

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

from styleavatar_jax.models.discriminator import draw_c_noise
from styleavatar_jax.models.synthesis import NOISE_INPUTS, draw_noise
from styleavatar_jax.nn.resample import resize_bilinear
from styleavatar_jax.render.renderer import draw_uniforms
from styleavatar_jax.train import losses, schedules
from styleavatar_jax.train.pose_labels import discriminator_label, label_coins
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


# ---------------------------------------------------------------------------------------
# Draws: every random tensor a phase uses, made from its key (draw_*), apart from the
# computation (the pure phases below). Per-sample draws are [B, ...] (split into micro-
# batches with the batch); the renderer's and the noise layers' draws are per micro-batch,
# stacked [A, ...] under 'micro' (micro-batch i's from fold_in(k_accum, i), as before).
# D's label noise (disc_c_noise > 0) is per micro-batch too, under micro/c_noise/{fake,
# real}: each D pass's from fold_in(micro-batch key, 1 (fakes) or 2 (reals)).

C_NOISE_FOLDS = {"fake": 1, "real": 2}


def _fake_draws(nets: Networks, k_z, k_perm, k_swap, labels, swap_shape):
    """z [B, z_dim], the cameras to render c_gen [B, 25] (the batch's labels in a random
    order; EG3D draws them from the dataset's labels) and the swap coins."""
    b = labels.shape[0]
    z = jax.random.normal(k_z, (b, nets.G.cfg.z_dim))
    c_gen = labels[jax.random.permutation(k_perm, b)]
    return {"z": z, "c_gen": c_gen, "swap": losses.swap_coins(k_swap, swap_shape)}


def _micro_draws(draw_one, key, accum: int):
    """draw_one(fold_in(key, i)) for the A micro-batches, stacked [A, ...]."""
    draws = [draw_one(jax.random.fold_in(key, i)) for i in range(accum)]
    return jax.tree.map(lambda *x: jnp.stack(x), *draws)


def _c_noise_draws(nets: Networks, key, batch: int, passes: tuple[str, ...]) -> dict:
    """D's label noise for one micro-batch's D passes ('fake', 'real'): {'c_noise': {pass:
    [b, c_dim]}}, what D drew from rngs={'c_noise': fold_in(key, C_NOISE_FOLDS[pass])};
    {} when disc_c_noise is 0 (D draws nothing)."""
    d = nets.D.cfg
    if d.disc_c_noise <= 0:
        return {}
    fold = lambda p: jax.random.fold_in(key, C_NOISE_FOLDS[p])
    return {"c_noise": {p: draw_c_noise(fold(p), batch, d.c_dim) for p in passes}}


def _render_draws(nets: Networks, g_buffers, batch: int, neural_res: int, d_passes):
    """One micro-batch's G pass: renderer uniforms ('render' key) and every noise layer's
    'random' noise ('noise' key), from the split of its key as `_run_g` always did; D's
    label noise of its `d_passes`."""
    G = nets.G

    def one(key):
        k_render, k_noise = jax.random.split(key)
        uniforms = draw_uniforms(k_render, batch, neural_res**2, G.cfg.render)
        return {"uniforms": uniforms,
                "noise": draw_noise(k_noise, g_buffers, batch, G.noise_layers()),
                **_c_noise_draws(nets, key, batch, d_passes)}  # fmt: skip

    return one


def _rendered_fakes(nets: Networks, state: TrainState, batch, keys, neural_res: int,
                    d_passes: tuple[str, ...]) -> dict:  # fmt: skip
    """Draws of a phase that renders fakes (Gmain, Dmain): z, c_gen, swap [B, 1] from keys
    (z, perm, swap, accum), micro {uniforms, noise[, c_noise]} per micro-batch."""
    k_z, k_perm, k_swap, k_accum = keys
    a, b = nets.train.accum_steps, batch["label"].shape[0]
    x = _fake_draws(nets, k_z, k_perm, k_swap, batch["label"], (b, 1))
    one = _render_draws(nets, state.g["buffers"], b // a, neural_res, d_passes)
    x["micro"] = _micro_draws(one, k_accum, a)
    return x


def draw_g_main(nets: Networks, state: TrainState, batch, key, *, neural_res: int) -> dict:
    """Gmain's draws: z, c_gen, swap [B, 1], d_coins [B] (D's label coins, coarse-to-fine),
    micro {uniforms, noise[, c_noise {fake}]}."""
    k_z, k_perm, k_swap, k_label, k_accum, _, _, _ = _keys(key, "Gmain")
    keys = (k_z, k_perm, k_swap, k_accum)
    x = _rendered_fakes(nets, state, batch, keys, neural_res, ("fake",))
    x["d_coins"] = label_coins(k_label, batch["label"].shape[0])
    return x


def draw_g_reg(nets: Networks, state: TrainState, batch, key, *, neural_res: int) -> dict:
    """Greg's draws: z, c_gen, swap [] (one coin for the batch), points [B, N, 3] uniform in
    [−1, 1)³, perturb [B, N, 3] standard normal, micro {noise} (backbone only)."""
    del neural_res  # no rendering
    k_z, k_perm, k_swap, k_points, k_accum, _, _, _ = _keys(key, "Greg")
    a, b = nets.train.accum_steps, batch["label"].shape[0]
    x = _fake_draws(nets, k_z, k_perm, k_swap, batch["label"], ())
    x["points"], x["perturb"] = losses.density_reg_draws(k_points, b,
                                                         nets.train.density_reg_points)  # fmt: skip
    layers = nets.G.noise_layers(planes_only=True)
    buffers = state.g["buffers"]
    x["micro"] = _micro_draws(lambda k: {"noise": draw_noise(k, buffers, b // a, layers)},
                              k_accum, a)  # fmt: skip
    return x


def draw_d_main(nets: Networks, state: TrainState, batch, key, *, neural_res: int) -> dict:
    """Dmain's draws: z, c_gen, swap [B, 1], fake_coins / real_coins [B] (D's label coins),
    micro {uniforms, noise[, c_noise {fake, real}]}."""
    k_z, k_perm, k_swap, k_fake_label, k_accum, _, k_real_label, _ = _keys(key, "Dmain")
    keys = (k_z, k_perm, k_swap, k_accum)
    x = _rendered_fakes(nets, state, batch, keys, neural_res, ("fake", "real"))
    x["fake_coins"] = label_coins(k_fake_label, batch["label"].shape[0])
    x["real_coins"] = label_coins(k_real_label, batch["label"].shape[0])
    return x


def draw_d_reg(nets: Networks, state: TrainState, batch, key, *, neural_res: int) -> dict:
    """Dreg's draws: real_coins [B] (D's label coins); with disc_c_noise > 0, micro
    {c_noise {real}} (else Dreg draws nothing per micro-batch: no 'micro')."""
    del state, neural_res
    k_real_label, _, _, _, k_accum, _, _, _ = _keys(key, "Dreg")
    a, b = nets.train.accum_steps, batch["label"].shape[0]
    x = {"real_coins": label_coins(k_real_label, b)}
    if nets.D.cfg.disc_c_noise > 0:
        x["micro"] = _micro_draws(lambda k: _c_noise_draws(nets, k, b // a, ("real",)),
                                  k_accum, a)  # fmt: skip
    return x


def draw_g_both(nets: Networks, state: TrainState, batch, key, *, neural_res: int) -> dict:
    """Gboth's draws: {'Gmain': Gmain's, 'Greg': Greg's} (each from its own key stream)."""
    return {p: DRAWS[p](nets, state, batch, key, neural_res=neural_res) for p in ("Gmain", "Greg")}


def draw_d_both(nets: Networks, state: TrainState, batch, key, *, neural_res: int) -> dict:
    """Dboth's draws: {'Dmain': Dmain's, 'Dreg': Dreg's} (each from its own key stream)."""
    return {p: DRAWS[p](nets, state, batch, key, neural_res=neural_res) for p in ("Dmain", "Dreg")}


# ---------------------------------------------------------------------------------------
# The phases: pure functions of (state, batch, draws, sched).


def _run_g(nets: Networks, g_vars, x, md, neural_res, update_emas=False):
    """Mapping with conditioning x['c_cond'], render at x['c_gen'] with the micro-batch's
    draws md (uniforms, noise) -> (outputs, buffers)."""
    G = nets.G

    def fn(m):
        ws = m.mapping(x["z"], x["c_cond"], update_emas=update_emas)
        return m.synthesis(ws, x["c_gen"], neural_res=neural_res, noise_mode="given",
                           uniforms=md["uniforms"])  # fmt: skip

    g_vars = {**g_vars, NOISE_INPUTS: md["noise"]}
    out, updates = G.apply(g_vars, method=fn, mutable=["buffers"])
    return out, updates["buffers"]


def _run_d(nets: Networks, d_params, image, image_raw, c_d, sigma, c_noise=None):
    """D's logits of blurred images; c_noise: D's label noise draw (disc_c_noise > 0)."""
    image = blur(image, sigma, nets.train.blur_init_sigma)
    return nets.D.apply({"params": d_params}, image, image_raw, c_d, c_noise=c_noise)


def _c_noise(md, d_pass: str):
    """A micro-batch's D label noise for `d_pass` ('fake', 'real'); None when not drawn."""
    return md["c_noise"][d_pass] if "c_noise" in md else None


def _micro(x, accum: int):
    """[B, ...] -> [A, B/A, ...], micro-batch i = rows i, i + A, ... (sharding-local)."""
    return x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)


def accumulate(loss_fn, params, carry, inputs: dict, micro, accum: int):
    """Sum of gradients over `accum` micro-batches of `inputs` (a dict of [B, ...]).

    loss_fn(params, carry, mb, md) -> (loss, (carry, metrics)); carry threads state
    (G's buffers) through the micro-batches in order; md is micro-batch i's slice of
    `micro` (a pytree of [A, ...]: its own draws), or, when `micro` is one PRNG key,
    fold_in(key, i). Returns (grads, carry, metrics averaged over micro-batches).
    """
    if isinstance(micro, jax.Array) and jnp.issubdtype(micro.dtype, jax.dtypes.prng_key):
        key = micro
        micro = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(accum))
    grad_fn = jax.grad(loss_fn, has_aux=True)  # losses are divided by A: the sum is the mean
    if accum == 1:
        md = jax.tree.map(lambda x: x[0], micro)
        grads, (carry, metrics) = grad_fn(params, carry, inputs, md)
        return grads, carry, metrics

    def body(acc, xs):
        grads, carry = acc
        mb, md = xs
        g, (carry, metrics) = grad_fn(params, carry, mb, md)
        return (jax.tree.map(jnp.add, grads, g), carry), metrics

    zeros = jax.tree.map(jnp.zeros_like, params)
    mbs = jax.tree.map(lambda x: _micro(x, accum), inputs)
    (grads, carry), metrics = jax.lax.scan(body, (zeros, carry), (mbs, micro))
    return grads, carry, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


def _apply(tx, params, opt_state, grads, untouched: tuple[tuple[str, ...], ...] = ()):
    """One optimizer step. `untouched`: path prefixes of parameters the phase's loss does not
    reach; they and their Adam moments stay as they are, as torch.optim.Adam skips
    parameters whose .grad is None (with their step counts: `state.scale_by_adam_per_param`)."""
    updates, new_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    if untouched:

        def keep(path):  # a params path, or one inside the optimizer state (…mu/nu + path)
            names = tuple(getattr(k, "key", None) for k in path)
            return any(names[i : i + len(u)] == u for u in untouched for i in range(len(names)))

        pick = lambda path, new, old: old if keep(path) else new
        new_params = jax.tree_util.tree_map_with_path(pick, new_params, params)
        new_state = jax.tree_util.tree_map_with_path(pick, new_state, opt_state)
    return new_params, new_state


def _fakes(nets: Networks, draws, sched):
    """Per-sample inputs of the fakes: z, c_gen and the generator's pose conditioning."""
    c_gen = draws["c_gen"]
    c_cond = losses.swap_by_coins(draws["swap"], c_gen, sched["swap_prob"])
    return {"z": draws["z"], "c_gen": c_gen, "c_cond": c_cond}


def g_main_grads(nets: Networks, state: TrainState, batch, draws, sched, *, neural_res: int):
    """Gmain's gradients: softplus(−D(G(z, c))) with swapped pose conditioning.
    -> (grads of G's params, None, metrics)."""
    del batch  # the fakes' cameras come in the draws
    a = nets.train.accum_steps
    x = _fakes(nets, draws, sched)
    x["c_d"] = discriminator_label(x["c_gen"], None, nets.pose, coins=draws["d_coins"])

    def loss_fn(params, carry, mb, md):
        out, _ = _run_g(nets, {**state.g, "params": params}, mb, md, neural_res)
        logits = _run_d(nets, state.d["params"], out["image"], out["image_raw"], mb["c_d"],
                        sched["blur_sigma"], _c_noise(md, "fake"))  # fmt: skip
        loss = jnp.mean(losses.g_nonsat_loss(logits))
        return loss / a, (carry, {"G/loss": loss, "G/fake_score": jnp.mean(logits)})

    return accumulate(loss_fn, state.g["params"], None, x, draws["micro"], a)


def g_reg_grads(nets: Networks, state: TrainState, batch, draws, sched, *, neural_res: int,
                gain: float | None = None):  # fmt: skip
    """Greg's gradients: L1 between σ at random points and at slightly perturbed points,
    × gain (None: the lazy interval). -> (grads of G's params, None, metrics)."""
    del batch, neural_res
    t = nets.train
    a = t.accum_steps
    gain = max(t.g_reg_interval, 1) if gain is None else gain
    x = _fakes(nets, draws, sched)
    perturbed = losses.perturb_points(draws["points"], draws["perturb"], t.density_reg_p_dist)
    x["coords"] = jnp.concatenate([draws["points"], perturbed], axis=1)
    n = draws["points"].shape[1]

    def loss_fn(params, carry, mb, md):
        def fn(m):
            planes = m.planes(m.mapping(mb["z"], mb["c_cond"]), noise_mode="given")
            return m.sample_density(planes, mb["coords"])[1]

        g_vars = {**state.g, "params": params, NOISE_INPUTS: md["noise"]}
        sigma = nets.G.apply(g_vars, method=fn)
        reg = losses.density_l1(sigma[:, :n], sigma[:, n:], t.density_reg)
        return reg * gain / a, (carry, {"G/density_reg": reg})

    return accumulate(loss_fn, state.g["params"], None, x, draws["micro"], a)


def d_main_grads(nets: Networks, state: TrainState, batch, draws, sched, *, neural_res: int):
    """Dmain's gradients: softplus(D(fake)) + softplus(−D(real)); the fake pass updates G's
    w_avg. -> (grads of D's params, G's buffers, metrics)."""
    a = nets.train.accum_steps
    sigma = sched["blur_sigma"]
    x = _fakes(nets, draws, sched)
    x["c_fake"] = discriminator_label(x["c_gen"], None, nets.pose, coins=draws["fake_coins"])
    x["c_real"] = discriminator_label(batch["label"], None, nets.pose, coins=draws["real_coins"])
    x["real"] = batch["image"]

    def loss_fn(params, buffers, mb, md):
        fake, buffers = _run_g(nets, {**state.g, "buffers": buffers}, mb, md, neural_res,
                               update_emas=True)  # fmt: skip
        fake = jax.lax.stop_gradient(fake)
        real, real_raw = real_images(mb["real"], neural_res, sigma, nets.train.blur_init_sigma)
        logits_fake = _run_d(nets, params, fake["image"], fake["image_raw"], mb["c_fake"], sigma,
                             _c_noise(md, "fake"))  # fmt: skip
        logits_real = _run_d(nets, params, real, real_raw, mb["c_real"], sigma,
                             _c_noise(md, "real"))  # fmt: skip
        loss = jnp.mean(losses.d_logistic_loss(logits_real, logits_fake))
        metrics = {"D/loss": loss, "D/fake_score": jnp.mean(logits_fake),
                   "D/real_score": jnp.mean(logits_real)}  # fmt: skip
        return loss / a, (buffers, metrics)

    return accumulate(loss_fn, state.d["params"], state.g["buffers"], x, draws["micro"], a)


def d_reg_grads(nets: Networks, state: TrainState, batch, draws, sched, *, neural_res: int,
                gain: float | None = None):  # fmt: skip
    """Dreg's gradients: R1 (γ/2 · |∇D(real)|² over both images) × gain (None: the lazy
    interval). -> (grads of D's params, None, metrics)."""
    t = nets.train
    a = t.accum_steps
    gain = max(t.d_reg_interval, 1) if gain is None else gain
    sigma = sched["blur_sigma"]
    x = {"real": batch["image"],
         "c_real": discriminator_label(batch["label"], None, nets.pose,
                                       coins=draws["real_coins"])}  # fmt: skip

    def loss_fn(params, carry, mb, md):
        real, real_raw = real_images(mb["real"], neural_res, sigma, t.blur_init_sigma)
        # EG3D's R1 is the gradient w.r.t. the *blurred* image: run_D replaces
        # img['image'] by its blur in the very dict whose entries autograd.grad then takes
        # as inputs (loss.py), so the blur is outside the gradient (as the raw's is).
        real = blur(real, sigma, t.blur_init_sigma)
        d_fn = lambda img, raw: nets.D.apply({"params": params}, img, raw, mb["c_real"],
                                             c_noise=_c_noise(md, "real"))  # fmt: skip
        penalty = jnp.mean(losses.r1_penalty(d_fn, real, real_raw))
        return penalty * (t.r1_gamma / 2) * gain / a, (carry, {"D/r1_penalty": penalty})

    micro = draws["micro"] if "micro" in draws else {}  # {}: nothing per micro-batch
    return accumulate(loss_fn, state.d["params"], None, x, micro, a)


def _sum_grads(main, reg):
    """Two parts' (grads, carry, metrics) -> their summed gradient, the main part's carry
    (G's buffers after Dmain's fakes; the regularisers carry nothing), merged metrics."""
    (g_main, carry, m_main), (g_reg, _, m_reg) = main, reg
    return jax.tree.map(jnp.add, g_main, g_reg), carry, {**m_main, **m_reg}


def g_both_grads(nets: Networks, state: TrainState, batch, draws, sched, *, neural_res: int):
    """Gboth's gradients (g_reg_interval 0): Gmain's + Greg's at gain 1, each from its own
    draws (draws['Gmain'], draws['Greg'])."""
    main = g_main_grads(nets, state, batch, draws["Gmain"], sched, neural_res=neural_res)
    reg = g_reg_grads(nets, state, batch, draws["Greg"], sched, neural_res=neural_res, gain=1.0)
    return _sum_grads(main, reg)


def d_both_grads(nets: Networks, state: TrainState, batch, draws, sched, *, neural_res: int):
    """Dboth's gradients (d_reg_interval 0): Dmain's + Dreg's at gain 1, each from its own
    draws (draws['Dmain'], draws['Dreg']); the carry is G's buffers after Dmain's fakes."""
    main = d_main_grads(nets, state, batch, draws["Dmain"], sched, neural_res=neural_res)
    reg = d_reg_grads(nets, state, batch, draws["Dreg"], sched, neural_res=neural_res, gain=1.0)
    return _sum_grads(main, reg)


# Parameters a phase's loss never reaches (path prefixes): torch gives them no .grad and
# torch.optim.Adam skips them, so their parameters and moments stay as they are (a zero
# gradient would still decay Adam's second moment and, β1 > 0, the first).
UNTOUCHED = {
    "Greg": (("superresolution",),),  # the density reads the planes only
    "Dreg": (("b4", "out", "bias"),),  # logits = Σ out(x)·cmap: ∂/∂image has no out.bias
}


def apply_grads(nets: Networks, phase: str, state: TrainState, grads, carry) -> TrainState:
    """`phase`'s optimizer step with its gradients (`GRADS[phase]`'s output): G's Adam for
    Gmain, Greg and Gboth, D's for Dmain, Dreg and Dboth, leaving `UNTOUCHED` parameters
    alone; after Dmain and Dboth, G's buffers (w_avg) are `carry`."""
    untouched = UNTOUCHED.get(phase, ())  # Gboth, Dboth: the main part reaches every one
    if phase in ("Gmain", "Greg", "Gboth"):
        params, opt = _apply(nets.g_tx, state.g["params"], state.g_opt, grads, untouched)
        return state.replace(g={**state.g, "params": params}, g_opt=opt)
    params, opt = _apply(nets.d_tx, state.d["params"], state.d_opt, grads, untouched)
    state = state.replace(d={"params": params}, d_opt=opt)
    if phase in ("Dmain", "Dboth"):
        state = state.replace(g={**state.g, "buffers": carry})
    return state


def _pure_phase(phase: str):
    def fn(nets: Networks, state: TrainState, batch, draws, sched, *, neural_res: int):
        grads, carry, metrics = GRADS[phase](nets, state, batch, draws, sched,
                                             neural_res=neural_res)  # fmt: skip
        return apply_grads(nets, phase, state, grads, carry), metrics

    fn.__name__ = fn.__qualname__ = phase
    fn.__doc__ = f"{phase}: `GRADS['{phase}']`, then `apply_grads` -> (state, metrics)."
    return fn


def finish_step(nets: Networks, state: TrainState, batch_size: int):
    """G EMA (params lerped, buffers copied, as EG3D) and the counters."""
    t = nets.train
    beta = schedules.ema_beta(batch_size, state.nimg, t.ema_kimg, t.ema_rampup)
    params = schedules.ema_update(state.g_ema["params"], state.g["params"], beta)
    g_ema = {**state.g, "params": params}
    return state.replace(g_ema=g_ema, step=state.step + 1, nimg=state.nimg + batch_size)


DRAWS = {"Gmain": draw_g_main, "Greg": draw_g_reg, "Gboth": draw_g_both,
         "Dmain": draw_d_main, "Dreg": draw_d_reg, "Dboth": draw_d_both}  # fmt: skip
GRADS = {"Gmain": g_main_grads, "Greg": g_reg_grads, "Gboth": g_both_grads,
         "Dmain": d_main_grads, "Dreg": d_reg_grads, "Dboth": d_both_grads}  # fmt: skip
PHASES = {phase: _pure_phase(phase) for phase in GRADS}  # (state, batch, draws, sched)


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
    """The keyed phase: its draws from fold_in(key, step), then the pure phase (one program:
    drawing inside costs what drawing in the middle of the computation did)."""
    if phase == "finish":
        return finish_step(nets, state, batch["label"].shape[0]), {}
    key = jax.random.fold_in(key, state.step)
    draws = DRAWS[phase](nets, state, batch, key, neural_res=neural_res)
    return PHASES[phase](nets, state, batch, draws, sched, neural_res=neural_res)


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
