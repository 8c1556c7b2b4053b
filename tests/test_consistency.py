"""Multi-view consistency: exact depth maps of a sphere and a plane reproject with ~0 error;
a known perturbation gives the known error. (The generator path runs in test_eval_cli.)"""

import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax import cameras, sampling
from styleavatar_jax.eval import consistency as cons
from styleavatar_jax.render.rays import pixel_rays

CAMERA = dict(radius=2.7, fov_degrees=18.837, pivot=(0.0, 0.0, 0.0))
RES = 64
FAR = 4.0  # background depth; max_depth 3.5 masks it


def sphere_depth(c, center=(0.0, 0.05, 0.0), radius=0.3):
    """Exact ray distance to a sphere for every pixel ray of labels c [B, 25] -> [B, r, r, 1]."""
    o, d = pixel_rays(*cameras.split_label(jnp.asarray(c)), RES)
    oc = o - jnp.asarray(center)
    b = jnp.sum(oc * d, -1)
    disc = b * b - (jnp.sum(oc * oc, -1) - radius**2)
    t = jnp.where(disc > 0, -b - jnp.sqrt(jnp.maximum(disc, 0)), FAR)
    return np.asarray(t).reshape(-1, RES, RES, 1)


def plane_depth(c, z0=0.1):
    """Ray distance to the plane z = z0 (facing the yaw-0 camera) -> [B, r, r, 1]."""
    o, d = pixel_rays(*cameras.split_label(jnp.asarray(c)), RES)
    return np.asarray((z0 - o[..., 2]) / d[..., 2]).reshape(-1, RES, RES, 1)


def labels(yaw_a, yaw_b, pitch=0.0):
    both = np.radians(np.array([yaw_a, yaw_b], np.float32))
    c = sampling.view_labels(both, np.full(2, np.radians(pitch), np.float32), CAMERA)
    return c[:1], c[1:]


def run(depth_a, c_a, depth_b, c_b, **kw):
    stats, maps = cons.reprojection_error(depth_a, c_a, depth_b, c_b, max_depth=3.5,
                                          return_maps=True, **kw)  # fmt: skip
    return cons.summarize(stats), maps


def test_project_inverts_pixel_rays():
    c = cameras.random_labels(0, 3)
    o, d = pixel_rays(*cameras.split_label(jnp.asarray(c)), 8)
    uv, z = cons.project(o + 1.7 * d, jnp.asarray(c))
    t = (np.arange(8) + 0.5) / 8
    grid = np.stack(np.meshgrid(t, t, indexing="xy"), -1).reshape(-1, 2)
    np.testing.assert_allclose(uv, np.broadcast_to(grid, uv.shape), atol=2e-6)
    assert np.all(np.asarray(z) > 0)


def test_same_camera_is_exact():
    c_a, _ = labels(30.0, 0.0)
    depth = sphere_depth(c_a)
    summary, (err, valid) = run(depth, c_a, depth, c_a)
    assert summary["error"] < 1e-6
    fg = depth[0, ..., 0] < 3.5
    # every foreground pixel but those next to the silhouette (depth edge) is valid
    assert 0.9 < summary["valid_fraction"] <= 1.0 and fg.sum() > 800
    assert not np.any(np.asarray(valid[0]) & ~fg)


@pytest.mark.parametrize("delta", [15.0, 30.0])
def test_sphere_from_two_cameras_and_known_perturbation(delta):
    c_a, c_b = labels(10.0, 10.0 + delta, pitch=5.0)
    da, db = sphere_depth(c_a), sphere_depth(c_b)
    exact, (_, valid) = run(da, c_a, db, c_b)
    # bilinear interpolation of a curved depth map: second-order, ~1e-4 scene units
    assert exact["error"] < 5e-4
    # the part of A's visible hemisphere that B also sees (cos of the angle, roughly)
    assert 0.7 < exact["valid_fraction"] < 1.0
    # B's surface pushed back by δ: every valid pixel is off by δ (X now in front of it)
    delta_t = 0.05
    moved, _ = run(da, c_a, np.where(db < 3.5, db + delta_t, db), c_b)
    assert moved["error"] == pytest.approx(delta_t, abs=5e-4)
    assert moved["valid_fraction"] == pytest.approx(exact["valid_fraction"], abs=0.02)
    # pulled forward by more than the tolerance: X is hidden behind it, nothing counts
    hidden, _ = run(da, c_a, np.where(db < 3.5, db - 0.1, db), c_b)
    assert hidden["valid_fraction"] < 0.02


def test_plane_and_mismatched_geometry():
    c_a, c_b = labels(0.0, 20.0)
    summary, _ = run(plane_depth(c_a), c_a, plane_depth(c_b), c_b)
    assert summary["error"] < 1e-4 and summary["valid_fraction"] > 0.8
    # B sees a plane 0.03 further away: along B's oblique rays the gap is 0.03 / cos(angle)
    far = plane_depth(c_b, z0=0.07)
    summary2, (err, valid) = run(plane_depth(c_a), c_a, far, c_b)
    _, dirs = pixel_rays(*cameras.split_label(jnp.asarray(c_b)), RES)
    expected = 0.03 / np.abs(np.asarray(dirs)[0, :, 2])  # ray distance between the planes
    # mean over the valid pixels, each the gap along B's ray through the point
    assert summary2["error"] == pytest.approx(float(expected.mean()), rel=2e-2)
