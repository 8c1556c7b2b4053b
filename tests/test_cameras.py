"""Cameras: EG3D label parity (fixture), look-at maths, angles, mirroring, view specs.

Batches keep a few shapes (4 and 64) so each jitted function compiles about once.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax import cameras

FIXTURE = Path(__file__).parent / "fixtures" / "eg3d_tiny_io.npz"
# The fixture's cameras: LookAtPoseSampler(π/2 + yaw, π/2 + p, pivot (0, 0, 0.2), r 2.7).
FIXTURE_YAW = np.deg2rad([0.0, 30.0, -55.0, 180.0])
FIXTURE_P = np.deg2rad([0.0, -10.0, 12.0, 5.0])  # EG3D's vertical offset, not pitch
ORIGIN = (0.0, 0.0, 0.0)
N = 64


def pose(yaw, pitch, center=ORIGIN, pivot=cameras.PIVOT):
    return np.asarray(cameras.pose_from_angles(yaw, pitch, 2.7, pivot, center))


def angles(m, center=ORIGIN):
    return tuple(np.asarray(a) for a in cameras.angles_from_pose(m, center))


def wrap(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def random_views(seed, poles=True):
    """N yaws over 360° and pitches in ±89°, with ±90° in the last 8 when `poles`."""
    rng = np.random.default_rng(seed)
    yaw = np.linspace(-np.pi, np.pi, N)
    pitch = rng.uniform(-1, 1, N) * np.deg2rad(89)
    if poles:
        pitch[-8:] = np.pi / 2 * np.array([1, -1] * 4)
    return yaw, pitch


def eg3d_cam2world(forward, origin):
    """float64 restatement of EG3D create_cam2world_matrix, for comparison."""
    f = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    right = -np.cross(np.broadcast_to([0.0, 1.0, 0.0], f.shape), f)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(f, right)
    down /= np.linalg.norm(down, axis=-1, keepdims=True)
    m = np.tile(np.eye(4), f.shape[:-1] + (1, 1))
    m[..., :3, :3] = np.stack([right, down, f], -1)
    m[..., :3, 3] = origin
    return m


def test_fixture_labels():
    c = np.load(FIXTURE)["c"]
    intrinsics = np.asarray(cameras.fov_to_intrinsics(18.837))
    np.testing.assert_allclose(intrinsics, c[0, 16:].reshape(3, 3), atol=1e-6)
    pitch = np.asarray(cameras.eg3d_vertical_to_pitch(np.pi / 2 + FIXTURE_P))
    label = cameras.make_label(pose(FIXTURE_YAW, pitch), intrinsics)
    np.testing.assert_allclose(label, c, atol=1e-6, rtol=0)
    sampled = cameras.eg3d_look_at_sample(
        jax.random.key(0), np.pi / 2 + FIXTURE_YAW, np.pi / 2 + FIXTURE_P, cameras.PIVOT, 2.7,
        0.0, 0.0, 1,
    )  # fmt: skip
    np.testing.assert_allclose(cameras.make_label(sampled, intrinsics), c, atol=1e-6, rtol=0)
    yaw, got_pitch, radius = angles(cameras.split_label(c)[0])
    np.testing.assert_allclose(wrap(yaw - FIXTURE_YAW), 0, atol=1e-6)
    np.testing.assert_allclose(got_pitch, pitch, atol=1e-6)
    np.testing.assert_allclose(radius, 2.7, atol=1e-6)
    # EG3D's vertical offset p > 0 is a camera below the face (world is y-up).
    assert np.all(np.sign(c[1:, 7]) == -np.sign(FIXTURE_P[1:]))


def test_frontal_camera_axes():
    m = pose(np.zeros(4), np.array([0.0, 0.3, -0.3, 0.0]), pivot=ORIGIN)
    # x right = world +x, y down = world −y (world is y-up), z forward = world −z.
    np.testing.assert_allclose(m[0, :3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-7)
    np.testing.assert_allclose(m[0, :3, 3], [0, 0, 2.7], atol=1e-7)
    assert m[1, 1, 3] > 0 and m[1, 1, 2] < 0  # pitch > 0: above, looking down
    assert m[2, 1, 3] < 0 and m[2, 1, 2] > 0


def test_look_at_matches_eg3d_and_handles_vertical():
    rng = np.random.default_rng(0)
    origin, target = rng.normal(size=(N, 3)) * 3, rng.normal(size=(N, 3)) * 0.3
    origin[:2] = [[0.0, 2.7, 0.0], [1.0, -3.0, 0.0]]  # straight above / below the target
    target[:2] = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    m = np.asarray(cameras.look_at(origin, target))
    want = eg3d_cam2world(target[2:] - origin[2:], origin[2:])
    np.testing.assert_allclose(m[2:], want, atol=1e-6)
    assert np.isfinite(m).all()  # EG3D: NaN; here the limit of an orbit about the origin
    np.testing.assert_allclose(m[0, :3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-7)
    np.testing.assert_allclose(m[1, :3, 0], [0, 0, -1], atol=1e-7)  # origin azimuth 90°


@pytest.mark.parametrize("center", [ORIGIN, cameras.PIVOT])
def test_rotation_and_axes(center):
    m = pose(*random_views(1), center=center)
    assert np.isfinite(m).all()
    r = m[:, :3, :3]
    np.testing.assert_allclose(
        r.transpose(0, 2, 1) @ r, np.broadcast_to(np.eye(3), r.shape), atol=2e-6
    )
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=2e-6)
    to_pivot = np.asarray(cameras.PIVOT) - m[:, :3, 3]
    to_pivot /= np.linalg.norm(to_pivot, axis=-1, keepdims=True)
    np.testing.assert_allclose(r[:, :, 2], to_pivot, atol=2e-6)  # z looks at the pivot
    np.testing.assert_allclose(r[:, 1, 0], 0.0, atol=1e-7)  # no roll: x is horizontal
    # y (image down) has world-y component −|horizontal part of z|: never points up.
    np.testing.assert_allclose(r[:, 1, 1], -np.hypot(r[:, 0, 2], r[:, 2, 2]), atol=2e-6)


def test_pole_is_continuous():
    yaw = np.tile(np.linspace(-np.pi, np.pi, N // 2), 2)
    sign = np.repeat([1.0, -1.0], N // 2)
    at = pose(yaw, sign * np.pi / 2, center=cameras.PIVOT)
    near = pose(yaw, sign * (np.pi / 2 - 1e-3), center=cameras.PIVOT)
    assert np.isfinite(at).all()
    np.testing.assert_allclose(at, near, atol=4e-3)
    np.testing.assert_allclose(at[:, 0, 0], np.cos(yaw), atol=1e-6)  # right vector follows yaw


@pytest.mark.parametrize("center", [ORIGIN, cameras.PIVOT])
def test_angles_round_trip(center):
    yaw, pitch = random_views(2)
    y, p, r = angles(pose(yaw, pitch, center=center), center)
    np.testing.assert_allclose(p, pitch, atol=2e-6)  # also right at ±90°
    np.testing.assert_allclose(r, 2.7, atol=2e-6)
    off_pole = slice(0, -8) if center == ORIGIN else slice(None)  # yaw survives the pole
    np.testing.assert_allclose(wrap(y - yaw)[off_pole], 0, atol=2e-6)  # when orbiting the pivot


def test_mirror():
    yaw, pitch = random_views(3)
    m = pose(yaw, pitch)
    mirrored = np.asarray(cameras.mirror_pose(m))
    want = m.copy()  # EG3D mirror_dataset.py flip_yaw, entry by entry
    for i, j in [(0, 1), (0, 2), (1, 0), (2, 0), (0, 3)]:
        want[:, i, j] *= -1
    np.testing.assert_array_equal(mirrored, want)
    np.testing.assert_array_equal(cameras.mirror_pose(mirrored), m)
    np.testing.assert_allclose(mirrored, pose(-yaw, pitch), atol=1e-6)  # pivot x = 0
    y, p, _ = angles(mirrored)
    np.testing.assert_allclose(wrap(y + yaw)[:-8], 0, atol=2e-6)
    np.testing.assert_allclose(p, pitch, atol=2e-6)
    c = np.asarray(cameras.make_label(m, cameras.fov_to_intrinsics()))
    mc = np.asarray(cameras.mirror_label(c))
    np.testing.assert_array_equal(mc[:, 16:], c[:, 16:])  # EG3D keeps intrinsics
    np.testing.assert_array_equal(cameras.mirror_label(mc), c)


def test_label_split_and_broadcast():
    m = pose(*random_views(4)).reshape(8, 8, 4, 4)
    k = np.asarray(cameras.fov_to_intrinsics(18.837))
    c = np.asarray(cameras.make_label(m, k))
    assert c.shape == (8, 8, 25) and c.dtype == np.float32
    m2, k2 = cameras.split_label(c)
    np.testing.assert_array_equal(m2, m)
    np.testing.assert_array_equal(k2[1, 3], k)


def test_eg3d_samplers():
    key = jax.random.key(3)
    # Shapes as in test_fixture_labels, so no recompilation.
    hm, vm = np.pi / 2 + FIXTURE_YAW, np.array([-1.0, 1e-5, np.pi - 1e-5, 4.0])
    m = np.asarray(cameras.eg3d_look_at_sample(key, hm, vm, cameras.PIVOT, 2.7, 0.0, 0.0, 1))
    _, p, r = angles(m)
    # The clamp of v keeps EG3D short of the pole: |pitch| ≤ arcsin(1 − 2e-5/π) ≈ 89.8°.
    np.testing.assert_allclose(np.rad2deg(p), [89.7956] * 2 + [-89.7956] * 2, atol=3e-3)
    np.testing.assert_allclose(r, 2.7, atol=1e-6)
    noisy = np.asarray(cameras.eg3d_look_at_sample(key, hm, hm, cameras.PIVOT, 2.7, 0.3, 0.2, 1))
    assert np.isfinite(noisy).all() and not np.allclose(noisy[:, :3, 3], m[:, :3, 3], atol=1e-3)
    g = np.asarray(cameras.eg3d_gaussian_sample(key, hm, hm, 0.1, 0.1, radius=2.0))
    o = g[:, :3, 3]
    np.testing.assert_allclose(
        g[:, :3, 2], -o / np.linalg.norm(o, axis=-1, keepdims=True), atol=1e-6
    )
    pitch = np.array([-1.0, 0.0, 0.5, 1.5])
    v = cameras.pitch_to_eg3d_vertical(pitch)
    np.testing.assert_allclose(cameras.eg3d_vertical_to_pitch(v), pitch, atol=2e-6)


def test_sample_uniform_views():
    m, yaw, pitch = (np.asarray(x) for x in cameras.sample_uniform_views(jax.random.key(4), N))
    assert m.shape == (N, 4, 4) and yaw.shape == pitch.shape == (N,)
    assert yaw.min() >= -np.pi and yaw.max() < np.pi and yaw.max() - yaw.min() > 5
    assert np.abs(pitch).max() <= np.pi / 6
    y, p, _ = angles(m)
    np.testing.assert_allclose(wrap(y - yaw), 0, atol=2e-6)
    np.testing.assert_allclose(p, pitch, atol=2e-6)


def test_parse_views():
    yaw, pitch = cameras.parse_views("yaw=-180:180:8")
    np.testing.assert_allclose(np.rad2deg(yaw), np.arange(-180, 180, 45))
    np.testing.assert_array_equal(pitch, np.zeros(8))
    yaw, _ = cameras.parse_views("yaw=0,30,-55,180")
    np.testing.assert_allclose(yaw, np.deg2rad([0, 30, -55, 180]))
    yaw, pitch = cameras.parse_views("yaw=-30:30:3; pitch=-10,10")
    np.testing.assert_allclose(np.rad2deg(yaw), [-30, 0, 30, -30, 0, 30], atol=1e-12)
    np.testing.assert_allclose(np.rad2deg(pitch), [-10] * 3 + [10] * 3, atol=1e-12)
    for bad in ["yaw=1:2", "roll=3", "yaw=a", "pitch=100", "yaw=0;yaw=1", "yaw=0:1:0", ""]:
        with pytest.raises(ValueError, match=r"--views=.*expected 'yaw=A:B:N'"):
            cameras.parse_views(bad)


def test_jit_and_vmap():
    yaw, pitch = random_views(5)

    @jax.jit
    @jax.vmap
    def mirrored_angles(yaw, pitch):  # per-view functions compose under vmap and jit
        c = cameras.make_label(cameras.pose_from_angles(yaw, pitch), cameras.fov_to_intrinsics())
        return cameras.angles_from_pose(cameras.split_label(cameras.mirror_label(c))[0])

    y, p, _ = (np.asarray(a) for a in mirrored_angles(yaw, pitch))
    np.testing.assert_allclose(wrap(y + yaw)[:-8], 0, atol=2e-6)
    np.testing.assert_allclose(p, pitch, atol=2e-6)


@pytest.mark.parametrize("pivot", [(0.0, 0.0, 0.0), (0.0, 0.0, 0.2), (0.1, -0.05, 0.3)])
def test_look_at_point_recovers_the_pivot(pivot):
    rng = np.random.default_rng(0)
    yaw, pitch = rng.uniform(-np.pi, np.pi, 64), rng.uniform(-0.5, 0.5, 64)
    pose = cameras.pose_from_angles(jnp.asarray(yaw), jnp.asarray(pitch), 2.7, pivot)
    c = cameras.make_label(pose, cameras.fov_to_intrinsics())
    np.testing.assert_allclose(cameras.look_at_point(c), pivot, atol=1e-5)


def test_training_warns_when_the_config_pivot_is_not_the_datasets():
    from styleavatar_jax.train.loop import check_pivot

    yaw = jnp.linspace(-3.0, 3.0, 16)
    pose = cameras.pose_from_angles(yaw, jnp.zeros_like(yaw), 2.7, (0.0, 0.0, 0.0))
    c = np.asarray(cameras.make_label(pose, cameras.fov_to_intrinsics()))
    said = []
    check_pivot(c, {"pivot": (0.0, 0.0, 0.0)}, "data", said.append)
    assert said == []
    check_pivot(c, {"pivot": (0.0, 0.0, 0.2)}, "data", said.append)
    assert len(said) == 1 and "look at (0.00, 0.00, 0.00)" in said[0]
    assert "config.camera.pivot is (0.00, 0.00, 0.20)" in said[0]
