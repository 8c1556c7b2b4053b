"""G's and D's Adam against torch.optim.Adam over phases that leave parameters out (EG3D's
Greg never reaches the SR, Dreg never reaches D's b4.out.bias): torch skips a parameter
whose .grad is None, its moments *and* its step count, so the bias corrections of later
steps differ per parameter. Also: a checkpoint saved with one count restores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax.train import schedules
from styleavatar_jax.train.state import adam, per_param_counts
from styleavatar_jax.train.step import _apply

LR, BETAS, EPS, K = 0.0025, (0.0, 0.99), 1e-8, 4  # EG3D's G optimizer, lazy interval 4


def _grads(seed: int, shapes: dict) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.parametrize("betas", [BETAS, (0.9, 0.999)])
def test_adam_with_skipped_parameters_equals_torch(betas):
    import torch  # the reference Adam (a test dependency)

    shapes = {"backbone": (3, 5), "superresolution": (4,)}
    params = _grads(0, shapes)
    # Phases: main (all), reg (SR untouched), main, main, reg, main.
    phases = [(), ("superresolution",), (), (), ("superresolution",), ()]

    lr, (b1, b2) = schedules.lazy_adam(LR, betas, K)
    tp = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
    opt = torch.optim.Adam(list(tp.values()), lr=lr, betas=(b1, b2), eps=EPS)
    tx = adam(LR, betas, EPS, K)
    ours, state = {k: jnp.asarray(v) for k, v in params.items()}, None
    state = tx.init(ours)
    for i, skip in enumerate(phases):
        g = _grads(10 + i, shapes)
        opt.zero_grad(set_to_none=True)
        for k, t in tp.items():
            if k not in skip:
                t.grad = torch.tensor(g[k])
        opt.step()
        grads = {k: jnp.asarray(v) if k not in skip else jnp.zeros(shapes[k]) for k, v in g.items()}
        ours, state = _apply(tx, ours, state, grads, tuple((s,) for s in skip))
        for k, t in tp.items():
            np.testing.assert_allclose(ours[k], t.detach().numpy(), rtol=1e-6, atol=1e-7,
                                       err_msg=f"{k} after phase {i}")  # fmt: skip
    sr_steps = int(opt.state[tp["superresolution"]]["step"])
    assert (sr_steps, int(state[0].count["superresolution"])) == (4, 4)
    assert int(state[0].count["backbone"]) == int(opt.state[tp["backbone"]]["step"]) == 6


def test_one_count_state_becomes_per_parameter():
    tx = adam(LR, BETAS, EPS, K)
    params = {"a": jnp.ones((2,)), "b": {"c": jnp.zeros((3,))}}
    state = tx.init(params)
    adam_state, rest = state[0], state[1:]
    old = (adam_state._replace(count=jnp.asarray(7, jnp.int32)), *rest)
    new = per_param_counts(old)
    assert jax.tree.structure(new[0].count) == jax.tree.structure(params)
    assert [int(c) for c in jax.tree.leaves(new[0].count)] == [7, 7]
    assert per_param_counts(new) is new
