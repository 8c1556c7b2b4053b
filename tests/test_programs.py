"""Compiled programs per neural resolution (train/programs.py): made ahead in a background
thread, equal to jax.jit's own, shared, and failures reported; the fade's next resolution."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax.train import programs, schedules


def _toy(calls):
    """jit_fn(phase, res): a function whose shapes depend on res, as a phase's do."""

    def jit_fn(phase, res):
        calls.append((phase, res, threading.current_thread().name))

        def fn(x, w):
            img = jax.image.resize(x, (x.shape[0], res, res), "linear")
            return jnp.tanh(img @ w[:res, :res]).sum() * (2.0 if phase == "b" else 1.0)

        return jax.jit(fn)

    return jit_fn


def _args(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (2, 8, 8)), jax.random.normal(k2, (32, 32))


def test_a_program_equals_jits_and_is_compiled_once():
    calls = []
    p = programs.Programs(("equal", 0), _toy(calls), ahead=False)
    args = _args()
    for phase in ("a", "b"):
        for res in (12, 16):
            got = p.get(phase, res, args)(*args)
            want = _toy([])(phase, res)(*args)
            assert np.asarray(got) == np.asarray(want)  # the same program, bit for bit
    p.get("a", 12, args)
    assert p.stats()["compiled"] == 4 and len(calls) == 4
    # Another owner's Programs of the same key reuses the table; another shape compiles.
    q = programs.Programs(("equal", 0), _toy(calls), ahead=False)
    q.get("a", 12, args)
    assert q.stats()["compiled"] == 0
    q.get("a", 12, (args[0][:1], args[1]))
    assert q.stats()["compiled"] == 1


def test_compile_ahead_runs_in_the_background_and_is_not_repeated():
    calls = []
    p = programs.Programs(("ahead", 0), _toy(calls))
    args = _args()
    p.compile_ahead(["a", "b"], 20, args)
    p.compile_ahead(["a", "b"], 20, args)  # asked twice: compiled once
    p.get("a", 20, args), p.get("b", 20, args)
    assert [c[:2] for c in calls] == [("a", 20), ("b", 20)]
    assert all(c[2].startswith("compile-ahead") for c in calls)
    assert p.stats()["compiled"] == 2
    got = p.get("b", 20, args)(*args)
    assert np.asarray(got) == np.asarray(_toy([])("b", 20)(*args))
    p.close()
    p.compile_ahead(["a"], 24, args)  # after close: nothing starts
    assert len(calls) == 2


def test_a_failed_compile_ahead_is_retried_in_the_step_and_a_failure_there_raises():
    tries = []

    def jit_fn(phase, res):
        tries.append(res)
        if len(tries) != 2:
            raise RuntimeError("out of memory while compiling")
        return jax.jit(lambda x, w: x.sum() + w.sum())

    p = programs.Programs(("fails", 0), jit_fn)
    args = _args()
    p.compile_ahead(["a"], 8, args)  # fails in the background
    want = float(args[0].sum() + args[1].sum())
    assert float(p.get("a", 8, args)(*args)) == pytest.approx(want)  # compiled again here
    assert tries == [8, 8]
    with pytest.raises(RuntimeError, match="out of memory"):  # failing here: reported
        p.get("a", 9, args)
    assert tries == [8, 8, 9]


@pytest.mark.parametrize(
    "initial,final,fade,batch",
    [(64, 128, 1000.0, 32), (16, 24, 0.1, 4), (64, 128, 0.05, 8), (64, 32, 2.0, 16)],
)
def test_next_neural_res_is_the_next_value_the_schedule_takes(initial, final, fade, batch):
    res = lambda n: schedules.neural_res(n, initial, final, fade)
    steps = int(fade * 1000 / batch) + 3
    seq = [res(k * batch) for k in range(steps)]
    for k in range(0, steps, max(1, steps // 200)):
        later = [j for j in range(k, steps) if seq[j] != seq[k]]
        want = seq[later[0]] if later else None
        assert schedules.next_neural_res(k * batch, batch, initial, final, fade) == want
        if later:  # its steps, counted from k: the first and last that use it
            use = [j - k for j in range(k, steps) if seq[j] == want]
            span = schedules.neural_res_span(k * batch, batch, initial, final, fade)
            assert span == (want, use[0], use[-1] if use[-1] < steps - k - 1 else span[2])
    assert schedules.next_neural_res(0, batch, initial, None, fade) is None
    # Within a run's end only: the last step's resolution has no successor to prepare.
    two = 2 * batch  # a run of two steps: nimg 0 and batch
    want = seq[1] if seq[1] != seq[0] else None
    assert schedules.next_neural_res(0, batch, initial, final, fade, end_nimg=two) == want
    assert schedules.next_neural_res(batch, batch, initial, final, fade, end_nimg=two) is None


def test_phases_between_are_those_the_steps_run():
    from types import SimpleNamespace

    from styleavatar_jax.train.step import phases_at, phases_between

    t = SimpleNamespace(density_reg=0.25, g_reg_interval=4, r1_gamma=1.0, d_reg_interval=16)
    for first, last in [(0, 0), (1, 2), (1, 3), (5, 8), (17, 40), (3, 3), (30, 33)]:
        want = {p for s in range(first, last + 1) for p in phases_at(t, s)}
        got = phases_between(t, first, last)
        assert set(got) == want and got == tuple(p for p in ("Gmain", "Greg", "Dmain", "Dreg")
                                                 if p in want)  # fmt: skip
