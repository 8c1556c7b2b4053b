"""Video files (MP4 through imageio-ffmpeg, GIF) and the per-frame pictures: normals from the
density gradient on an analytic sphere, depth and normal shading."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax import sampling
from styleavatar_jax.export import frames, video
from styleavatar_jax.render.rays import pixel_rays

CAMERA = dict(radius=2.7, pivot=(0.0, 0.0, 0.0), fov_degrees=18.837)


def _moving_gradient(t=8, h=32, w=48):
    x = np.linspace(0, 255, w)
    base = np.stack([np.broadcast_to(x, (h, w)), np.broadcast_to(x[::-1], (h, w)),
                     np.full((h, w), 128.0)], -1)  # fmt: skip
    return np.stack([np.roll(base, 2 * i, axis=1) for i in range(t)]).astype(np.uint8)


def test_mp4_round_trip_and_no_temp_files(tmp_path):
    clip = _moving_gradient()
    path = video.write_video(tmp_path / "a.mp4", clip, fps=12)
    back = video.read_video(path)
    assert back.shape == clip.shape
    assert np.abs(back.astype(int) - clip).mean() < 3.0  # H.264 at quality 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_mp4_write_warns_nothing_about_fork(tmp_path):
    """ffmpeg starts through fork + exec: JAX's fork warning (once its threads run) is dropped
    while it starts, and the filter is not left on."""
    jnp.zeros(2).block_until_ready()  # JAX's threads are running
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        video.read_video(video.write_video(tmp_path / "a.mp4", _moving_gradient(2), fps=8))
    assert not [str(w.message) for w in caught if "fork" in str(w.message)]
    assert not any("fork" in str(f[1]) for f in warnings.filters)  # the filter is not left on


def test_mp4_odd_size_is_padded_to_even(tmp_path):
    clip = _moving_gradient(4, 31, 45)
    back = video.read_video(video.write_mp4(tmp_path / "odd.mp4", clip, fps=8))
    assert back.shape == (4, 32, 46, 3)
    assert np.abs(back[:, :31, :45].astype(int) - clip).mean() < 3.0


def test_gif_round_trip(tmp_path):
    clip = np.zeros((3, 8, 8, 3), np.uint8)
    clip[1, :, :4] = (255, 0, 0)
    clip[2, 4:] = (0, 0, 255)
    back = video.read_video(video.write_gif(tmp_path / "a.gif", clip, fps=5))
    np.testing.assert_array_equal(back, clip)  # few colours: the palette is exact


def test_resolve_video_path_and_companions(tmp_path):
    assert video.resolve_video_path(tmp_path / "a.mp4", True) == (tmp_path / "a.mp4", None)
    path, note = video.resolve_video_path(tmp_path / "a.mp4", False)
    assert path == tmp_path / "a.gif" and "imageio-ffmpeg is not installed" in note
    assert video.resolve_video_path(tmp_path / "a.gif", False) == (tmp_path / "a.gif", None)
    with pytest.raises(ValueError, match="--out=.*a.avi"):
        video.resolve_video_path(tmp_path / "a.avi", True)
    assert video.companion_path("d/a.mp4", "depth").as_posix() == "d/a_depth.mp4"
    assert video.companion_path("d/a.mp4", "rgb").as_posix() == "d/a.mp4"
    with pytest.raises(ValueError, match="uint8"):
        video.write_video(tmp_path / "b.gif", np.zeros((2, 4, 4, 3), np.float32))


def _sphere_sigma(radius):
    return lambda p: 10.0 * (radius - jnp.linalg.norm(p, axis=-1, keepdims=True))


def test_surface_normals_of_a_sphere():
    p = jnp.asarray(np.random.default_rng(0).standard_normal((50, 3)), jnp.float32)
    n = frames.surface_normals(_sphere_sigma(0.3), p)
    np.testing.assert_allclose(n, p / np.linalg.norm(p, axis=-1, keepdims=True), atol=1e-6)


def test_normal_map_of_a_sphere_seen_by_a_camera():
    """Exact ray-sphere depths -> gradient normals in camera space: the analytic normal,
    and (0, 0, 1) (colour 128, 128, 255) at the centre of a frontal view."""
    r, res = 0.4, 16
    c = jnp.asarray(sampling.view_labels(np.radians([0.0, 70.0]), np.radians([0.0, 20.0]),
                                         CAMERA))  # fmt: skip
    cam2world = c[:, :16].reshape(-1, 4, 4)
    o, d = pixel_rays(cam2world, c[:, 16:].reshape(-1, 3, 3), res)
    b = jnp.sum(o * d, -1, keepdims=True)
    disc = b**2 - (jnp.sum(o * o, -1, keepdims=True) - r**2)
    hit = disc[..., 0] > 0
    t = -b - jnp.sqrt(jnp.maximum(disc, 0))
    points = o + t * d
    n = frames.camera_normals(frames.surface_normals(_sphere_sigma(r), points), cam2world)
    expect = frames.camera_normals(points / r, cam2world)
    np.testing.assert_allclose(np.asarray(n)[hit], np.asarray(expect)[hit], atol=1e-5)
    assert int(hit[0].sum()) > 40
    centre = np.asarray(n[0]).reshape(res, res, 3)[res // 2 - 1 : res // 2 + 1,
                                                   res // 2 - 1 : res // 2 + 1]  # fmt: skip
    np.testing.assert_allclose(centre[..., 2], 1.0, atol=0.01)
    # Up is +y in the picture: the top rows of the frontal view have n_y > 0.
    top = np.asarray(n[0]).reshape(res, res, 3)[:, res // 2]
    rows = np.flatnonzero(np.asarray(hit[0]).reshape(res, res)[:, res // 2])
    assert top[rows[0], 1] > 0.5 and top[rows[-1], 1] < -0.5


def test_depth_and_normal_pictures():
    depth = np.array([2.0, 2.5, 3.0, 9.0]).reshape(1, 2, 2, 1)
    alpha = np.array([1.0, 1.0, 1.0, 0.0]).reshape(1, 2, 2, 1)
    pic = frames.depth_pictures(depth, alpha)
    assert pic.shape == (1, 2, 2, 3)
    g = pic[0, :, :, 0].ravel()
    assert g[0] > g[1] > g[2] and g[3] == -1.0  # near bright, background black
    n = np.zeros((1, 2, 2, 3))
    n[..., 2] = 1.0
    out = frames.normal_pictures(n, alpha)
    np.testing.assert_allclose(out[0, 0, 0], [0, 0, 1])
    np.testing.assert_allclose(out[0, 1, 1], [-1, -1, -1])
    up = frames.upsample(pic, 4)
    assert up.shape == (1, 4, 4, 3) and np.all(up[0, :2, :2] == pic[0, 0, 0])
    np.testing.assert_array_equal(up, np.repeat(np.repeat(pic, 2, 1), 2, 2))
    # Any size (EG3D's 48² neural render beside its 256² image): nearest neighbour.
    rows = np.arange(48.0)[None, :, None, None] * np.ones((1, 1, 48, 3))
    big = frames.upsample(rows, 256)
    assert big.shape == (1, 256, 256, 3)
    np.testing.assert_array_equal(big[0, :, 0, 0], np.floor((np.arange(256) + 0.5) * 48 / 256))


def test_truncate_matches_formula():
    ws = np.random.default_rng(1).standard_normal((2, 5, 4)).astype(np.float32)
    w_avg = np.arange(4, dtype=np.float32)
    out = frames.truncate(ws, w_avg, np.array([0.0, 0.5]), cutoff=3)
    np.testing.assert_allclose(out[0, :3], np.broadcast_to(w_avg, (3, 4)))
    np.testing.assert_allclose(out[1, :3], w_avg + 0.5 * (ws[1, :3] - w_avg), atol=1e-6)
    np.testing.assert_array_equal(out[:, 3:], ws[:, 3:])
    assert jax.numpy.asarray(out).dtype == np.float32
