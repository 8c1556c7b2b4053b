"""`video`, `walk` and `mesh` end to end on configs/tiny.py (random init), through a parser
through cli.main, on the 8 fake CPU devices."""

import re
from pathlib import Path

import jax
import numpy as np
import pytest
import trimesh
from PIL import Image

from styleavatar_jax import checkpoint, cli, sampling
from styleavatar_jax.export import frames, video
from styleavatar_jax.export import mesh as mesh_io
from styleavatar_jax.export.grid import to_uint8

TINY = str(Path(__file__).resolve().parent.parent / "configs" / "tiny.py")


def run(*argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def tiny(fast_compile):
    return checkpoint.load_generator(None, TINY, [], "mesh")


def test_video_rgb_depth_normal(tmp_path, tiny):
    cfg, G, variables = tiny
    out = tmp_path / "a.mp4"
    assert run("video", "--config", TINY, "--seeds", "0-1", "--frames", 6, "--yaw=-180:180",
               "--pitch", 0, "--batch", 8, "--out", out) == 0  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "a_depth.mp4", "a_normal.mp4"]
    clips = {k: video.read_video(video.companion_path(out, k)) for k in frames.KINDS}
    for clip in clips.values():
        assert clip.shape == (6, 64, 128, 3)  # 2 seeds side by side, at the SR resolution

    # The same frames from the walk path: one latent per frame, planes per chunk of frames,
    # on one device, the 12 frames in two chunks (the second padded).
    yaw = np.radians(np.arange(-180, 180, 60, dtype=np.float32))
    c = sampling.view_labels(yaw, np.zeros_like(yaw), cfg.camera.to_dict())
    ws = frames.seed_ws(
        G, variables, [0, 1], cfg.camera.to_dict(), 1.0, cfg.sample.truncation_cutoff
    )
    settings = frames.FrameSettings(neural_res=16, chunk=8)
    one = frames.render_frames(G, variables, np.repeat(ws, 6, 0), np.tile(c, (2, 1)), settings,
                               mesh=sampling.make_mesh(1), key=jax.random.key(0))  # fmt: skip
    eight = frames.render_orbit(G, variables, ws, c, settings, mesh=sampling.make_mesh(8),
                                key=jax.random.key(0))  # fmt: skip
    for name in ("image", "depth", "alpha", "normal"):
        np.testing.assert_allclose(eight[name].reshape(one[name].shape), one[name], atol=2e-4)
    np.testing.assert_allclose(np.linalg.norm(one["normal"], axis=-1), 1.0, atol=1e-4)
    # The written video is those frames (H.264 error only).
    rgb = to_uint8(np.concatenate(list(eight["image"]), axis=2))
    assert np.abs(clips["rgb"].astype(int) - rgb).mean() < 4


def test_walks_and_truncation_sweep(tmp_path, tiny):
    common = ("--config", TINY, "--batch", 8, "--kinds", "rgb,normal")
    z = tmp_path / "z.mp4"
    assert run("walk", *common, "--seeds", "0,1", "--space", "z", "--frames-per-seed", 3,
               "--out", z) == 0  # fmt: skip
    w = tmp_path / "w.mp4"
    assert run("walk", *common, "--seeds", "1,0", "--space", "w", "--frames-per-seed", 2,
               "--out", w) == 0  # fmt: skip
    sweep = tmp_path / "s.gif"
    assert run("walk", *common, "--seeds", "0", "--truncation-sweep", "0:1:4", "--out", sweep) == 0
    zc, wc, sc = (video.read_video(p) for p in (z, w, sweep))
    assert zc.shape == (6, 64, 64, 3) and wc.shape == (4, 64, 64, 3) and sc.shape[0] == 4
    assert video.read_video(tmp_path / "z_normal.mp4").shape == (6, 64, 64, 3)
    # Keyframes are the seeds' own images: z walk frame 3 (seed 1) = w walk frame 0 (seed 1),
    # z walk frame 0 (seed 0) = w walk frame 2 (seed 0); psi = 1 is seed 0 itself.
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()
    assert diff(zc[3], wc[0]) < 3 and diff(zc[0], wc[2]) < 3
    assert diff(zc[1], zc[0]) > 3 * diff(zc[3], wc[0])  # in-between frames differ
    assert diff(sc[3], zc[0]) < 6  # GIF palette vs H.264
    assert diff(sc[0], sc[3]) > 5  # psi 0 (the mean face) is another picture


def test_mesh_sits_on_the_level_set(tmp_path, tiny):
    cfg, G, variables = tiny
    out, preview = tmp_path / "m.ply", tmp_path / "m.png"
    assert run("mesh", "--config", TINY, "--seed", 0, "--res", 32, "--threshold", -1.0,
               "--out", out, "--preview", preview, "--preview-res", 32) == 0  # fmt: skip
    tm = trimesh.load(out, process=False)
    assert len(tm.vertices) > 100 and tm.is_watertight
    assert np.abs(tm.vertices).max() <= 0.5 + 1 / 31
    # σ of the generator at the vertices is the level (linear interpolation error only).
    dev = sampling.make_mesh()
    ws = frames.seed_ws(G, variables, [0], cfg.camera.to_dict(), 1.0, cfg.sample.truncation_cutoff)
    planes = frames.make_planes_fn(G, "const", dev)(
        variables, np.broadcast_to(ws, (dev.size, *ws.shape[1:])), jax.random.key(0)
    )[:1]
    field = mesh_io.generator_field(G, variables, jax.device_get(planes), dev)
    verts = np.asarray(tm.vertices, np.float32)
    rgb, sigma = mesh_io.query_chunked(field, verts, 65536)
    _, swapped = mesh_io.query_chunked(field, verts[:, [2, 1, 0]], 65536)  # x, z mixed up
    assert np.abs(sigma + 1.0).mean() < 0.05
    assert np.abs(swapped + 1.0).mean() > 3 * np.abs(sigma + 1.0).mean()
    np.testing.assert_allclose(tm.visual.vertex_colors[:, :3], mesh_io.colors_uint8(rgb), atol=1)
    png = np.asarray(Image.open(preview))
    assert png.shape == (32, 96, 3) and (png < 250).any()

    # A run directory of the same variables gives the same file.
    run_dir = checkpoint.write_new_run_dir(tmp_path / "run", cfg, {"G_ema": variables})
    out2 = tmp_path / "m2.ply"
    assert run("mesh", "--ckpt", run_dir, "--res", 32, "--threshold", -1.0, "--out", out2) == 0
    assert out2.read_bytes() == out.read_bytes()


def test_bad_flags_are_named(tmp_path, cli_error):
    assert re.search(
        "exactly one of --ckpt DIR or --config", cli_error(["video", "--out", tmp_path / "a.mp4"])
    )
    assert re.search(
        "--kinds='rgb,albedo'",
        cli_error(
            ["video", "--config", TINY, "--kinds", "rgb,albedo", "--out", tmp_path / "a.mp4"]
        ),
    )
    assert re.search(
        r"--out=.*a\.avi", cli_error(["walk", "--config", TINY, "--out", tmp_path / "a.avi"])
    )
    assert re.search(
        r"\.ply or \.obj", cli_error(["mesh", "--config", TINY, "--out", tmp_path / "a.stl"])
    )
    with pytest.raises(ValueError, match="--yaw='10'"):
        frames.parse_yaw_range("10", 4)
    np.testing.assert_allclose(np.degrees(frames.parse_yaw_range("-180:180", 4)),
                               [-180, -90, 0, 90], atol=1e-4)  # fmt: skip
    np.testing.assert_allclose(np.degrees(frames.parse_yaw_range("-30:30", 3)),
                               [-30, 0, 30], atol=1e-4)  # fmt: skip
