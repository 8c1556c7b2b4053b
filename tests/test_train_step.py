"""Train steps: sharded over 8 devices == one device, each phase moves its own network,
gradient accumulation == one pass (configs/tiny.py architecture, random data)."""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax import cameras
from styleavatar_jax.models.discriminator import draw_c_noise
from styleavatar_jax.train import step as train_step
from styleavatar_jax.train.config import training_configs
from styleavatar_jax.train.state import TrainState, init_state, make_networks
from styleavatar_jax.typed_config import load_config_file

# Float32 on XLA:CPU: GSPMD's cross-device sums (the gradient all-reduce, minibatch-std,
# the batch means) add in another order than one device does, so two steps agree to
# float rounding amplified by two Adam updates (measured max |Δ| ≈ 1e-6 on weights of
# size ~1e-1). Adam normalises each element's step, so an element whose gradient sits at
# float-noise level moves by a noise-dependent fraction of its step (lr·k/(k+1) = 1.25e-3
# here): since R1 is taken w.r.t. the blurred image (as EG3D, issue 15) single elements of
# 8192 measured 5.6e-5 and 5.0e-5 absolute. ATOL 1e-4 (8% of a step) bounds them; rows or
# shards mixed up would move whole tensors and the losses.
RTOL, ATOL = 2e-4, 1e-4


@pytest.fixture(scope="module", autouse=True)
def _fast(fast_compile):
    """Compile-bound module: see conftest.fast_compile."""


def _mesh(n: int) -> Mesh:
    return Mesh(np.array(jax.devices()[:n]), ("data",))


def _tiny(**train):
    tc = training_configs(load_config_file("configs/tiny.py"))
    train = {"g_reg_interval": 1, "d_reg_interval": 1, **train}
    t = dataclasses.replace(tc.train, batch_size=8, **train)
    return make_networks(tc.generator, tc.discriminator, t, tc.pose)


def _batch(b: int, res: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (b, res, res, 3), dtype=np.uint8)
    return {"image": image, "label": cameras.random_labels(seed, b)}


def _run(nets, mesh, steps=2):
    trainer = train_step.Trainer(nets, mesh)
    state = trainer.place(init_state(nets, jax.random.key(0)))
    key = jax.random.key(1)
    history = []
    for i in range(steps):
        batch = _batch(8, 64, seed=i)
        if mesh is not None:
            batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
        sched, res = train_step.schedule_at(nets.train, int(state.nimg))
        phases = train_step.phases_at(nets.train, i)
        state, metrics = trainer.step(state, batch, key, sched, phases=phases, neural_res=res)
        history.append(jax.device_get(metrics))
    return jax.device_get(state), history


@pytest.fixture(scope="module")
def nets():
    return _tiny()


def test_sharded_equals_single_device(nets):
    assert jax.device_count() >= 8
    single, h1 = _run(nets, _mesh(1))
    sharded, h8 = _run(nets, _mesh(8))
    assert set(h1[0]) == {"G/loss", "G/fake_score", "G/density_reg", "D/loss", "D/fake_score",
                          "D/real_score", "D/r1_penalty"}  # fmt: skip
    for a, b in zip(h1, h8, strict=True):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=ATOL, err_msg=k)
    flat1 = jax.tree_util.tree_leaves_with_path(single)
    flat8 = jax.tree.leaves(sharded)
    for (path, a), b in zip(flat1, flat8, strict=True):
        if np.issubdtype(np.asarray(a).dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=str(path))
        else:
            np.testing.assert_array_equal(a, b, err_msg=str(path))
    assert int(single.step) == 2 and int(single.nimg) == 16


def _changed(a, b):
    return any(
        not np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_each_phase_moves_its_network(nets):
    trainer = train_step.Trainer(nets, _mesh(1))  # the programs of the test above
    key = jax.random.key(1)
    batch = _batch(8, 64)
    sched, res = train_step.schedule_at(nets.train, 0)
    before = jax.device_get(init_state(nets, jax.random.key(0)))
    for phase, moves, fixed in [("Gmain", "g", "d"), ("Greg", "g", "d"), ("Dmain", "d", None),
                                ("Dreg", "d", "g")]:  # fmt: skip
        state = jax.tree.map(jnp.asarray, before)
        state, metrics = trainer.phase(phase, state, batch, key, sched, neural_res=res)
        after = jax.device_get(state)
        assert _changed(getattr(before, moves)["params"], getattr(after, moves)["params"]), phase
        if fixed:
            assert not _changed(getattr(before, fixed), getattr(after, fixed)), phase
        assert all(np.isfinite(v) for v in jax.device_get(metrics).values()), phase
        assert int(after.step) == 0  # only 'finish' counts
    # Dmain's fake pass updates G's w_avg (EG3D's update_emas), not its params.
    state = jax.tree.map(jnp.asarray, before)
    after = jax.device_get(trainer.phase("Dmain", state, batch, key, sched, neural_res=res)[0])
    assert _changed(before.g["buffers"], after.g["buffers"])
    assert not _changed(before.g["params"], after.g["params"])


def test_accumulate_strided_microbatches_equal_full_batch():
    # A quadratic whose per-sample terms differ: the accumulated gradient (A = 4) is the
    # full-batch gradient, and the carry visits the micro-batches in order.
    x = jnp.arange(16.0).reshape(8, 2)

    def loss_fn(p, carry, mb, key):
        loss = jnp.mean(jnp.sum((mb["x"] - p) ** 2, axis=1))
        return loss / 4, (carry + 1, {"l": loss})

    p = jnp.array([1.0, -2.0])
    full = jax.grad(lambda p: jnp.mean(jnp.sum((x - p) ** 2, axis=1)))(p)
    grads, carry, metrics = train_step.accumulate(loss_fn, p, jnp.int32(0), {"x": x},
                                                  jax.random.key(0), 4)  # fmt: skip
    np.testing.assert_allclose(grads, full, rtol=1e-6)
    assert int(carry) == 4
    # micro-batch i holds rows i, i + 4: rows (0, 4) -> x[:, 0] = (0, 8) etc.
    micro = train_step._micro(x, 4)
    np.testing.assert_array_equal(micro[1, :, 0], [2.0, 10.0])


def test_dreg_accumulated_equals_one_pass():
    # Dreg has no per-micro-batch randomness, and with batch 8, minibatch-std groups of 4
    # ({0,2,4,6}, {1,3,5,7}) are exactly the strided micro-batches of A = 2: equal results.
    one, two = _tiny(), _tiny(accum_steps=2)
    batch = _batch(8, 64)
    sched, res = train_step.schedule_at(one.train, 0)
    out = []
    for n in (one, two):
        state = init_state(n, jax.random.key(0))
        trainer = train_step.Trainer(n, _mesh(1))
        state, m = trainer.phase("Dreg", state, batch, jax.random.key(1), sched, neural_res=res)
        # Adam's first moment after one step with β1 = 0 is the gradient itself (the
        # parameters are not compared: Adam maps a gradient at float-noise level to ±lr).
        out.append(jax.device_get((state.d_opt[0].mu, m)))
    np.testing.assert_allclose(out[0][1]["D/r1_penalty"], out[1][1]["D/r1_penalty"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out[0][0]), jax.tree.leaves(out[1][0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(a).max()))


def test_accum_must_divide_batch():
    with pytest.raises(ValueError, match="accum_steps"):
        _tiny(accum_steps=3)


def test_reg_interval_0_regularises_every_step_within_the_main_step():
    """Interval 0 is EG3D's reg_interval=None: 'Gboth' / 'Dboth' every step, and no other
    phase; lazy intervals keep their main + reg phases."""
    t = _tiny(g_reg_interval=0, d_reg_interval=0).train
    assert {train_step.phases_at(t, s) for s in range(40)} == {("Gboth", "Dboth")}
    assert train_step.phases_between(t, 3, 70) == ("Gboth", "Dboth")
    mixed = dataclasses.replace(t, d_reg_interval=16)
    assert train_step.phases_at(mixed, 16) == ("Gboth", "Dmain", "Dreg")
    assert train_step.phases_at(mixed, 17) == ("Gboth", "Dmain")
    off = dataclasses.replace(t, density_reg=0.0, r1_gamma=0.0)  # EG3D: 'both' -> 'main'
    assert train_step.phases_at(off, 0) == ("Gmain", "Dmain")


def _quadratic_grads(u):
    """Stand-ins for the parts' gradients (GRADS' signature) built with `accumulate`:
    main = mean(u)·Σθ/2 (gradient mean(u)/2), reg = gain·Σθ²/2 (gradient gain·θ)."""

    def main(nets, state, batch, draws, sched, *, neural_res):
        a = nets.train.accum_steps
        params = state.g["params"]

        def loss_fn(params, carry, mb, md):
            x = jnp.mean(mb["u"]) / a
            return x * sum(jnp.sum(p) for p in jax.tree.leaves(params)) / 2, (carry, {"main": x})

        carry = {"w_avg": jnp.ones(3)}  # as Dmain's fakes would update G's buffers
        return train_step.accumulate(loss_fn, params, carry, {"u": u}, jnp.zeros((a,)), a)

    def reg(nets, state, batch, draws, sched, *, neural_res, gain=None):
        a = nets.train.accum_steps

        def loss_fn(params, carry, mb, md):
            loss = gain * sum(jnp.sum(p**2) for p in jax.tree.leaves(params)) / 2 / a
            return loss, (carry, {"reg": loss})

        return train_step.accumulate(loss_fn, state.g["params"], None, {"u": u},
                                     jnp.zeros((a,)), a)  # fmt: skip

    return main, reg


@pytest.mark.parametrize("accum", [1, 2])
def test_reg_interval_0_step_is_main_plus_reg_with_gain_1(monkeypatch, accum):
    """Gboth (Dboth) = one Adam step on Gmain's + Greg's gradients, the latter at gain 1,
    with the unscaled lr; Dboth's carry (G's buffers) is Dmain's. The parts are quadratics
    with known gradients, so this sees the wiring (sum, gain, accumulation, optimizer), not
    the networks."""
    nets = _tiny(g_reg_interval=0, d_reg_interval=0, accum_steps=accum)
    u = jnp.arange(8.0)  # per-sample input: accumulation must see every row once
    main, reg = _quadratic_grads(u)
    for net in ("g", "d"):
        monkeypatch.setattr(train_step, f"{net}_main_grads", main)
        monkeypatch.setattr(train_step, f"{net}_reg_grads", reg)
    params = {"a": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([[0.5]])}
    state = TrainState(step=jnp.int32(0), nimg=jnp.int32(0),
                       g={"params": params, "buffers": {"w_avg": jnp.zeros(3)}}, g_ema={},
                       d={"params": params}, g_opt=nets.g_tx.init(params),
                       d_opt=nets.d_tx.init(params))  # fmt: skip
    for net, phase, lr in (("g", "Gboth", nets.train.lr_g), ("d", "Dboth", nets.train.lr_d)):
        draws = {p: None for p in ("Gmain", "Greg", "Dmain", "Dreg")}
        new, metrics = train_step.PHASES[phase](nets, state, None, draws, None, neural_res=16)
        assert set(metrics) == {"main", "reg"}
        mu = getattr(new, f"{net}_opt")[0].mu  # Adam's first moment: the gradient (β1 = 0)
        for k, p in params.items():
            np.testing.assert_allclose(mu[k], float(jnp.mean(u)) / 2 + p, rtol=1e-6)
            step = getattr(new, net)["params"][k] - p  # first Adam step: lr·g/(|g| + eps)
            np.testing.assert_allclose(np.abs(step), lr, rtol=1e-3)  # lazy k: lr·k/(k+1)
        if net == "d":
            np.testing.assert_array_equal(new.g["buffers"]["w_avg"], np.ones(3))


def _d_net(base, disc_c_noise: float):
    d_cfg = dataclasses.replace(base.D.cfg, disc_c_noise=disc_c_noise)
    return make_networks(base.G.cfg, d_cfg, base.train, base.pose)


def _d_inputs(d_cfg):
    r = d_cfg.img_resolution
    img, raw = jnp.zeros((4, r, r, 3)), jnp.zeros((4, 16, 16, 3))
    c = jnp.asarray(np.random.default_rng(0).standard_normal((4, d_cfg.c_dim)), jnp.float32)
    return img, raw, c


def test_d_label_noise_draw_is_the_c_noise_streams():
    """draw_c_noise(key) is the draw D takes from rngs={'c_noise': key} (so the train step's
    draws kept the key streams of the keyed D calls), and each key gives its own draw."""
    nets = _d_net(_tiny(), 1.0)
    img, raw, c = _d_inputs(nets.D.cfg)
    k = jax.random.key(0)
    params = jax.jit(nets.D.init)({"params": k, "c_noise": k}, img, raw, c)
    keyed = jax.jit(lambda key: nets.D.apply(params, img, raw, c, rngs={"c_noise": key}))
    given = jax.jit(lambda draw: nets.D.apply(params, img, raw, c, c_noise=draw))
    draw = lambda i: draw_c_noise(jax.random.key(i), 4, nets.D.cfg.c_dim)
    a, b = (np.asarray(keyed(jax.random.key(i))) for i in (1, 2))
    # Two programs (draw inside D or outside) may round differently: 2e-7 relative measured;
    # another key's draw moves the logits by > 10%.
    np.testing.assert_allclose(np.asarray(given(draw(1))), a, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(given(draw(2))), b, rtol=1e-5)
    assert np.abs(a - b).max() > 0.1 * np.abs(a).max()  # logits of a fresh D are ~1e-5


@pytest.mark.parametrize("accum", [1, 2])
def test_d_label_noise_trains(accum):
    """disc_c_noise > 0: every phase that runs D draws its label noise per micro-batch and
    trains (it once found no 'c_noise' stream and failed); without it nothing is drawn."""
    base = _tiny(accum_steps=accum)
    batch = jax.tree.map(jnp.asarray, _batch(8, 64))
    sched, res = train_step.schedule_at(base.train, 0)
    key = jax.random.key(1)
    for noise in (0.0, 1.0):
        nets = _d_net(base, noise)
        state = init_state(nets, jax.random.key(0))
        for phase in ("Gmain", "Dmain", "Dreg"):
            draws = jax.eval_shape(partial(train_step.DRAWS[phase], nets, state, batch, key,
                                           neural_res=res))  # fmt: skip
            micro = draws.get("micro", {})
            want = {"Gmain": {"fake"}, "Dmain": {"fake", "real"}, "Dreg": {"real"}}[phase]
            assert set(micro.get("c_noise", {})) == (want if noise else set()), phase
            for d in micro.get("c_noise", {}).values():
                assert d.shape == (accum, 8 // accum, nets.D.cfg.c_dim)
    if accum == 1:
        return  # the programs compile for A = 2 only: micro-batch draws stacked and scanned
    trainer = train_step.Trainer(nets, _mesh(1), compile_ahead=False)
    state = init_state(nets, jax.random.key(0))
    for phase in ("Dmain", "Dreg"):
        state, metrics = trainer.phase(phase, state, batch, key, sched, neural_res=res)
        assert all(np.isfinite(v) for v in jax.device_get(metrics).values()), phase
