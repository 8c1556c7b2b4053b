"""Gaussian splats: the rasteriser against closed forms, the 3DGS PLY layout, the export on
an analytic field and on the shipped model (PSNR against the generator's volume render)."""

import re
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from styleavatar_jax import checkpoint, cli, sampling
from styleavatar_jax.export import frames
from styleavatar_jax.export import mesh as mesh_io
from styleavatar_jax.export import splats as sp
from styleavatar_jax.render import splats as raster

RUN = Path(__file__).resolve().parent.parent / "pretrained" / "mannequin64"
CAMERA = dict(radius=2.7, pivot=(0.0, 0.0, 0.0), fov_degrees=18.837)
NEAR, FAR = 2.25, 3.3


def label(yaw_deg=0.0, pitch_deg=0.0):
    yaw = np.radians(np.atleast_1d(np.float32(yaw_deg)))
    return sampling.view_labels(yaw, np.radians(np.atleast_1d(np.float32(pitch_deg))), CAMERA)


def gaussians(means, sigma, opacity, colors, quats=None):
    """Splats from loose values: sigma a number or [N, 3], opacity a number."""
    means = np.asarray(means, np.float32).reshape(-1, 3)
    n = len(means)
    scales = np.broadcast_to(np.asarray(sigma, np.float32).reshape(-1, 1 if np.ndim(sigma) < 2
                                                                    else 3), (n, 3))  # fmt: skip
    quats = np.tile([1.0, 0, 0, 0], (n, 1)) if quats is None else quats
    return sp.Splats(means, np.array(scales, np.float32), np.asarray(quats, np.float32),
                     np.broadcast_to(np.float32(opacity), (n,)).astype(np.float32),
                     np.asarray(colors, np.float32).reshape(n, 3))  # fmt: skip


def focal_px(res):
    return float(label()[0, 16]) * res  # normalised fx times the image size


# --- the rasteriser ------------------------------------------------------------------------


def test_one_isotropic_gaussian_head_on():
    """Footprint N(μ2D, (σ·f/z)² + 0.3 px²), peak alpha = opacity on its centre pixel."""
    res, sigma, o, rgb = 63, 0.02, 0.7, (1.0, 0.5, 0.25)  # odd: the centre is pixel 31's
    img, alpha = sp.render_splats(gaussians([0, 0, 0], sigma, o, [rgb]), label(), res)
    var = (sigma * focal_px(res) / 2.7) ** 2 + raster.DILATION
    t = np.arange(res) + 0.5 - res / 2
    want = o * np.exp(-0.5 * (t[:, None] ** 2 + t[None, :] ** 2) / var)
    want = np.where(want >= 1 / 255, want, 0.0)
    np.testing.assert_allclose(alpha[0], want, atol=2e-6)
    assert alpha[0, 31, 31] == pytest.approx(o, abs=1e-6)
    np.testing.assert_allclose(img[0], want[..., None] * np.array(rgb), atol=2e-6)
    white, _ = sp.render_splats(gaussians([0, 0, 0], sigma, o, [rgb]), label(), res, (1, 1, 1))
    np.testing.assert_allclose(white[0], want[..., None] * np.array(rgb) + 1 - want[..., None],
                               atol=2e-6)  # fmt: skip


def test_two_gaussians_composite_front_to_back():
    """Red in front of blue from the face side, blue in front from behind, whatever the
    order they are given in."""
    red, blue = [1.0, 0, 0], [0, 0, 1.0]
    s = gaussians([[0, 0, 0.1], [0, 0, -0.1]], 0.03, 1.0, [red, blue])
    s = s._replace(opacities=np.array([0.6, 0.5], np.float32))
    flipped = sp.Splats(*(a[::-1].copy() for a in s))
    for splats in (s, flipped):
        img, alpha = sp.render_splats(splats, np.concatenate([label(0), label(180)]), 31)
        np.testing.assert_allclose(img[0, 15, 15], [0.6, 0, 0.4 * 0.5], atol=1e-6)
        np.testing.assert_allclose(img[1, 15, 15], [0.5 * 0.6, 0, 0.5], atol=1e-6)
        np.testing.assert_allclose(alpha[:, 15, 15], 1 - 0.4 * 0.5, atol=1e-6)


def test_stops_when_transmittance_would_fall_below_1e_4():
    """Opacities 0.99, 0.98, 0.9 in a row: the third would take T from 2e-4 to 2e-5, so it
    is not composited (the reference's early stop) and the pixel keeps T = 2e-4."""
    s = gaussians([[0, 0, 0.1], [0, 0, 0], [0, 0, -0.1]], 0.03, 0.5,
                  [[1, 0, 0], [0, 1, 0], [0, 0, 1]])  # fmt: skip
    s = s._replace(opacities=np.array([0.99, 0.98, 0.9], np.float32))
    img, alpha = sp.render_splats(s, label(), 31)
    np.testing.assert_allclose(img[0, 15, 15], [0.99, 0.01 * 0.98, 0.0], rtol=1e-4, atol=1e-7)
    assert 1 - alpha[0, 15, 15] == pytest.approx(2e-4, rel=1e-3)


def test_anisotropic_gaussian_matches_the_ewa_formula():
    """A rotated, stretched Gaussian off the axis, seen from an oblique camera, against
    J W Σ Wᵀ Jᵀ + 0.3 I computed here with scipy's rotations."""
    mean, scales = np.array([0.05, -0.03, 0.02]), np.array([0.05, 0.01, 0.02])
    rot = Rotation.from_euler("xyz", [30, -20, 50], degrees=True)
    x, y, z, w = rot.as_quat()
    s = gaussians([mean], scales[None], 0.3, [[1, 1, 1]], quats=[[w, x, y, z]])
    c, res = label(35, 20), 64
    _, alpha = sp.render_splats(s, c, res)
    m = c[0, :16].reshape(4, 4).astype(np.float64)
    rw = m[:3, :3].T  # world -> camera
    t = rw @ (mean - m[:3, 3])
    f = focal_px(res)
    jac = np.array([[f / t[2], 0, -f * t[0] / t[2] ** 2], [0, f / t[2], -f * t[1] / t[2] ** 2]])
    cov3 = rot.as_matrix() @ np.diag(scales**2) @ rot.as_matrix().T
    cov2 = jac @ rw @ cov3 @ rw.T @ jac.T + raster.DILATION * np.eye(2)
    centre = f * t[:2] / t[2] + res / 2
    px = np.stack(np.meshgrid(np.arange(res) + 0.5, np.arange(res) + 0.5, indexing="xy"), -1)
    d = px - centre
    want = 0.3 * np.exp(-0.5 * np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov2), d))
    want = np.where(want >= 1 / 255, want, 0.0)
    np.testing.assert_allclose(alpha[0], want, atol=1e-5)
    assert want.max() > 0.25 and (want > 0).sum() > 50  # the footprint is on the image


@pytest.mark.parametrize("density", [3.0, 30.0])
def test_a_lattice_of_splats_absorbs_like_the_volume(density):
    """The export's opacity rule: a slab 0.1 thick of constant density, as a lattice of
    Gaussians with opacity 1 − exp(−d·h/(2π s²)) + 1/255, has alpha ≈ 1 − exp(−d·0.1) seen
    head-on, at a resolution where splats are several pixels wide."""
    h, n_side, layers = 1 / 47, 15, 5
    t = (np.arange(n_side) - n_side // 2) * h
    g = np.stack(np.meshgrid(t, t, np.arange(layers) * h, indexing="ij"), -1).reshape(-1, 3)
    o = sp.splat_opacity(density, h, 0.5)
    s = gaussians(g, 0.5 * h, o, np.ones((len(g), 3)))
    _, alpha = sp.render_splats(s, label(), 192)
    centre = alpha[0, 86:106, 86:106]
    assert abs(centre.mean() - (1 - np.exp(-density * layers * h))) < 0.02
    assert centre.std() < 0.02  # no holes between the splats


# --- files and frames ----------------------------------------------------------------------


def test_ply_layout_is_the_reference_codes(tmp_path):
    rng = np.random.default_rng(0)
    n = 5
    s = sp.Splats(rng.normal(size=(n, 3)).astype(np.float32),
                  rng.uniform(0.01, 0.1, (n, 3)).astype(np.float32),
                  Rotation.random(n, random_state=1).as_quat()[:, [3, 0, 1, 2]].astype(np.float32),
                  rng.uniform(0.05, 0.95, n).astype(np.float32),
                  rng.uniform(0, 1, (n, 3)).astype(np.float32))  # fmt: skip
    data = sp.ply_bytes(s)
    header, body = data.split(b"end_header\n", 1)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0",
             "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    assert header.decode() == "ply\nformat binary_little_endian 1.0\nelement vertex 5\n" + "".join(
        f"property float {p}\n" for p in names)  # fmt: skip
    table = np.frombuffer(body, "<f4").reshape(n, 17)
    assert len(body) == n * 17 * 4
    np.testing.assert_array_equal(table[:, :3], s.means)
    np.testing.assert_array_equal(table[:, 3:6], 0)
    np.testing.assert_allclose(table[:, 6:9], (s.colors - 0.5) / 0.28209479177387814, rtol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-table[:, 9])), s.opacities, rtol=1e-5)
    np.testing.assert_allclose(np.exp(table[:, 10:13]), s.scales, rtol=1e-6)
    np.testing.assert_array_equal(table[:, 13:], s.quats)  # rot_0 = w

    path = sp.write_ply(tmp_path / "a.ply", s, sh_degree=3)
    assert [p.name for p in tmp_path.iterdir()] == ["a.ply"]  # no temporary left
    np.testing.assert_array_equal(trimesh.load(path).vertices, s.means)  # another reader
    back, props = sp.read_ply(path)
    assert [f"f_rest_{i}" for i in range(45)] == [p for p in props if p.startswith("f_rest")]
    assert all(np.all(props[f"f_rest_{i}"] == 0) for i in range(45))
    extra = n * 45 * 4 + sum(len(f"property float f_rest_{i}\n") for i in range(45))
    assert path.stat().st_size == len(data) + extra
    for a, b in zip(back, s, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_files_and_splats(tmp_path):
    s = gaussians([0, 0, 0], 0.1, 0.5, [[1, 1, 1]])
    with pytest.raises(ValueError, match="ending in .ply"):
        sp.write_ply(tmp_path / "a.splat", s)
    with pytest.raises(ValueError, match="scales must be > 0"):
        sp.ply_bytes(s._replace(scales=np.zeros((1, 3), np.float32)))
    with pytest.raises(ValueError, match="expected 0 or 3"):
        sp.ply_bytes(s, sh_degree=1)
    with pytest.raises(ValueError, match="not a PLY"):
        sp.read_ply(b"\x89PNG\r\n")
    mesh = mesh_io.ply_bytes(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="not a Gaussian splat PLY"):
        sp.read_ply(mesh)
    with pytest.raises(ValueError, match="truncated"):
        sp.read_ply(sp.ply_bytes(s)[:-4])
    assert not list(tmp_path.iterdir())


def test_3dgs_convention_is_a_rotation_about_x_and_its_own_inverse():
    rot = Rotation.from_euler("xyz", [10, 70, -40], degrees=True)
    x, y, z, w = rot.as_quat()
    s = gaussians([[0.1, 0.2, 0.3]], np.array([[0.05, 0.01, 0.02]]), 0.5, [[1, 0, 0]],
                  quats=[[w, x, y, z]])  # fmt: skip
    t = sp.to_convention(s, "3dgs")
    np.testing.assert_allclose(t.means, [[0.1, -0.2, -0.3]])
    flip = np.diag([1.0, -1.0, -1.0])
    cov = lambda q: np.asarray(raster.covariances(s.scales, q))[0]
    np.testing.assert_allclose(cov(t.quats), flip @ cov(s.quats) @ flip, atol=1e-7)
    back = sp.to_convention(t, "3dgs")
    np.testing.assert_allclose(back.means, s.means)
    np.testing.assert_allclose(cov(back.quats), cov(s.quats), atol=1e-7)
    assert sp.to_convention(s, "world") is s
    with pytest.raises(ValueError, match="--convention=opengl"):
        sp.to_convention(s, "opengl")


# --- the export on an analytic field -------------------------------------------------------

R = 0.2


def ball_field(points):
    """σ = 2000·(R − |x|): a ball whose density reaches 40 a voxel (1/47) under its surface,
    coloured by position."""
    p = np.asarray(points, np.float64)
    sigma = 2000 * (R - np.linalg.norm(p, axis=-1))
    return np.clip(p + 0.5, 0, 1).astype(np.float32), sigma.astype(np.float32)


@pytest.fixture(scope="module")
def ball():
    c_vis = sp.orbit_labels(CAMERA, 8, (-30.0, 30.0))
    return sp.extract_splats(ball_field, c_vis, box=1.0, near=NEAR, far=FAR, radius=0.45,
                             res=48, chunk=8192)  # fmt: skip


def test_ball_splats_sit_on_and_just_inside_the_surface(ball):
    s, info = ball
    h = info["voxel"]
    r = np.linalg.norm(s.means, axis=-1)
    # On the surface and under it as long as light gets through (T·α ≥ 0.5/255: 3.7 voxels
    # of this density ramp, plus up to 0.87 of a voxel from rounding a ray sample to its
    # voxel); the core (~350 voxels) is hidden and left out.
    assert r.max() < R + h / 2 and r.min() > R - 5 * h
    assert np.sum(np.linalg.norm(mesh_io.grid_points(48, 1.0), axis=-1) < R - 5 * h) > 300
    assert len(s.means) == info["visible"]
    np.testing.assert_array_equal(s.colors, ball_field(s.means)[0])
    dens = sp.density_of(ball_field(s.means)[1]).astype(np.float64)
    want = np.minimum(1 - np.exp(-dens * h / (2 * np.pi * 0.25)) + 1 / 255, 0.99)
    np.testing.assert_allclose(s.opacities, want, rtol=1e-5)
    np.testing.assert_allclose(s.scales, 0.5 * h)
    np.testing.assert_array_equal(s.quats, np.tile([1, 0, 0, 0], (len(r), 1)))


def test_ball_splats_render_like_the_volume(ball):
    s, info = ball
    c = label(np.arange(0, 360, 90), np.zeros(4))
    ref, ref_alpha = sp.render_field(ball_field, c, resolution=64, near=NEAR, far=FAR,
                                     samples=192, chunk=65536)  # fmt: skip
    img, alpha = sp.render_splats(s, c, 64)
    # Measured 25.4 … 25.7 dB: the silhouette, 20 px from the centre, spreads by about a
    # splat's deviation (a pixel, plus the 0.3 px² filter) outside the sharp sphere.
    assert sp.psnr(img, ref).min() > 24
    assert 0 < np.mean(alpha - ref_alpha) < 0.04  # measured 0.028


def test_num_coarsens_the_grid_and_thresholds_say_what_to_try(ball):
    s, info = ball
    c_vis = sp.orbit_labels(CAMERA, 8, (-30.0, 30.0))
    kw = dict(box=1.0, near=NEAR, far=FAR, radius=0.45, res=48, chunk=8192)
    few, few_info = sp.extract_splats(ball_field, c_vis, num=1000, **kw)
    assert len(few.means) == few_info["visible"] <= 1000 < info["visible"]
    assert few_info["res"] < 48 and np.allclose(few.scales, 0.5 * few_info["voxel"])
    # On one grid, a budget keeps the most visible voxels.
    dens, weight = np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.float32)
    dens[1, 2, 3] = dens[2, 2, 2] = dens[3, 0, 0] = 5.0
    weight[1, 2, 3], weight[2, 2, 2], weight[3, 0, 0] = 0.5, 0.9, 0.1
    top = sp.splats_from_grid(dens, np.ones((4, 4, 4, 3)), weight, box=3.0, num=2,
                              min_weight=0.0, scale=0.5)  # fmt: skip
    np.testing.assert_allclose(top.means, [[0.5, 0.5, 0.5], [-0.5, 0.5, 1.5]])
    with pytest.raises(ValueError, match=r"--threshold=1000: no grid point .* try --threshold"):
        sp.extract_splats(ball_field, c_vis, threshold=1000.0, **kw)
    with pytest.raises(ValueError, match=r"no point at or above it is visible"):
        sp.extract_splats(ball_field, c_vis, **{**kw, "near": 0.5, "far": 1.0})  # rays end early
    with pytest.raises(ValueError, match=r"--num=0"):
        sp.extract_splats(ball_field, c_vis, num=0, **kw)


# --- the shipped model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mannequin():
    """pretrained/mannequin64 seed 0: the field, its default splats, 8 yaws' reference."""
    import jax

    cfg, G, variables = checkpoint.load_generator(str(RUN), None, [], "splats")
    dev = sampling.make_mesh(1)
    ws = frames.seed_ws(G, variables, [0], cfg.camera.to_dict(), 1.0,
                        cfg.sample.truncation_cutoff)  # fmt: skip
    planes_fn = frames.make_planes_fn(G, cfg.sample.noise_mode, dev)
    planes = np.asarray(planes_fn(variables, ws, jax.random.key(0)))
    field = mesh_io.generator_field(G, variables, planes, dev)
    r, camera = G.cfg.render, cfg.camera.to_dict()
    radius = sp.crop_radius(camera["radius"], r.ray_start, r.ray_end)
    c_vis = sp.orbit_labels(camera, 24, (-30.0, 0.0, 30.0))
    s, info = sp.extract_splats(field, c_vis, box=r.box_warp, near=r.ray_start, far=r.ray_end,
                                radius=radius, res=48)  # fmt: skip
    yaw = np.radians(np.arange(8) * 45.0).astype(np.float32)
    c = sampling.view_labels(yaw, np.zeros_like(yaw), camera)
    ref, _ = sp.render_field(field, c, resolution=64, near=r.ray_start, far=r.ray_end,
                             radius=radius, edge=info["voxel"])  # fmt: skip
    return s, info, c, ref


def test_shipped_model_splats_reproduce_its_renders(mannequin):
    """8 yaws at 64², against the generator's volume render of the same crop. The bound
    fails for wrong colours (shuffled) or positions (one voxel up) by a wide margin."""
    s, info, c, ref = mannequin
    psnr = lambda splats: sp.psnr(sp.render_splats(splats, c, 64)[0], ref)
    p = psnr(s)
    # Measured: mean 33.1, 31.6 … 36.5 on the 52-kimg model (28.0, 26.9 … 29.6 on the
    # 20.6-kimg one); shuffled colours 16.0 (17 dB under; 13 dB on the older model, whose
    # colours varied more: an absolute bound of 15 failed the sharper, greyer model, and one
    # of 24 for the voxel-shifted splats too, so both controls are relative to p).
    assert p.mean() > 31 and p.min() > 29.5
    rng = np.random.default_rng(0)
    shuffled = psnr(s._replace(colors=s.colors[rng.permutation(len(s.colors))])).mean()
    assert shuffled < p.mean() - 12, (shuffled, p.mean())
    shifted = psnr(s._replace(means=s.means + np.float32([0, info["voxel"], 0]))).mean()
    assert shifted < p.mean() - 6, (shifted, p.mean())  # measured 24.9: 8.2 dB under


def test_splats_cli(tmp_path, capsys, cli_error):
    out = tmp_path / "head.ply"
    argv = ["splats", "--ckpt", RUN, "--seed", 0, "--res", 24, "--out", out, "--check",
            "--check-res", 32, "--convention", "world"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    text = capsys.readouterr().out
    n = int(re.search(r"\((\d+) Gaussians", text)[1])
    assert re.search(r"check: PSNR \d+\.\d+ dB", text), text
    assert re.search(r"own raw images .* over white; two draws of its renderer agree", text)
    s, _ = sp.read_ply(out)
    assert len(s.means) == n and np.linalg.norm(s.means, axis=-1).max() < 0.45 + 0.5 / 23
    base = ["splats", "--ckpt", RUN, "--out"]
    assert "expected a file ending in .ply" in cli_error([*base, tmp_path / "a.obj"])
    assert "an integer ≥ 1" in cli_error([*base, out, "--num", 0])
    assert "--num=20000000: expected at most" in cli_error([*base, out, "--num", 20_000_000])
    err = cli_error([*base, tmp_path / "b.ply", "--res", 12, "--threshold", 500])
    assert "--threshold=500: no grid point" in err and "try --threshold" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.ply"]  # nothing half-written
