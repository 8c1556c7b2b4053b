"""One training iteration against the official EG3D code's: EG3D's recorded random draws fed
to our pure phases (`step.GRADS`, `step.apply_grads`), then per-phase losses, every
parameter's gradient and every leaf of the state after the iteration (G, D, both Adam moment
sets, G_ema, w_avg) compared tensor by tensor.

The reference is a flat dict of arrays (an npz), written by bench/eg3d_step_record.py (torch
and EG3D's source): the committed fixture tests/fixtures/eg3d_tiny_step.npz
(tests/fixtures/make_eg3d_fixtures.py) or a live run on any snapshot
(bench/eg3d_step_parity.py). Its keys:

    meta                      JSON: settings of the iteration, `subsampled`, `phases`
    rng/order                 JSON list, one record per torch.rand/randn/rand_like/randn_like
                              call in call order: phase, fn, shape, caller (file:function:
                              line), module (the nn.Module calling it, by name), and where its
                              value is: `stored` (an `rng/NNN` key) or `numpy` ([seed,
                              index], `dist` 'uniform'/'normal': a float32 draw of
                              np.random.default_rng(seed_seq) that the recorder gave EG3D in
                              place of torch's, so large draws need no storage)
    inputs/image, inputs/label        the real batch (uint8 [B, R, R, 3], [B, 25])
    inputs/gen_z/<phase>, inputs/gen_c/<phase>   each phase's z and rendering cameras
    loss/<phase>              EG3D's loss of the phase (Greg: TVloss; Dreg: mean R1 penalty)
    grad/<phase>/<name>       p.grad after the phase's backward passes (torch layout)
    after/<net>/<name>        state_dict after the iteration (G, G_ema, D)
    after/<net>_opt/<name>/exp_avg, .../exp_avg_sq   Adam moments (G_opt, D_opt)
    noise/loss/<phase>, noise/grad/<phase>/<name>    optional float32 scalars: max|EG3D
                              float32 − EG3D float64| of that loss / full gradient, each
                              phase run in float64 from the float32 run's starting state
                              with its draws (bench/eg3d_step_record.py float64_reference)

A tensor named in meta['subsampled'] (name -> [shape, step, absmax]) is stored as
`x.ravel()[::step]` of the full tensor, with the full tensor's max|x|; comparisons take the
same elements of ours (the fixture keeps its size small; a live run compares everything).
A subsampled gradient also has `gradsign/<phase>/<name>`: the sign of every element
(`pack_signs`, 2 bits an element), so that `with_reference_grads` steps the unstored
elements in EG3D's direction with our magnitudes.

Tolerances (issue 15): each phase's loss within 1e-4 relative; every parameter's gradient
within 1e-3·max|g| of that tensor; every leaf after the iteration within 1e-4·max|x|. A loss
or gradient with a noise/ entry gets at least NOISE_K times it: the reference's own float32
rounding error, measured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial

import flax
import jax
import jax.numpy as jnp
import numpy as np

from styleavatar_jax.convert.eg3d import to_flax_layout, to_torch_layout, torch_key
from styleavatar_jax.render.renderer import RenderUniforms
from styleavatar_jax.train import step as train_step
from styleavatar_jax.train.config import TrainConfig
from styleavatar_jax.train.pose_labels import PoseLabelConfig
from styleavatar_jax.train.state import Networks, TrainState, make_networks

LOSS_RTOL, GRAD_RTOL, STATE_RTOL = 1e-4, 1e-3, 1e-4
# A gradient's tolerance also has 2e-4 of its phase's largest gradient: sums with heavy
# cancellation are float noise below that (a noise_strength gradient is Σ noise·∂L/∂x over
# every pixel; Greg's decoder output bias cancels exactly in exact arithmetic; Greg's L1 of
# densities 0.004 apart): measured up to 4e-2·max|g| of such a tensor between EG3D and us.
GRAD_FLOOR = 2e-4
# A loss's or gradient's tolerance is at least NOISE_K times the reference's measured float32
# rounding error (its noise/ entry, max|EG3D f32 − EG3D f64|): ours and EG3D round
# independently (other summation orders), |ours − EG3D| ≤ |ours − f64| + |EG3D − f64|, so 4
# admits ours up to 3× EG3D's own error. R1's bias gradients (second-order sums with heavy
# cancellation) are the worst conditioned: rounding the real image to float32 alone moves
# them by 2e-5·max|g|; ours' error is 0.1–1.3× EG3D's there from the same D, up to ~14×
# (5e-5·max|g|) after a step, far inside 1e-3·max|g|. The floors matter
# where EG3D's own error passes the base tolerance (Greg's noise_strength, 1.5e-4 of the
# phase's largest gradient in the fixture).
NOISE_K = 4.0
# The metric of ours that is EG3D's recorded loss of each phase.
LOSS_METRIC = {"Gmain": "G/loss", "Greg": "G/density_reg", "Dmain": "D/loss",
               "Dreg": "D/r1_penalty"}  # fmt: skip


def record_values(ref: Mapping[str, np.ndarray]) -> list[dict]:
    """The reference's rng/order records, each with its 'value' (stored or regenerated)."""
    records = json.loads(str(ref["rng/order"]))
    for r in records:
        if "stored" in r:
            r["value"] = np.asarray(ref[r["stored"]])
        else:
            r["value"] = numpy_draw(r["numpy"], r["dist"], tuple(r["shape"]))
    return records


def numpy_draw(seed: list[int], dist: str, shape: tuple[int, ...]) -> np.ndarray:
    """The recorder's stand-in for a large torch draw: float32 uniform [0, 1) or standard
    normal from np.random.default_rng(seed)."""
    rng = np.random.default_rng(seed)
    if dist == "uniform":
        return rng.random(shape, dtype=np.float32)
    if dist == "normal":
        return rng.standard_normal(shape, dtype=np.float32)
    raise ValueError(f"numpy_draw: dist={dist!r}; expected 'uniform' or 'normal'")


def _where(r: dict) -> str:
    return f"draw {r.get('index')} ({r['fn']} {r['shape']} at {r['caller']}, phase {r['phase']})"


def draws_from_records(
    records: list[dict], gen_z: Mapping, gen_c: Mapping, phases
) -> dict[str, dict]:
    """EG3D's draws of one iteration (batch_gpu = batch: one micro-batch) -> our draws
    pytree per phase of `phases` (`step.DRAWS`' layout). gen_z / gen_c: each phase's z and
    cameras.

    Each record is placed by where EG3D drew it: loss.py run_G's `rand((B, 1))` is the swap
    coins; networks_stylegan2.py SynthesisLayer's `randn([B, 1, R, R])` the noise of that
    layer (by module name, which is our module path); renderer.py sample_stratified's
    `rand_like` and sample_pdf's `rand` the renderer's uniforms; in accumulate_gradients
    (Greg) `rand([])` the batch's swap coin, `rand((B, N, 3))` the points (·2 − 1 as EG3D),
    the first `randn_like` their perturbation and the second the ray directions
    sample_mixed ignores. Anything else (D's c noise, the renderer's density noise) is an
    error: our phases have no such draw.
    """
    flat: dict[str, dict] = {}
    perturb_seen: dict[str, int] = {}
    for r in records:
        phase, fn, value = r["phase"], r["fn"], np.asarray(r["value"], np.float32)
        file, func = r["caller"].split(":")[:2]
        out = flat.setdefault(phase, {})
        if func == "run_G" and fn == "rand":
            key = ("swap",)
        elif func == "forward" and file == "networks_stylegan2.py" and r.get("module"):
            key = ("micro", "noise", *r["module"].split("."), "noise")
            value = value.transpose(0, 2, 3, 1)[None]  # [B, 1, R, R] -> [1, B, R, R, 1]
        elif func == "sample_stratified":
            key, value = ("micro", "stratified"), value[None]
        elif func == "sample_pdf":
            key, value = ("micro", "pdf"), value[None]
        elif func == "accumulate_gradients" and fn == "rand":
            key = ("swap",) if value.ndim == 0 else ("points",)
            if value.ndim:
                value = value * np.float32(2) - np.float32(1)  # EG3D: rand(...) * 2 - 1
        elif func == "accumulate_gradients" and fn == "randn_like":
            n = perturb_seen[phase] = perturb_seen.get(phase, 0) + 1
            if n == 2:
                continue  # sample_mixed's ray directions: the decoder never reads them
            key = ("perturb",)
        else:
            raise ValueError(f"{_where(r)}: no place in our draws (unsupported randomness)")
        if key in out:
            raise ValueError(f"{_where(r)}: {'/'.join(key)} drawn twice in one phase")
        out[key] = value
    draws = {}
    for phase in phases:
        d = flax.traverse_util.unflatten_dict(flat.get(phase, {}))
        if "micro" in d and "stratified" in d["micro"]:
            m = d["micro"]
            m["uniforms"] = RenderUniforms(m.pop("stratified"), m.pop("pdf"))
        d["z"], d["c_gen"] = np.asarray(gen_z[phase]), np.asarray(gen_c[phase])
        for coins in ("d_coins", "fake_coins", "real_coins"):  # D's label coins: the
            d[coins] = np.zeros(d["c_gen"].shape[:1], np.float32)  # 25-d label ignores them
        draws[phase] = d
    return draws


@partial(jax.jit, static_argnames=("nets", "phase", "neural_res"))
def _grads(nets, phase, state, batch, draws, sched, neural_res):
    return train_step.GRADS[phase](nets, state, batch, draws, sched, neural_res=neural_res)


@partial(jax.jit, static_argnames=("nets", "phase"))
def _apply_grads(nets, phase, state, grads, carry):
    return train_step.apply_grads(nets, phase, state, grads, carry)


@partial(jax.jit, static_argnames=("nets", "batch_size"))
def _finish(nets, state, batch_size):
    return train_step.finish_step(nets, state, batch_size)


def run_iteration(
    nets: Networks,
    state: TrainState,
    batch,
    draws: Mapping[str, dict],
    sched,
    *,
    neural_res: int,
    phases,
    replace=None,
) -> tuple[dict, dict, TrainState]:
    """Our iteration with given draws -> (metrics per phase, gradients per phase, the state
    after the iteration, EMA and counters included). replace(phase, grads) -> grads: what
    the optimizer step gets instead of our gradients (EG3D's, `with_reference_grads`)."""
    metrics, grads = {}, {}
    for phase in phases:
        g, carry, m = _grads(nets, phase, state, batch, draws[phase], sched, neural_res)
        metrics[phase], grads[phase] = jax.device_get(m), jax.device_get(g)
        if replace is not None:
            g = jax.tree.map(jnp.asarray, replace(phase, grads[phase]))
        state = _apply_grads(nets, phase, state, g, carry)
    state = _finish(nets, state, batch["label"].shape[0])
    return metrics, grads, jax.device_get(state)


def pack_signs(x: np.ndarray) -> np.ndarray:
    """sign(x) of any shape -> uint8 [ceil(2·x.size / 8)]: the bits of x > 0, then x < 0."""
    flat = np.asarray(x).ravel()
    return np.packbits(np.concatenate([flat > 0, flat < 0]))


def unpack_signs(packed: np.ndarray, size: int) -> np.ndarray:
    """pack_signs' inverse: float32 [size] of +1, -1 and 0."""
    bits = np.unpackbits(np.asarray(packed, np.uint8), count=2 * size).astype(np.float32)
    return bits[:size] - bits[size:]


def with_reference_grads(ref: Mapping[str, np.ndarray]):
    """replace(phase, grads) for `run_iteration`: our gradient trees with every element the
    reference holds set to EG3D's (all of a tensor, or its stored subsample), the other
    elements of a subsampled tensor given EG3D's sign (|ours|·sign(EG3D); 0 where EG3D's is
    0) and tensors EG3D gave no gradient set to 0. Adam and the EMA are elementwise, so the
    stored elements of the state after the iteration then follow from EG3D's gradients
    alone: the optimizer steps, lazy scaling and EMA are checked without the gradients'
    float noise (Adam's first step is about lr·sign(g): a gradient element at noise level
    may flip it), and the next phase starts from EG3D's directions everywhere."""
    sub = json.loads(str(ref["meta"])).get("subsampled", {})

    def replace(phase, grads):
        flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(grads))
        out = {}
        for path, value in flat.items():
            key = f"grad/{phase}/{torch_key(path)}"
            t = to_torch_layout(path[-1], np.asarray(value)).copy()
            if key not in ref:
                t[...] = 0
            elif key in sub:
                flat = t.reshape(-1)
                signs = "gradsign/" + key[len("grad/") :]
                if signs in ref:
                    flat[:] = np.abs(flat) * unpack_signs(ref[signs], flat.size)
                flat[:: sub[key][1]] = ref[key]
            else:
                t[...] = ref[key]
            out[path] = to_flax_layout(path[-1], t)
        return flax.traverse_util.unflatten_dict(out)

    return replace


def torch_tensors(tree, prefix: str) -> dict[str, np.ndarray]:
    """A Flax params / buffers tree -> {prefix + EG3D name: array in torch layout}."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
    return {prefix + torch_key(p): to_torch_layout(p[-1], np.asarray(v)) for p, v in flat.items()}


def ours_as_reference(metrics, grads, state: TrainState) -> dict[str, np.ndarray]:
    """Our iteration in the reference's keys and layouts (the full tensors)."""
    out = {f"loss/{p}": np.float32(m[LOSS_METRIC[p]]) for p, m in metrics.items()}
    for phase, g in grads.items():
        out.update(torch_tensors(g, f"grad/{phase}/"))
    for net, variables in (("G", state.g), ("G_ema", state.g_ema), ("D", state.d)):
        for col in variables.values():
            out.update(torch_tensors(col, f"after/{net}/"))
    for net, opt in (("G_opt", state.g_opt), ("D_opt", state.d_opt)):
        adam = opt[0]  # optax.adam: (ScaleByAdamState(count, mu, nu), scale state)
        for moment, name in ((adam.mu, "exp_avg"), (adam.nu, "exp_avg_sq")):
            tensors = torch_tensors(moment, "")
            out.update({f"after/{net}/{k}/{name}": v for k, v in tensors.items()})
    return out


def compare(ref: Mapping[str, np.ndarray], ours: Mapping[str, np.ndarray]):
    """Rows (key, error, tolerance) for every loss, gradient and state tensor of the
    reference; tensors of ours the reference lacks must be 0 (a gradient EG3D never made, a
    moment torch's Adam never initialised). Error: |Δ| (losses) or max|Δ| over the stored
    elements; tolerance: the rtol times |loss| or the full tensor's max|ref|, for gradients
    plus GRAD_FLOOR times the phase's largest gradient; at least NOISE_K times the key's
    noise/ entry where the reference has one."""
    sub = json.loads(str(ref["meta"])).get("subsampled", {})
    phase_max: dict[str, float] = {}
    for key in ref:
        if key.startswith("grad/"):
            m = sub[key][2] if key in sub else float(np.abs(ref[key]).max(initial=0.0))
            group = "/".join(key.split("/")[:2])
            phase_max[group] = max(phase_max.get(group, 0.0), m)
    rows = []
    for key, mine in ours.items():
        kind = key.split("/")[0]
        mine = np.asarray(mine, np.float64)
        if key not in ref:
            if kind == "grad" or key.endswith(("/exp_avg", "/exp_avg_sq")):
                rows.append((key, float(np.abs(mine).max(initial=0.0)), 0.0))
                continue
            raise KeyError(f"{key}: not in the reference")
        theirs = np.asarray(ref[key], np.float64)
        if key in sub:
            shape, stride, absmax = sub[key]
            if tuple(shape) != mine.shape:
                raise ValueError(f"{key}: ours {mine.shape}, reference {tuple(shape)}")
            mine = mine.ravel()[::stride]
        else:
            if theirs.shape != mine.shape:
                raise ValueError(f"{key}: ours {mine.shape}, reference {theirs.shape}")
            absmax = float(np.abs(theirs).max(initial=0.0))
        rtol = {"loss": LOSS_RTOL, "grad": GRAD_RTOL}.get(kind, STATE_RTOL)
        tol = rtol * absmax
        if kind == "grad":
            tol += GRAD_FLOOR * phase_max["/".join(key.split("/")[:2])]
        if f"noise/{key}" in ref:
            tol = max(tol, NOISE_K * float(ref[f"noise/{key}"]))
        rows.append((key, float(np.abs(mine - theirs).max(initial=0.0)), tol))
    kinds = {k.split("/")[0] for k in ours}  # loss, grad, after: those ours holds
    missing = [k for k in ref if k.split("/")[0] in kinds and k not in ours]
    if missing:
        raise KeyError(f"reference tensors with no counterpart in ours: {missing[:5]}")
    return rows


def summary(rows) -> dict[str, tuple[float, str]]:
    """The worst error/tolerance ratio per group (loss/<phase>, grad/<phase>, after/<net>)."""
    worst: dict[str, tuple[float, str]] = {}
    for key, err, tol in rows:
        parts = key.split("/")
        group = "/".join(parts[:2])
        ratio = err / tol if tol > 0 else (0.0 if err == 0 else np.inf)
        if group not in worst or ratio > worst[group][0]:
            worst[group] = (ratio, key)
    return worst


def as_batch(ref: Mapping[str, np.ndarray]) -> dict[str, jnp.ndarray]:
    return {"image": jnp.asarray(ref["inputs/image"]), "label": jnp.asarray(ref["inputs/label"])}


def train_config(settings: Mapping) -> TrainConfig:
    """EG3D's loss/optimizer settings of the recorded iteration as our TrainConfig."""
    s = settings
    return TrainConfig(
        batch_size=s["batch"],
        lr_g=s["lr_g"],
        lr_d=s["lr_d"],
        g_reg_interval=s["g_reg_interval"],
        d_reg_interval=s["d_reg_interval"],
        r1_gamma=s["r1_gamma"],
        density_reg=s["density_reg"],
        density_reg_p_dist=s["density_reg_p_dist"],
        blur_init_sigma=s["blur_init_sigma"],
        blur_fade_kimg=s["blur_fade_kimg"],
        gpc_reg_prob=s["gpc_reg_prob"],
        gpc_reg_fade_kimg=s["gpc_reg_fade_kimg"],
        neural_res_initial=s["neural_res"],
        ema_kimg=s["ema_kimg"],
        ema_rampup=s["ema_rampup"],
    )


def check_iteration(ref: Mapping[str, np.ndarray], converted) -> tuple[list, dict, list]:
    """Our iteration from the reference's starting snapshot (`convert_pickle`'s output:
    (cfg, {'G', 'G_ema', 'D'} variables, (G, D))) with its recorded draws -> (rows, our
    metrics per phase, own_rows). rows: each phase's loss and gradients, every phase after
    the first starting from the state stepped with EG3D's gradients (`with_reference_grads`),
    and the state after that iteration; own_rows: the state after our own iteration
    (gradients' float noise included: for information)."""
    _, variables, (G, D) = converted
    meta = json.loads(str(ref["meta"]))
    settings, phases = meta["settings"], tuple(meta["phases"])
    if settings["gpc_reg_prob"] is None and not G.cfg.c_gen_conditioning_zero:
        raise ValueError("EG3D ran without pose-conditioning swaps on a G that conditions on c")
    nets = make_networks(G.cfg, D.cfg, train_config(settings), PoseLabelConfig(mode="camera"))
    g, d = variables["G"], {"params": variables["D"]["params"]}
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        nimg=jnp.asarray(settings["cur_nimg"], jnp.int32),
        g=g,
        g_ema=variables["G_ema"],
        d=d,
        g_opt=nets.g_tx.init(g["params"]),
        d_opt=nets.d_tx.init(d["params"]),
    )
    state = jax.tree.map(jnp.asarray, state)
    sched, res = train_step.schedule_at(nets.train, settings["cur_nimg"])
    if res != settings["neural_res"]:
        raise ValueError(f"neural resolution {res} ≠ EG3D's {settings['neural_res']}")
    gen_z = {p: ref[f"inputs/gen_z/{p}"] for p in phases}
    gen_c = {p: ref[f"inputs/gen_c/{p}"] for p in phases}
    draws = draws_from_records(record_values(ref), gen_z, gen_c, phases)
    draws = jax.tree.map(jnp.asarray, draws)
    run = partial(run_iteration, nets, state, as_batch(ref), draws, sched, neural_res=res,
                  phases=phases)  # fmt: skip
    # Each phase starts from the state EG3D's phase started from: the earlier phases stepped
    # with EG3D's gradients (else our gradients' float noise, through Adam's sign-like first
    # step, would move the later phases' inputs).
    metrics, grads, after = run(replace=with_reference_grads(ref))
    ours = ours_as_reference(metrics, grads, after)
    own_metrics, own_grads, own_after = run()
    own = {k: v for k, v in ours_as_reference(own_metrics, own_grads, own_after).items()
           if k.startswith("after/")}  # fmt: skip
    return compare(ref, ours), metrics, compare(ref, own)
