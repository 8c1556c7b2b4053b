"""The sphere tracer against analytic shapes, the mannequin's identities, and its keypoints."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax import cameras
from styleavatar_jax.heads import head_render, keypoints, mannequin, sdf
from styleavatar_jax.render.rays import box_ray_limits, pixel_rays

RES = 48


def labels(yaw_deg, pitch_deg, pivot=(0.0, 0.0, 0.0)):
    yaw, pitch = np.deg2rad(np.asarray(yaw_deg, float)), np.deg2rad(np.asarray(pitch_deg, float))
    pose = cameras.pose_from_angles(yaw, pitch, 2.7, pivot)
    return cameras.make_label(pose, cameras.fov_to_intrinsics(18.837))


def rays(c, res):
    m, k = cameras.split_label(c)
    o, d = pixel_rays(m, k, res)
    return np.asarray(o), np.asarray(d)


C_ODD = labels([0.0, 37.0, 135.0, -100.0], [0.0, 20.0, -25.0, 60.0], pivot=(0.02, -0.03, 0.05))


def test_sphere_depth_mask_and_normals_are_analytic():
    radius = 0.3
    out = head_render.trace_depth(
        partial(sdf.sphere, center=jnp.zeros(3), radius=radius), C_ODD, resolution=RES, bound=0.7
    )
    o, d = rays(C_ODD, RES)
    b = np.sum(o * d, -1)
    closest = np.sqrt(np.maximum(np.sum(o * o, -1) - b * b, 0.0))  # ray's distance to centre
    hit = closest < radius
    t0 = -b - np.sqrt(np.maximum(radius**2 - closest**2, 0.0))
    point = o + t0[..., None] * d
    normal = point / radius
    cos = -np.sum(normal * d, -1)
    depth, mask = (np.asarray(out[k]).reshape(4, -1) for k in ("depth", "mask"))
    assert hit.sum() > 1000
    # Masks differ only on rays that pass within 1e-3 (a tenth of a pixel) of the surface.
    assert np.all(np.abs(closest - radius)[mask != hit] < 1e-3)
    steady = hit & (cos > 0.2)  # not grazing
    assert np.abs(depth - t0)[steady].max() < 1e-4
    assert np.all(np.isinf(depth[~mask]))
    normals = np.asarray(out["normal"]).reshape(4, -1, 3)
    assert np.abs(normals - normal)[steady].max() < 1e-3


def test_box_depth_and_mask_are_analytic():
    half = 0.25
    out = head_render.trace_depth(
        partial(sdf.box, center=jnp.zeros(3), half=jnp.full(3, half)),
        C_ODD,
        resolution=RES,
        bound=0.7,
    )
    o, d = rays(C_ODD, RES)
    start, _ = box_ray_limits(jnp.asarray(o), jnp.asarray(d), 2 * half)  # EG3D's slab test
    start = np.asarray(start)[..., 0]
    hit = start > 0
    point = o + start[..., None] * d
    # Distance of the entry point to the nearest box edge (the second-largest |coordinate|).
    edge = half - np.sort(np.abs(point), axis=-1)[..., 1]
    depth, mask = (np.asarray(out[k]).reshape(4, -1) for k in ("depth", "mask"))
    assert hit.sum() > 1000
    assert np.mean(mask != hit) < 0.003  # silhouette pixels only
    inner = hit & (edge > 0.01)
    assert np.all(mask[inner])
    assert np.abs(depth - start)[inner].max() < 1e-4


def test_identities_are_deterministic_and_diverse():
    a = mannequin.sample_identities(0, np.arange(64))
    b = mannequin.sample_identities(0, np.arange(64))
    assert all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    assert not np.array_equal(a.skull[0], a.skull[1])
    # Every option occurs in 64 identities: bald and haired, glasses, hats, buns, fringes.
    assert 0 < np.sum(a.hair[:, 0] == 0) < 32
    assert 0 < np.sum(a.glasses) < 48 and 0 < np.sum(a.hat) < 48
    assert 0 < np.sum(a.hair[:, 5]) and 0 < np.sum(a.hair[:, 4] > 0)
    assert np.std(a.skin_rgb, axis=0).min() > 0.05 and np.std(a.hair_rgb, axis=0).min() > 0.05
    other = mannequin.sample_identities(1, np.arange(1))
    assert not np.array_equal(other.skull[0], a.skull[0])


@pytest.fixture(scope="module")
def views():
    """One identity with glasses and hair at yaws around the head, pitch 0 and ±30°."""
    yaw = np.array([0, 30, -45, 60, -90, 90, 120, -120, 150, 180, 135, -150], float)
    pitch = np.array([0, 30, -30, 0, 0, 10, 0, -30, 30, 0, 0, 0], float)
    c = labels(yaw, pitch)
    batch = mannequin.sample_identities(0, np.full(len(yaw), 6))
    out = head_render.render(batch, c, resolution=RES)
    kp = keypoints.mannequin_keypoints(batch)
    vis = keypoints.visible_keypoints(kp["body"], kp["face"], kp["face_normal"], c, out["depth"])
    return yaw, out, kp, vis


def _parts_near(out, b, uv):
    """Names of the parts in the 3×3 pixels around uv (a keypoint on a silhouette may
    land a pixel beside its feature at this resolution)."""
    res = out["part"].shape[-1]
    col, row = (np.clip(np.floor(np.asarray(uv) * res), 1, res - 2)).astype(int)
    ids = np.asarray(out["part"][b, row - 1 : row + 2, col - 1 : col + 2]).ravel()
    return {mannequin.PARTS[i] for i in ids if i >= 0}


def test_render_outputs(views):
    yaw, out, _, _ = views
    assert out["rgb"].shape == (len(yaw), RES, RES, 3) and out["part"].shape == (len(yaw), RES, RES)
    rgb, mask = np.asarray(out["rgb"]), np.asarray(out["mask"])
    assert 0.15 < mask.mean() < 0.8 and rgb.min() >= 0 and rgb.max() <= 1
    assert np.allclose(rgb[~mask], mannequin.BACKGROUND)
    depth = np.asarray(out["depth"])
    assert np.all((depth[mask] > 2.0) & (depth[mask] < 3.4))
    # Face features exist only at the front: none of them shows from behind.
    parts = np.asarray(out["part"])
    front = [mannequin.PART_ID[p] for p in ("nose", "lips", "eye")]
    assert np.isin(parts[0], front).sum() > 20
    assert not np.isin(parts[yaw == 180], front).any()


def test_keypoints_lie_on_the_features_they_name(views):
    yaw, out, _, (body_uv, body_vis, face_uv, face_vis) = views
    frontal = np.abs(yaw) <= 60
    for b in np.flatnonzero(frontal):
        assert face_vis[b, keypoints.NOSE_TIP], yaw[b]
        assert "nose" in _parts_near(out, b, face_uv[b, keypoints.NOSE_TIP]), yaw[b]
        assert body_vis[b, keypoints.NOSE]
        np.testing.assert_allclose(body_uv[b, keypoints.NOSE], face_uv[b, keypoints.NOSE_TIP])
        for pupil in (keypoints.R_PUPIL, keypoints.L_PUPIL):
            if face_vis[b, pupil]:
                assert _parts_near(out, b, face_uv[b, pupil]) & {"eye", "glasses"}, yaw[b]
    assert face_vis[0, [keypoints.R_PUPIL, keypoints.L_PUPIL]].all()
    assert face_vis[0].sum() >= 50  # a frontal face shows nearly all 70 points
    # The person's right eye is on the image's left in a frontal view.
    assert face_uv[0, keypoints.R_PUPIL, 0] < 0.5 < face_uv[0, keypoints.L_PUPIL, 0]
    # Mouth landmarks lie on the lips.
    for i in (61, 62, 63, 65, 66, 67):  # the inner lip line
        assert "lips" in _parts_near(out, 0, face_uv[0, i]), i


def test_no_face_points_from_behind_and_ears_from_the_side(views):
    yaw, _, _, (_, body_vis, _, face_vis) = views
    behind = np.abs(yaw) >= 120
    assert behind.sum() == 6 and not face_vis[behind].any()
    assert not body_vis[behind][:, list(keypoints.FACE_BODY)].any()
    side = np.abs(yaw) == 90
    left_side = yaw == 90  # camera at +x sees the left ear
    assert (
        body_vis[left_side, keypoints.L_EAR].all()
        and not body_vis[left_side, keypoints.R_EAR].any()
    )
    assert face_vis[side].sum(-1).max() < 40  # half the face at most
    absent = [i for i, present in enumerate(keypoints.BODY_PRESENT) if not present]
    assert not body_vis[:, absent].any()
