"""Generator-level behaviour: input checks, truncation, the w_avg EMA, noise modes."""

import dataclasses
import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax import typed_config
from styleavatar_jax.convert import eg3d
from styleavatar_jax.models.mapping import MappingNetwork
from styleavatar_jax.models.superres import SR_SPECS, SuperResolution
from styleavatar_jax.models.synthesis import NOISE_INPUTS, SynthesisNetwork, draw_noise
from styleavatar_jax.models.triplane import GeneratorConfig, TriPlaneGenerator, init_variables
from styleavatar_jax.typed_config import load_config_file

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def mapping():
    m = MappingNetwork(z_dim=8, c_dim=25, w_dim=16, num_ws=3, num_layers=2)
    v = m.init(jax.random.key(0), jnp.ones((2, 8)), jnp.ones((2, 25)))
    return m, v


@pytest.mark.parametrize(
    ("z_shape", "c_shape", "name"),
    [((2, 7), (2, 25), "z"), ((2, 8), (2, 24), "c"), ((8,), (2, 25), "z")],
)
def test_wrong_shapes_are_named(mapping, z_shape, c_shape, name):
    m, v = mapping
    with pytest.raises(ValueError, match=rf"^{name}: expected shape \[batch, "):
        m.apply(v, jnp.ones(z_shape), jnp.ones(c_shape))


def test_generator_checks_c(mapping):
    G = TriPlaneGenerator(
        typed_config.generator_config(
            load_config_file("configs/eg3d_ffhq512.py:tiny").model.generator
        )
    )
    with pytest.raises(ValueError, match=r"^c: expected shape \[batch, 25\]"):
        jax.eval_shape(
            lambda: G.init(jax.random.key(0), jnp.ones((1, 64)), jnp.ones((1, 16)), neural_res=8)
        )


def test_truncation_and_w_avg_ema(mapping):
    m, v = mapping
    z, c = jax.random.normal(jax.random.key(1), (4, 8)), jnp.ones((4, 25))
    ws, state = m.apply(v, z, c, update_emas=True, mutable=["buffers"])
    w_mean = np.asarray(ws[:, 0]).mean(0)
    np.testing.assert_allclose(
        state["buffers"]["w_avg"], (1 - 0.998) * w_mean, rtol=1e-5, atol=1e-7
    )
    v2 = {**v, **state}
    assert np.allclose(m.apply(v2, z, c, truncation_psi=0.0), np.asarray(state["buffers"]["w_avg"]))
    cut = m.apply(v2, z, c, truncation_psi=0.5, truncation_cutoff=2)
    np.testing.assert_allclose(cut[:, 2], ws[:, 2], atol=1e-6)  # beyond the cutoff: untouched
    expected = state["buffers"]["w_avg"] + 0.5 * (ws[:, 0] - state["buffers"]["w_avg"])
    np.testing.assert_allclose(cut[:, 0], expected, atol=1e-6)


def test_noise_modes():
    net = SynthesisNetwork(img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    ws = jax.random.normal(jax.random.key(0), (2, net.num_ws, 16))
    v = net.init({"params": jax.random.key(1), "noise": jax.random.key(2)}, ws)
    v["params"] = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.ones_like(x) if p[-1].key == "noise_strength" else x, v["params"]
    )
    run = lambda mode, k=0: net.apply(v, ws, noise_mode=mode, rngs={"noise": jax.random.key(k)})
    assert not np.allclose(run("random", 0), run("random", 1))
    np.testing.assert_array_equal(run("const", 0), run("const", 1))
    assert not np.allclose(run("const"), run("none"))
    with pytest.raises(ValueError, match="noise_mode='loud'"):
        run("loud")
    with pytest.raises(ValueError, match="noise_inputs"):
        run("given")


def test_given_noise_is_what_random_draws():
    """draw_noise(key) reproduces Flax's per-layer keys of noise_mode='random' exactly, so
    the train step's draws (made apart from the computation) kept their values."""
    G = TriPlaneGenerator(
        typed_config.generator_config(load_config_file("configs/tiny.py").model.generator)
    )
    v = init_variables(G, jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (2, G.cfg.z_dim))
    c = jnp.tile(jnp.concatenate([jnp.eye(4).ravel(), jnp.eye(3).ravel()]), (2, 1))
    ws = G.apply(v, z, c, method=G.mapping)
    key = jax.random.key(7)
    random = G.apply(v, ws, noise_mode="random", method=G.planes, rngs={"noise": key})
    noise = draw_noise(key, v["buffers"], 2, G.noise_layers(planes_only=True))
    assert len(jax.tree.leaves(noise)) == 5  # b4: 1 layer, b8 and b16: 2 each
    given = G.apply({**v, NOISE_INPUTS: noise}, ws, noise_mode="given", method=G.planes)
    np.testing.assert_array_equal(given, random)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"config.model.generator: unknown field\(s\) \['bogus'\]"):
        typed_config.generator_config({"bogus": 1})
    with pytest.raises(
        ValueError, match=r"config.model.generator.render: unknown field\(s\) \['near'\]"
    ):
        typed_config.generator_config({"render": {"near": 1.0}})
    with pytest.raises(
        ValueError, match="img_resolution=256 does not match SuperresolutionHybrid8XDC"
    ):
        dataclasses.replace(GeneratorConfig(), img_resolution=256)


def test_ffhq512_architecture_equals_eg3d():
    """Every tensor of EG3D's FFHQ-512 G and D (train.py --cfg=ffhq kwargs, shapes recorded
    from the official code in tests/fixtures/eg3d_ffhq512_shapes.json) has its place in our
    variables with the same shape, and vice versa. Shapes only: nothing is computed."""
    ref = json.loads((FIXTURES / "eg3d_ffhq512_shapes.json").read_text())
    cfg = load_config_file("configs/eg3d_ffhq512.py")
    g_cfg = typed_config.generator_config(cfg.model.generator)
    d_cfg = typed_config.discriminator_config(cfg.model.discriminator)
    _, g_tmpl, _, d_tmpl = eg3d.build_networks(g_cfg, d_cfg, 64)
    for name, tmpl in (("G", g_tmpl), ("D", d_tmpl)):
        theirs = {k: tuple(v) for k, v in ref[name].items() if not k.endswith("resample_filter")}
        ours = {}
        for path, leaf in flax.traverse_util.flatten_dict(tmpl).items():
            fake = np.zeros(_torch_shape(path[-1], leaf.shape), np.float32)
            assert eg3d.to_flax_layout(path[-1], fake).shape == leaf.shape
            ours[eg3d.torch_key(path[1:])] = fake.shape
        assert ours == theirs
    n_params = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(g_tmpl["params"]))
    assert n_params == ref["G_params"]


def _torch_shape(leaf, shape):
    """Our layout -> EG3D's: dense [in, out] -> [out, in], HWIO -> OIHW, HWC -> CHW."""
    if leaf == "kernel" and len(shape) == 2:
        return shape[::-1]
    if leaf == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if leaf == "const":
        return (shape[2], shape[0], shape[1])
    return shape


@pytest.mark.parametrize("kind", sorted(SR_SPECS))
def test_every_eg3d_superresolution_module_builds(kind):
    """Shapes only: input 64² (resized up to each module's input), output at its resolution."""
    spec = SR_SPECS[kind]
    sr = SuperResolution(kind=kind)
    feats = jnp.ones((2, 64, 64, 32))
    ws = jnp.ones((2, 14, 512))
    out, variables = jax.eval_shape(
        lambda f, w: sr.init_with_output(jax.random.key(0), f[..., :3], f, w), feats, ws
    )
    assert out.shape == (2, spec.img_resolution, spec.img_resolution, 3)
    channels = [variables["params"][f"block{i}"]["conv1"]["kernel"].shape[-1] for i in (0, 1)]
    assert channels == [b[0] for b in spec.blocks]
