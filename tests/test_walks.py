"""Latent walks: slerp/lerp identities, the loop schedule, sweeps and walk cameras."""

import numpy as np
import pytest

from styleavatar_jax.export import walks


def _rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_lerp_endpoints_and_midpoint():
    a, b = _rand(0, 5, 7), _rand(1, 5, 7)
    np.testing.assert_array_equal(walks.lerp(a, b, 0.0), a)
    np.testing.assert_allclose(walks.lerp(a, b, 1.0), b, atol=1e-6)
    np.testing.assert_allclose(walks.lerp(a, b, 0.5), (a + b) / 2, atol=1e-6)
    t = np.array([0.0, 0.25, 0.5, 0.75, 1.0])  # one t per row
    np.testing.assert_allclose(walks.lerp(a, b, t)[1], 0.75 * a[1] + 0.25 * b[1], atol=1e-6)


def test_slerp_endpoints_norm_and_midpoint():
    a, b = _rand(2, 512), _rand(3, 512)
    np.testing.assert_allclose(walks.slerp(a, b, 0.0), a, atol=1e-5)
    np.testing.assert_allclose(walks.slerp(a, b, 1.0), b, atol=1e-5)
    ua, ub = a / np.linalg.norm(a), b / np.linalg.norm(b)
    t = np.linspace(0, 1, 11)
    path = walks.slerp(np.broadcast_to(ua, (11, 512)), np.broadcast_to(ub, (11, 512)), t)
    np.testing.assert_allclose(np.linalg.norm(path, axis=-1), 1.0, atol=1e-6)
    # Midpoint of unit vectors: the normalised sum (bisects the angle).
    mid = (ua + ub) / np.linalg.norm(ua + ub)
    np.testing.assert_allclose(path[5], mid, atol=1e-6)
    # Equal angular steps: the angle between neighbours is constant (= Ω/10).
    cos = np.sum(path[1:] * path[:-1], -1)
    omega = np.arccos(np.dot(ua, ub))
    np.testing.assert_allclose(np.arccos(np.clip(cos, -1, 1)), omega / 10, atol=1e-5)


def test_slerp_parallel_falls_back_to_lerp():
    a = _rand(4, 16)
    np.testing.assert_allclose(walks.slerp(a, 2 * a, 0.5), 1.5 * a, atol=1e-5)


def test_walk_schedule_is_a_loop():
    i, j, t = walks.walk_schedule(3, 4)
    assert len(i) == 12
    np.testing.assert_array_equal(i, [0] * 4 + [1] * 4 + [2] * 4)
    np.testing.assert_array_equal(j, [1] * 4 + [2] * 4 + [0] * 4)
    np.testing.assert_allclose(t[:4], [0, 0.25, 0.5, 0.75])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        walks.walk_schedule(1, 4)


def test_z_and_w_walks_hit_the_keyframes():
    z = _rand(5, 3, 8)
    path = walks.z_walk(z, 5)
    np.testing.assert_allclose(path[[0, 5, 10]], z, atol=1e-5)
    ws = _rand(6, 3, 4, 8)
    wpath = walks.w_walk(ws, 2)
    np.testing.assert_allclose(wpath[[0, 2, 4]], ws, atol=1e-6)
    np.testing.assert_allclose(wpath[5], (ws[2] + ws[0]) / 2, atol=1e-6)  # loops back


def test_parse_sweep():
    np.testing.assert_allclose(walks.parse_sweep("0:1:5"), [0, 0.25, 0.5, 0.75, 1])
    for bad in ("0:1", "a:b:c", "0:1:1"):
        with pytest.raises(ValueError, match="--truncation-sweep"):
            walks.parse_sweep(bad)


def test_orbit_labels():
    camera = dict(radius=2.7, pivot=(0.0, 0.0, 0.2), fov_degrees=18.837)
    c = walks.orbit_labels(8, camera, yaw_deg=10.0, orbit_deg=30.0)
    origins = c[:, :16].reshape(-1, 4, 4)[:, :3, 3]
    yaw = np.degrees(np.arctan2(origins[:, 0], origins[:, 2]))
    np.testing.assert_allclose(yaw, 10 + 30 * np.sin(2 * np.pi * np.arange(8) / 8), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(origins, axis=1), 2.7, atol=1e-5)
