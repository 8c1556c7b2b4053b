"""Train steps: sharded over 8 devices == one device, each phase moves its own network,
gradient accumulation == one pass (configs/tiny.py architecture, random data)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax import cameras
from styleavatar_jax.train import step as train_step
from styleavatar_jax.train.config import training_configs
from styleavatar_jax.train.state import TrainState, init_state, make_networks
from styleavatar_jax.typed_config import load_config_file

# Float32 on XLA:CPU: GSPMD's cross-device sums (the gradient all-reduce, minibatch-std,
# the batch means) add in another order than one device does, so two steps agree to
# float rounding amplified by two Adam updates (measured max |Δ| ≈ 1e-6 on weights of
# size ~1e-1; 2e-4 relative bounds it with margin and still catches any wrong row/shard).
RTOL, ATOL = 2e-4, 2e-5


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


def _quadratic_parts(u, accum: int):
    """Stand-ins for the phases' loss parts with known gradients: main = mean(u)·Σθ/2
    (gradient mean(u)/2), reg = gain·Σθ²/2 (gradient gain·θ)."""

    def main(*_):
        def loss_fn(params, carry, mb, key):
            x = jnp.mean(mb["u"]) / accum
            return x * sum(jnp.sum(p) for p in jax.tree.leaves(params)) / 2, (carry, {"main": x})

        return {"u": u}, loss_fn, jax.random.key(0)

    def reg(*args):
        gain = args[-1]

        def loss_fn(params, carry, mb, key):
            loss = gain * sum(jnp.sum(p**2) for p in jax.tree.leaves(params)) / 2 / accum
            return loss, (carry, {"reg": loss})

        return {"u": u}, loss_fn, jax.random.key(0)

    return main, reg


@pytest.mark.parametrize("accum", [1, 2])
def test_reg_interval_0_step_is_main_plus_reg_with_gain_1(monkeypatch, accum):
    """Gboth (Dboth) = one Adam step on Gmain's + Greg's gradients, the latter at gain 1,
    with the unscaled lr. The parts are quadratics with known gradients, so this sees the
    wiring (sum, gain, accumulation, optimizer), not the networks."""
    nets = _tiny(g_reg_interval=0, d_reg_interval=0, accum_steps=accum)
    u = jnp.arange(8.0)  # per-sample input: accumulation must see every row once
    main, reg = _quadratic_parts(u, accum)
    for net in ("g", "d"):
        monkeypatch.setattr(train_step, f"_{net}_main_part", main)
        monkeypatch.setattr(train_step, f"_{net}_reg_part", reg)
    params = {"a": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([[0.5]])}
    state = TrainState(step=jnp.int32(0), nimg=jnp.int32(0),
                       g={"params": params, "buffers": {"w_avg": jnp.zeros(3)}}, g_ema={},
                       d={"params": params}, g_opt=nets.g_tx.init(params),
                       d_opt=nets.d_tx.init(params))  # fmt: skip
    for net, phase, lr in (("g", train_step.g_both, nets.train.lr_g),
                           ("d", train_step.d_both, nets.train.lr_d)):  # fmt: skip
        new, metrics = phase(nets, state, None, jax.random.key(1), None, neural_res=16)
        assert set(metrics) == {"main", "reg"}
        mu = getattr(new, f"{net}_opt")[0].mu  # Adam's first moment: the gradient (β1 = 0)
        for k, p in params.items():
            np.testing.assert_allclose(mu[k], float(jnp.mean(u)) / 2 + p, rtol=1e-6)
            step = getattr(new, net)["params"][k] - p  # first Adam step: lr·g/(|g| + eps)
            np.testing.assert_allclose(np.abs(step), lr, rtol=1e-3)  # lazy k: lr·k/(k+1)


def _d_logits_two_keys(base, disc_c_noise: float):
    """train_step._run_d's logits under keys 1 and 2, D with the given label noise."""
    d_cfg = dataclasses.replace(base.D.cfg, disc_c_noise=disc_c_noise)
    nets = make_networks(base.G.cfg, d_cfg, base.train, base.pose)
    r = d_cfg.img_resolution
    img, raw = jnp.zeros((4, r, r, 3)), jnp.zeros((4, 16, 16, 3))
    c = jnp.asarray(np.random.default_rng(0).standard_normal((4, d_cfg.c_dim)), jnp.float32)
    k = jax.random.key(0)
    params = jax.jit(nets.D.init)({"params": k, "c_noise": k}, img, raw, c)["params"]
    run = jax.jit(lambda key: train_step._run_d(nets, params, img, raw, c, 0.0, key))
    return [np.asarray(run(jax.random.key(i))) for i in (1, 2)]


def test_d_label_noise_runs_in_training_phases():
    """disc_c_noise > 0 draws D's label noise from the phase's keys (it once found no
    'c_noise' stream and failed); each key gives its own draw, no noise ignores the key."""
    base = _tiny()
    np.testing.assert_array_equal(*_d_logits_two_keys(base, 0.0))
    a, b = _d_logits_two_keys(base, 1.0)
    assert np.abs(a - b).max() > 0.1 * np.abs(a).max()  # logits of a fresh D are ~1e-5
