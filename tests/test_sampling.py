"""JIT batch sampling: sharded over 8 fake CPU devices equals one device; the CLI verb."""

import jax
import numpy as np
import pytest

from styleavatar_jax import cameras, sampling, typed_config
from styleavatar_jax.cli import main
from styleavatar_jax.models.triplane import TriPlaneGenerator, init_variables
from styleavatar_jax.typed_config import load_config_file

NEURAL_RES = 16  # small renders keep this CPU test fast; SR still upsamples to 128


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config_file("configs/eg3d_ffhq512.py:tiny")
    G = TriPlaneGenerator(typed_config.generator_config(cfg.model.generator))
    return cfg, G, init_variables(G, jax.random.key(0))


def _run(tiny, num_devices, seeds, batch):
    cfg, G, variables = tiny
    yaw, pitch = cameras.parse_views("yaw=0,90;pitch=10")
    views = sampling.view_labels(yaw, pitch, cfg.camera.to_dict())
    settings = sampling.SampleSettings(neural_res=NEURAL_RES, truncation_psi=0.7)
    mesh = sampling.make_mesh(num_devices)
    return list(
        sampling.sample_batches(
            G, variables, seeds, views, cfg.camera.to_dict(), settings, batch=batch, mesh=mesh
        )
    )


def test_sharded_equals_single_device(tiny):
    assert jax.local_device_count() == 8, "conftest sets 8 host devices"
    seeds = list(range(8))
    [(s1, img1, depth1, ws1)] = _run(tiny, 1, seeds, 8)
    [(s8, img8, depth8, ws8)] = _run(tiny, 8, seeds, 8)
    assert s1 == s8 == seeds
    assert img1.shape == (8, 2, 128, 128, 3) and depth1.shape == (8, 2, NEURAL_RES, NEURAL_RES, 1)
    np.testing.assert_allclose(ws8, ws1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(img8, img1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(depth8, depth1, rtol=1e-5, atol=1e-5)
    assert np.abs(img1[0] - img1[1]).max() > 1e-3  # different seeds, different avatars


def test_images_do_not_depend_on_batching(tiny):
    """Uniforms are drawn per seed and view, so a seed renders alike in any batch."""
    whole = _run(tiny, 1, [3, 4], 2)[0][1]
    alone = _run(tiny, 1, [4], 2)[0][1]  # padded batch [4, 4]
    np.testing.assert_allclose(alone[0], whole[1], atol=2e-5)


def test_batch_must_divide_over_devices(tiny):
    with pytest.raises(ValueError, match="--batch=4 is not divisible by the 8 devices"):
        _run(tiny, 8, [0], 4)


@pytest.mark.parametrize("spec", ["", "3-1", "a", "1,,2", "-2"])
def test_bad_seeds_are_named(spec):
    with pytest.raises(ValueError, match="--seeds="):
        sampling.parse_seeds(spec)


def test_seeds_give_eg3d_latents():
    z = sampling.z_from_seeds([0, 7], 64)
    np.testing.assert_array_equal(z[1], np.random.RandomState(7).randn(64).astype(np.float32))
    assert sampling.parse_seeds("0-2,9") == [0, 1, 2, 9]


def test_sample_cli_writes_grid_and_ws(tmp_path):
    from PIL import Image

    out = tmp_path / "samples"
    rc = main(
        [
            "sample",
            "--config",
            "configs/eg3d_ffhq512.py:tiny",
            "--seeds",
            "0-2",
            "--batch",
            "8",
            "--views",
            "yaw=-180:180:4",
            "--neural-res",
            str(NEURAL_RES),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    [png] = sorted(out.glob("grid_*.png"))
    assert Image.open(png).size == (4 * 128, 3 * 128)  # columns = views, rows = seeds
    data = np.load(out / "ws.npz")
    assert data["seeds"].tolist() == [0, 1, 2] and data["ws"].shape == (3, 14, 512)
    np.testing.assert_allclose(np.rad2deg(data["yaw"]), [-180, -90, 0, 90])
    assert not list(out.glob(".*"))  # no temporary files left


def test_sample_cli_rejects_unknown_config_key(tmp_path, capsys):
    rc = main(
        [
            "sample",
            "--config",
            "configs/eg3d_ffhq512.py:tiny",
            "--out",
            str(tmp_path),
            "--config.model.generator.no_such_field=3",
        ]
    )
    assert rc == 2
    assert (
        "--config.model.generator.no_such_field: unknown config key 'no_such_field'"
        in capsys.readouterr().err
    )
