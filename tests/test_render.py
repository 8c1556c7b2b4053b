"""Volume rendering (render/) piece by piece: compositing, depth sampling, tri-plane lookup,
rays, box limits, and the whole renderer on analytic scenes.

References are numpy written from EG3D's volumetric_rendering/ (ray_marcher.py,
ray_sampler.py, renderer.py, math_utils.py) and torch's grid_sample definition.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax.render.composite import composite
from styleavatar_jax.render.planes import grid_sample, project, sample_planes
from styleavatar_jax.render.rays import box_ray_limits, pixel_rays
from styleavatar_jax.render.renderer import RenderConfig, RenderUniforms, render
from styleavatar_jax.render.sampling import (
    importance_depths,
    sample_pdf,
    smooth_weights,
    stratified_depths,
    stratified_disparity_depths,
)

from .conftest import rand

pytestmark = pytest.mark.usefixtures("fast_compile")


def softplus(x):
    return np.logaddexp(0.0, x)


# Compiled once per shape: op-by-op dispatch costs far more than these tiny arrays on CPU.
_composite_jit = jax.jit(composite, static_argnames="white_back")
composite_jit = lambda *a, white_back=False: _composite_jit(*a, white_back=white_back)
stratified_jit = jax.jit(stratified_depths, static_argnums=3)
sample_pdf_jit = jax.jit(sample_pdf)
importance_jit = jax.jit(importance_depths)
box_limits_jit = jax.jit(box_ray_limits, static_argnums=2)

# ---------------------------------------------------------------------------------------
# composite


def composite_ref(rgb, sigma, depths, white_back=False):
    """MipRayMarcher2, ray by ray: midpoint colour/density/depth, softplus(σ − 1) density,
    transmittance Π (1 − α + 1e-10), NaN depth -> +inf, clamp to the batch's depth range."""
    b, r, s, c = rgb.shape
    rgb, sigma, depths = (np.float64(a) for a in (rgb, sigma, depths))
    out_rgb, out_depth, weights = (
        np.zeros((b, r, c)),
        np.zeros((b, r, 1)),
        np.zeros((b, r, s - 1, 1)),
    )
    for i in range(b):
        for j in range(r):
            trans, total, num = 1.0, 0.0, 0.0
            for k in range(s - 1):
                density = softplus(0.5 * (sigma[i, j, k, 0] + sigma[i, j, k + 1, 0]) - 1)
                alpha = 1 - math.exp(-density * (depths[i, j, k + 1, 0] - depths[i, j, k, 0]))
                w = alpha * trans
                trans *= 1 - alpha + 1e-10
                weights[i, j, k, 0] = w
                out_rgb[i, j] += w * 0.5 * (rgb[i, j, k] + rgb[i, j, k + 1])
                num += w * 0.5 * (depths[i, j, k, 0] + depths[i, j, k + 1, 0])
                total += w
            out_depth[i, j, 0] = num / total if total > 0 else np.inf
            if white_back:
                out_rgb[i, j] += 1 - total
    out_depth = np.clip(out_depth, depths.min(), depths.max())
    return out_rgb * 2 - 1, out_depth, weights


def random_scene(seed, sigma_scale=3.0):
    """rgb [2, 3, 8, 3], sigma, depths [2, 3, 8, 1]: one shape for all, so one compile."""
    rng = np.random.default_rng(seed)
    rgb = rng.uniform(0, 1, (2, 3, 8, 3)).astype(np.float32)
    sigma = (sigma_scale * rng.standard_normal((2, 3, 8, 1))).astype(np.float32)
    depths = np.sort(rng.uniform(2.0, 3.5, (2, 3, 8, 1)), axis=2).astype(np.float32)
    return rgb, sigma, depths


@jax.jit
def composite_grads(rgb, sigma, depths):
    """Gradients w.r.t. (rgb, sigma, depths) of a loss on colour and weights, and of Σ depth.

    Two jax.grads, not one vjp with two cotangents: an explicit zero cotangent on the depth
    output used to turn into NaN on empty rays (see test_composite_depth_gradient_...).
    """
    main = lambda *a: (lambda o: jnp.sum(o[0] ** 2) + jnp.sum(o[2] * jnp.arange(7.0)[:, None]))(
        composite(*a)
    )
    depth = lambda *a: jnp.sum(composite(*a)[1])
    grad = lambda f: jax.grad(f, argnums=(0, 1, 2))(rgb, sigma, depths)
    return grad(main), grad(depth)


@pytest.mark.parametrize("white_back", [False, True])
def test_composite_matches_definition(white_back):
    rgb, sigma, depths = random_scene(0)
    out = composite_jit(rgb, sigma, depths, white_back=white_back)
    for a, ref in zip(out, composite_ref(rgb, sigma, depths, white_back), strict=True):
        np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)


def test_composite_weights_are_a_partition_of_at_most_one():
    for seed in range(3):
        rgb, sigma, depths = random_scene(seed, sigma_scale=20.0)
        _, _, weights = composite_jit(rgb, sigma, depths)
        assert weights.shape == (2, 3, 7, 1)
        assert np.all(np.asarray(weights) >= 0)
        assert np.all(np.asarray(weights).sum(axis=2) <= 1 + 1e-6)


def test_composite_single_opaque_interval_gives_its_colour():
    """σ = 100 at samples k, k+1 and −300 elsewhere: only interval k has density, and with a
    unit spacing it is opaque, so the pixel is mid(rgb)_k (and the depth its midpoint)."""
    rgb, sigma, depths = random_scene(2)
    for k in (0, 3, 6):
        sigma[0, 0] = -300.0
        sigma[0, 0, k : k + 2] = 100.0
        depths[0, 0, :, 0] = np.arange(8) + 2.0
        out_rgb, depth, weights = composite_jit(rgb, sigma, depths)
        np.testing.assert_allclose(weights[0, 0, :, 0], np.eye(7)[k], atol=1e-6)
        np.testing.assert_allclose(out_rgb[0, 0], rgb[0, 0, k] + rgb[0, 0, k + 1] - 1, atol=1e-6)
        np.testing.assert_allclose(depth[0, 0, 0], 2.0 + k + 0.5, rtol=1e-6)


@pytest.mark.parametrize("value", [-100.0, 100.0])
def test_composite_extreme_sigma_is_finite(value):
    """σ → −∞ (empty) and +∞ (solid): finite outputs; finite gradients of colour and weights."""
    rgb, _, depths = random_scene(3)
    sigma = np.full_like(depths, value)
    for a in composite_jit(rgb, sigma, depths):
        assert np.all(np.isfinite(a))
    for g in composite_grads(rgb, sigma, depths)[0]:
        assert np.all(np.isfinite(g))
    if value > 0:  # solid: Σ depth is differentiable too
        assert all(np.all(np.isfinite(g)) for g in composite_grads(rgb, sigma, depths)[1])


def test_composite_depth_gradient_is_finite_on_empty_rays():
    """Σw·z / Σw is 0/0 on an empty ray: the guarded division keeps d depth / d(σ, z)
    finite (EG3D's MipRayMarcher2 gives NaN there)."""
    rgb, sigma, depths = random_scene(4)
    sigma[0, 0] = -100.0  # one empty ray
    _, (_, g_sigma, g_depths) = composite_grads(rgb, sigma, depths)
    assert np.all(np.isfinite(g_sigma)) and np.all(np.isfinite(g_depths))


def test_composite_depth_is_clamped_to_the_batch_range():
    """An empty ray's depth (NaN -> inf) clamps to the max depth of the whole batch."""
    rgb, sigma, depths = random_scene(5)
    depths[0, 0, :, 0] = np.linspace(2.0, 3.0, 8)
    depths[1, 2, -1, 0] = 4.0  # the batch's deepest sample, on another ray
    sigma[0, 0] = -100.0
    _, depth, _ = composite_jit(rgb, sigma, depths)
    assert float(depth[0, 0, 0]) == 4.0  # not this ray's 3.0
    others = np.asarray(depth).reshape(-1)[1:]
    assert np.all((others >= depths.min()) & (others <= 4.0))


def test_composite_white_back():
    rgb, sigma, depths = random_scene(6)
    sigma[0, 0] = -100.0
    black, _, w = composite_jit(rgb, sigma, depths)
    white, _, _ = composite_jit(rgb, sigma, depths, white_back=True)
    np.testing.assert_allclose(black[0, 0], -1.0, atol=1e-6)  # empty: black ...
    np.testing.assert_allclose(white[0, 0], 1.0, atol=1e-6)  # ... or white
    # white_back adds the untaken transmittance, ×2 for the [−1, 1] range.
    np.testing.assert_allclose(
        white - black, np.broadcast_to(2 * (1 - np.sum(w, axis=2)), black.shape), atol=1e-6
    )


# ---------------------------------------------------------------------------------------
# stratified_depths, smooth_weights, sample_pdf, importance_depths


def test_stratified_depths_bounds_and_spacing():
    s, start, end = 6, 2.25, 3.3
    delta = (end - start) / (s - 1)
    u = np.random.default_rng(6).uniform(0, 1, (2, 3, s, 1)).astype(np.float32)
    base = start + delta * np.arange(s)[:, None]
    np.testing.assert_allclose(stratified_jit(np.zeros_like(u), start, end, s)[0, 0], base, 1e-6)
    d = np.asarray(stratified_jit(u, start, end, s))
    assert d.shape == (2, 3, s, 1)
    np.testing.assert_allclose(d, base + u * delta, rtol=1e-6)  # sample k in [t_k, t_k + δ)
    assert np.all(d >= base - 1e-6) and np.all(d < base + delta + 1e-6)
    assert np.all(np.diff(d, axis=2) >= -1e-6)  # sorted along the ray


def test_stratified_depths_per_ray_limits():
    s = 5
    start = np.array([[[2.0], [1.0]]], np.float32)  # [B, R, 1]
    end = np.array([[[3.0], [3.0]]], np.float32)
    u = np.full((1, 2, s, 1), 0.5, np.float32)
    d = np.asarray(stratified_jit(u, start, end, s))
    np.testing.assert_allclose(d[0, 0, :, 0], np.linspace(2, 3, s) + 0.5 * 0.25, rtol=1e-6)
    np.testing.assert_allclose(d[0, 1, :, 0], np.linspace(1, 3, s) + 0.5 * 0.5, rtol=1e-6)


def test_stratified_disparity_depths_ends():
    d = np.asarray(
        jax.jit(stratified_disparity_depths, static_argnums=3)(np.zeros((1, 1, 5, 1)), 2.0, 4.0, 5)
    )[0, 0, :, 0]
    np.testing.assert_allclose(1 / d, np.linspace(1 / 2.0, 1 / 4.0, 5), rtol=1e-6)


def test_smooth_weights_hand_example():
    """max_pool1d(2, stride 1, pad 1) then avg_pool1d(2, stride 1), + 0.01 (EG3D)."""
    w = jnp.array([[1.0, 0.0, 0.0, 2.0], [0.0, 3.0, 0.0, 0.0]])
    # row 0: pad [−inf 1 0 0 2 −inf] -> max [1 1 0 2 2] -> avg [1 .5 1 2]
    # row 1: pad [−inf 0 3 0 0 −inf] -> max [0 3 3 0 0] -> avg [1.5 3 1.5 0]
    expected = np.array([[1.0, 0.5, 1.0, 2.0], [1.5, 3.0, 1.5, 0.0]]) + 0.01
    np.testing.assert_allclose(jax.jit(smooth_weights)(w), expected, rtol=1e-6)


# All sample_pdf tests use u [4, 64], bins [4, 12], weights [4, 11]: one compile.


def test_sample_pdf_uniform_weights_is_linear_in_u():
    bins = np.linspace(2.0, 3.0, 12, dtype=np.float32)[None].repeat(4, 0)  # 11 equal bins
    u = np.linspace(0.0, 0.999, 64, dtype=np.float32)[None].repeat(4, 0)
    samples = sample_pdf_jit(u, bins, np.ones((4, 11), np.float32))
    np.testing.assert_allclose(samples, 2.0 + u, rtol=1e-6)


def test_sample_pdf_single_bin_pdf():
    bins = np.arange(12, dtype=np.float32)[None].repeat(4, 0)  # bin j = [j, j + 1]
    which = np.array([0, 3, 10, 5])  # incl. the first and last bin
    weights = np.eye(11, dtype=np.float32)[which]
    u = np.linspace(0.001, 0.999, 64, dtype=np.float32)[None].repeat(4, 0)
    samples = np.asarray(sample_pdf_jit(u, bins, weights))
    assert np.all((samples >= which[:, None]) & (samples <= which[:, None] + 1))
    # eps = 1e-5 per bin leaks ≤ 1e-4 of the mass to the others: linear in u within the bin.
    np.testing.assert_allclose(samples, which[:, None] + u, atol=1e-3)


def test_sample_pdf_is_monotone_in_u():
    rng = np.random.default_rng(7)
    bins = np.sort(rng.uniform(2, 3, (4, 12)), axis=1).astype(np.float32)
    weights = rng.uniform(0, 1, (4, 11)).astype(np.float32) * (rng.uniform(size=(4, 11)) > 0.5)
    u = np.sort(rng.uniform(0, 1, (4, 64)), axis=1).astype(np.float32)
    samples = np.asarray(sample_pdf_jit(u, bins, weights))
    assert np.all(np.diff(samples, axis=1) >= -1e-6)
    assert np.all((samples >= bins[:, :1] - 1e-6) & (samples <= bins[:, -1:] + 1e-6))


def test_importance_depths_shapes_range_and_no_gradient():
    b, r, s, k = 2, 3, 10, 7
    rng = np.random.default_rng(8)
    depths = np.sort(rng.uniform(2, 3, (b, r, s, 1)), axis=2).astype(np.float32)
    weights = rng.uniform(0, 1, (b, r, s - 1, 1)).astype(np.float32)
    u = rng.uniform(0, 1, (b * r, k)).astype(np.float32)
    fine = np.asarray(importance_jit(u, depths, weights))
    assert fine.shape == (b, r, k, 1)
    mids = 0.5 * (depths[:, :, 1:] + depths[:, :, :-1])
    # EG3D passes mids as edges but only S − 3 weights: samples stay in [mid_0, mid_{S−3}].
    assert np.all(fine >= mids[:, :, :1] - 1e-6)
    assert np.all(fine <= mids[:, :, s - 3 : s - 2] + 1e-6)
    grads = jax.jit(jax.grad(lambda d, w: jnp.sum(importance_depths(u, d, w) ** 2), (0, 1)))(
        depths, weights
    )
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)


def test_importance_depths_follow_the_weights():
    """All coarse weight on interval [z_6, z_7]. Smoothed: 0.51, 1.01, 0.51 on intervals 5–7
    and 0.01 elsewhere; EG3D then drops the first and last weight and uses the midpoints as
    bin edges, so interval k's weight lands in [mid_{k−1}, mid_k]: half an interval early."""
    s = 12
    z = np.linspace(2.0, 3.0, s, dtype=np.float32)
    mids = 0.5 * (z[1:] + z[:-1])
    weights = np.zeros((1, 1, s - 1, 1), np.float32)
    weights[0, 0, 6] = 1.0
    u = ((np.arange(512) + 0.5) / 512).astype(np.float32)[None]  # stratified, not random
    fine = np.asarray(importance_jit(u, z.reshape(1, 1, s, 1), weights))[0, 0, :, 0]
    frac = lambda lo, hi: np.mean((fine >= mids[lo]) & (fine <= mids[hi]))
    total = 0.51 + 1.01 + 0.51 + 6 * 0.01
    assert abs(frac(5, 6) - 1.01 / total) < 0.005
    assert abs(frac(4, 7) - 2.03 / total) < 0.005


# ---------------------------------------------------------------------------------------
# tri-plane lookup


def grid_sample_ref(features, uv):
    """torch grid_sample(bilinear, zeros, align_corners=False), one point at a time."""
    n, h, w, c = features.shape
    out = np.zeros((n, uv.shape[1], c))
    for i in range(n):
        for m in range(uv.shape[1]):
            x = ((uv[i, m, 0] + 1) * w - 1) / 2  # pixel centres at −1 + (2j + 1)/W
            y = ((uv[i, m, 1] + 1) * h - 1) / 2
            x0, y0 = math.floor(x), math.floor(y)
            for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                    if 0 <= xi < w and 0 <= yi < h:  # zeros padding
                        out[i, m] += wx * wy * features[i, yi, xi]
    return out


grid_sample_jit = jax.jit(grid_sample)


def test_grid_sample_matches_torch_definition():
    rng = np.random.default_rng(10)
    features = rand(11, 2, 5, 7, 3)  # non-square: u runs along W, v along H
    uv = rng.uniform(-1.3, 1.3, (2, 40, 2)).astype(np.float32)  # some outside [−1, 1]
    uv[:, 0] = [-1.0, -1.0]  # the image corner: a quarter of pixel [0, 0]
    uv[:, 1] = [1.0 - 1 / 7, -1.0 + 1 / 5]  # exactly the centre of pixel (row 0, col 6)
    out = np.asarray(grid_sample_jit(features, uv))
    np.testing.assert_allclose(out, grid_sample_ref(features, uv), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 0], 0.25 * features[:, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(out[:, 1], features[:, 0, 6], rtol=1e-5)


def test_grid_sample_outside_is_zero():
    features = rand(12, 1, 4, 4, 2)
    uv = np.array([[[1.3, 0.0], [-1.26, 0.5], [0.0, 1.25], [0.1, -2.0], [5.0, 5.0]]], np.float32)
    np.testing.assert_array_equal(grid_sample_jit(features, uv), 0.0)


def test_grid_sample_gradients():
    """jax.grad against central differences of the reference, w.r.t. the coordinates (points
    kept away from the pixel-centre lines, where bilinear has kinks) and the features."""
    h, w, m = 4, 6, 12
    rng = np.random.default_rng(13)
    px = rng.integers(-1, w, m) + rng.uniform(0.2, 0.8, m)  # incl. cells half outside
    py = rng.integers(-1, h, m) + rng.uniform(0.2, 0.8, m)
    uv = np.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1)[None]
    features = np.float64(rand(14, 1, h, w, 2))
    probe = rand(15, 1, m, 2)  # loss = <probe, grid_sample(features, uv)>
    loss_ref = lambda f, uv: np.sum(probe * grid_sample_ref(f, uv))
    g_f, g_uv = jax.jit(
        jax.grad(lambda f, uv: jnp.sum(probe * grid_sample(f, uv)), argnums=(0, 1))
    )(np.float32(features), np.float32(uv))
    eps = 1e-4
    fd_uv = np.zeros_like(uv)
    for i in np.ndindex(uv.shape):
        d = np.zeros_like(uv)
        d[i] = eps
        fd_uv[i] = (loss_ref(features, uv + d) - loss_ref(features, uv - d)) / (2 * eps)
    np.testing.assert_allclose(g_uv, fd_uv, rtol=1e-4, atol=1e-4)
    assert np.abs(fd_uv).max() > 0.1  # the coordinates matter
    fd_f = np.zeros_like(features)
    for i in np.ndindex(features.shape):  # linear in the features: exact differences
        d = np.zeros_like(features)
        d[i] = 1.0
        fd_f[i] = loss_ref(features + d, uv) - loss_ref(features, uv)
    np.testing.assert_allclose(g_f, fd_f, rtol=1e-5, atol=1e-5)


def test_project_axes():
    coords = jnp.array([[[1.0, 2.0, 3.0], [-4.0, 5.0, -6.0]]])
    project_jit = jax.jit(project, static_argnums=1)
    eg3d = np.asarray(project_jit(coords, "eg3d"))
    assert eg3d.shape == (1, 3, 2, 2)
    np.testing.assert_array_equal(eg3d[0, :, 0], [[1, 2], [1, 3], [3, 1]])  # (x,y) (x,z) (z,x)
    np.testing.assert_array_equal(
        project_jit(coords, "corrected")[0, :, 0], [[1, 2], [1, 3], [2, 3]]
    )
    # EG3D's project_onto_planes: coords @ inv(plane axes), first two components.
    axes = np.array(
        [
            [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
            [[0, 0, 1], [1, 0, 0], [0, 1, 0]],
        ],
        np.float64,
    )
    ref = np.stack([np.asarray(coords[0]) @ np.linalg.inv(a) for a in axes])[..., :2]
    np.testing.assert_array_equal(eg3d[0], ref)
    with pytest.raises(ValueError, match="plane axes 'yz'"):
        project(coords, "yz")


def coordinate_planes(res):
    """Planes [1, 3, res, res, 2] whose features are the (u, v) of each pixel centre."""
    t = (2 * np.arange(res) + 1) / res - 1
    u, v = np.meshgrid(t, t, indexing="xy")  # u along W (columns), v along H (rows)
    plane = np.stack([u, v], -1)
    return np.float32(np.broadcast_to(plane, (1, 3, res, res, 2)))


@pytest.mark.parametrize("axes", ["eg3d", "corrected"])
def test_sample_planes_reads_projected_coordinates(axes):
    """Bilinear sampling of a linear ramp is exact between pixel centres: each plane returns
    the point's projection onto it, scaled by 2 / box_warp."""
    box_warp = 1.6
    coords = np.random.default_rng(15).uniform(-0.7, 0.7, (1, 20, 3)).astype(np.float32)
    feats = np.asarray(
        jax.jit(sample_planes, static_argnames=("box_warp", "axes"))(
            coordinate_planes(16), coords, box_warp=box_warp, axes=axes
        )
    )
    assert feats.shape == (1, 3, 20, 2)
    expected = np.asarray(project(coords * (2 / box_warp), axes))
    np.testing.assert_allclose(feats, expected, atol=1e-5)


# ---------------------------------------------------------------------------------------
# rays and box limits


def pixel_rays_ref(cam2world, intrinsics, res):
    """EG3D RaySampler for one camera; ray m = row·res + col, x from col, y from row."""
    fx, fy, cx, cy, sk = (
        intrinsics[0, 0],
        intrinsics[1, 1],
        intrinsics[0, 2],
        intrinsics[1, 2],
        intrinsics[0, 1],
    )
    dirs = []
    for row in range(res):
        for col in range(res):
            x_cam, y_cam = (col + 0.5) / res, (row + 0.5) / res
            x_lift = (x_cam - cx + cy * sk / fy - sk * y_cam / fy) / fx
            y_lift = (y_cam - cy) / fy
            d = cam2world[:3, :3] @ np.array([x_lift, y_lift, 1.0])
            dirs.append(d / np.linalg.norm(d))
    return np.stack(dirs)


def random_camera(seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = q, rng.standard_normal(3)
    k = np.array([[4.26, 0.05, 0.48], [0, 4.1, 0.53], [0, 0, 1]])
    return m, k


def test_pixel_rays_match_eg3d():
    res = 5
    cams = [random_camera(s) for s in (16, 17)]
    c2w = np.float32([m for m, _ in cams])
    k = np.float32([k for _, k in cams])
    origins, dirs = jax.jit(pixel_rays, static_argnums=2)(c2w, k, res)
    assert origins.shape == dirs.shape == (2, res * res, 3)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1.0, rtol=1e-6)
    for b in range(2):
        np.testing.assert_allclose(origins[b], np.broadcast_to(c2w[b, :3, 3], (res * res, 3)))
        ref = pixel_rays_ref(np.float64(c2w[b]), np.float64(k[b]), res)
        np.testing.assert_allclose(dirs[b], ref, atol=1e-6)


def test_pixel_rays_identity_camera():
    res = 5
    c2w = np.eye(4, dtype=np.float32)[None]
    k = np.float32([[[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]]])
    _, dirs = jax.jit(pixel_rays, static_argnums=2)(c2w, k, res)
    dirs = np.asarray(dirs[0]).reshape(res, res, 3)  # [row, col, xyz]
    np.testing.assert_allclose(dirs[2, 2], [0, 0, 1], atol=1e-7)  # centre ray along +z
    assert dirs[2, 4, 0] > 0 and abs(dirs[2, 4, 1]) < 1e-7  # col -> +x (right)
    assert dirs[4, 2, 1] > 0 and abs(dirs[4, 2, 0]) < 1e-7  # row -> +y (down, OpenCV)
    # ray m = row·res + col: pixel (row 1, col 3) is ray 8; its direction ∝ (x, y, 1)
    x, y = ((3 + 0.5) / res - 0.5) / 2.0, ((1 + 0.5) / res - 0.5) / 2.0
    np.testing.assert_allclose(
        dirs.reshape(-1, 3)[8], np.array([x, y, 1]) / math.hypot(x, y, 1), atol=1e-6
    )


def box_limits_eg3d(o, d, side):
    """math_utils.get_ray_limits_box, one ray: slab test with EG3D's validity rules."""
    inv = 1 / d
    lo, hi = (-side / 2 - o) * inv, (side / 2 - o) * inv
    tmin, tmax = np.minimum(lo, hi), np.maximum(lo, hi)
    valid = not (tmin[0] > tmax[1] or tmin[1] > tmax[0])
    t0, t1 = max(tmin[0], tmin[1]), min(tmax[0], tmax[1])
    valid = valid and not (t0 > tmax[2] or tmin[2] > t1)
    t0, t1 = max(t0, tmin[2]), min(t1, tmax[2])
    return (t0, t1) if valid else (-1.0, -2.0)


def test_box_ray_limits_hand_cases():
    s3 = math.sqrt(3)
    cases = [
        # origin, direction, side, (start, end)
        ((0, 0, -2), (0, 0, 1), 1.0, (1.5, 2.5)),  # along +z through the centre
        ((0.3, -0.2, -3), (0, 0, 1), 2.0, (2.0, 4.0)),
        ((-2, -2, -2), (1 / s3, 1 / s3, 1 / s3), 1.0, (1.5 * s3, 2.5 * s3)),  # diagonal
        ((0, 0, 0), (1, 0, 0), 1.0, (-0.5, 0.5)),  # from inside
        ((0, 0, -2), (0, 0, -1), 1.0, (-2.5, -1.5)),  # box behind: EG3D keeps negative t
        ((2, 0, -2), (0, 0, 1), 1.0, (-1.0, -2.0)),  # misses: EG3D's (−1, −2)
        ((0, 0.9, -2), (0, 0.6, 0.8), 1.0, (-1.0, -2.0)),  # misses, going up
    ]
    o = np.float32([c[0] for c in cases])
    d = np.float32([c[1] for c in cases])
    with np.errstate(divide="ignore"):
        for side in (1.0, 2.0):
            pick = [i for i, c in enumerate(cases) if c[2] == side]
            start, end = box_limits_jit(o[pick], d[pick], side)
            assert start.shape == end.shape == (len(pick), 1)
            expected = np.float32([cases[i][3] for i in pick])
            np.testing.assert_allclose(np.c_[start, end], expected, rtol=1e-6)
            for i, j in enumerate(pick):
                np.testing.assert_allclose(
                    [start[i, 0], end[i, 0]], box_limits_eg3d(o[j], d[j], side), rtol=1e-6
                )


def test_box_ray_limits_random_rays_match_eg3d():
    rng = np.random.default_rng(18)
    o = rng.normal(size=(4, 16, 3))
    o = 2.7 * o / np.linalg.norm(o, axis=-1, keepdims=True)
    d = -o + rng.normal(scale=1.0, size=o.shape)  # roughly towards the box; some miss
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    start, end = box_limits_jit(np.float32(o), np.float32(d), 1.0)
    assert start.shape == (4, 16, 1)
    ref = np.array(
        [
            box_limits_eg3d(a, b, 1.0)
            for a, b in zip(o.reshape(-1, 3), d.reshape(-1, 3), strict=True)
        ]
    )
    hits = ref[:, 0] != -1
    assert 0 < hits.sum() < len(ref)  # both kinds
    np.testing.assert_allclose(np.c_[start.reshape(-1), end.reshape(-1)], ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# the renderer on analytic scenes


def plane_decoder(feats):
    """Colour from the (x, y) plane's channels 0–2, raw σ from the (x, z) plane's channel 3.

    feats [B, 3, M, 4] -> rgb [B, M, 3], sigma [B, M, 1].
    """
    return feats[:, 0, :, :3], feats[:, 1, :, 3:]


def constant_decoder(feats):
    """σ = 1.5 everywhere, white: feats [B, 3, M, C] -> rgb [B, M, 3], sigma [B, M, 1]."""
    return jnp.ones_like(feats[:, 0, :, :3]), jnp.full_like(feats[:, 0, :, :1], 1.5)


@functools.cache
def render_jit(cfg: RenderConfig, decoder=plane_decoder):
    """One compile per config and decoder, shared by scenes that differ only in the planes."""
    return jax.jit(lambda planes, o, d, u: render(planes, decoder, o, d, cfg, u))


RES = 16  # plane resolution; pixel centres at (2j + 1)/RES − 1
CENTRES = (2 * np.arange(RES) + 1) / RES - 1
RAYS_XY = [[0, 0], [0.2, -0.1], [-0.3, 0.3]]  # well inside the outermost pixel centres


def scene_planes(colour, sigma_of_z):
    """Constant colour on the (x, y) plane; σ(z) on the (x, z) plane (box_warp 1: z = v/2).

    Bilinear sampling reproduces constants and linear ramps exactly between pixel centres.
    """
    planes = np.zeros((1, 3, RES, RES, 4), np.float32)
    planes[0, 0, :, :, :3] = colour
    planes[0, 1, :, :, 3] = sigma_of_z(0.5 * CENTRES)[:, None]  # rows (v) carry z
    return planes


def axis_rays(xy):
    """Rays along +z from z = −2 through (x, y) for each row of xy [R, 2]."""
    xy = np.float32(xy)
    origins = np.c_[xy, np.full(len(xy), -2.0, np.float32)][None]
    return origins, np.broadcast_to(np.float32([0, 0, 1]), origins.shape)


def zero_jitter(cfg, num_rays, seed=0):
    """u = 0 for the stratified draw (coarse depths = linspace(start, end)), random pdf u."""
    pdf = np.random.default_rng(seed).uniform(0, 1, (num_rays, cfg.depth_resolution_importance))
    return RenderUniforms(
        np.zeros((1, num_rays, cfg.depth_resolution, 1), np.float32), np.float32(pdf)
    )


# Coarse 16 + importance 16; the coarse-only branch is covered by the 'auto' test below.
CFG = RenderConfig(ray_start=1.6, ray_end=2.4, depth_resolution=16, depth_resolution_importance=16)


def test_render_constant_density():
    """Constant density ρ: Σ weights = 1 − Π(1 − α_i) = 1 − exp(−ρ (z_last − z_first)) for
    any sample placement; with u = 0 the samples span exactly [start, end]."""
    cfg, importance = CFG, CFG.depth_resolution_importance
    colour = np.float32([0.2, 0.5, 0.9])
    planes = scene_planes(colour, lambda z: np.full_like(z, 1.5))
    out = render_jit(cfg)(planes, *axis_rays(RAYS_XY), zero_jitter(cfg, 3))
    total = 1 - math.exp(-softplus(1.5 - 1) * (2.4 - 1.6))
    np.testing.assert_allclose(out["weights_sum"], total, rtol=1e-5)
    np.testing.assert_allclose(
        out["features"], np.broadcast_to(colour * total * 2 - 1, (1, 3, 3)), rtol=1e-5, atol=1e-6
    )
    n = 16 + importance
    assert out["weights"].shape == (1, 3, n - 1, 1) and out["depth"].shape == (1, 3, 1)
    assert out["depths_fine"].shape == (1, 3, importance, 1)
    depths = np.asarray(out["depths_all"])
    assert np.all(np.diff(depths, axis=2) >= 0)  # merged and sorted
    np.testing.assert_allclose(
        depths[:, :, [0, -1], 0], np.broadcast_to([1.6, 2.4], (1, 3, 2)), rtol=1e-6
    )


def test_render_linear_sigma_is_the_midpoint_rule():
    """σ(z) = a + b·z (read through the (x, z) plane, which pins the plane axes): Σ weights is
    1 − exp(−Σ_i softplus(σ(mid_i) − 1)·δ_i) on the rendered depths, and that is
    1 − exp(−∫ softplus(σ(z) − 1) dz) up to the midpoint rule's O(δ²) error."""
    a, b = 1.0, 4.0
    cfg = CFG
    out = render_jit(cfg)(
        scene_planes(0.5, lambda z: a + b * z), *axis_rays(RAYS_XY), zero_jitter(cfg, 3, 1)
    )
    t = np.float64(out["depths_all"])[..., 0]
    mid, delta = 0.5 * (t[..., 1:] + t[..., :-1]) - 2.0, np.diff(t, axis=-1)  # z = t − 2
    midpoint = np.sum(softplus(a + b * mid - 1) * delta, axis=-1)
    np.testing.assert_allclose(out["weights_sum"][..., 0], 1 - np.exp(-midpoint), rtol=1e-5)
    z = np.linspace(-0.4, 0.4, 100001)
    integral = np.trapezoid(softplus(a + b * z - 1), z)
    np.testing.assert_allclose(out["weights_sum"], 1 - math.exp(-integral), atol=2e-4)


def test_render_auto_limits_use_the_box():
    """ray_start = ray_end = None: samples span each ray's box entry/exit; a ray that misses
    gets [min start, max start] of the rays that hit (EG3D's renderer.py). Coarse only:
    with σ = 1.5 everywhere, Σ weights = 1 − exp(−ρ (end − start))."""
    cfg = RenderConfig(
        ray_start=None, ray_end=None, depth_resolution=6, depth_resolution_importance=0
    )
    origins = np.float32([[[0, 0, -2], [0.3, 0, -2.5], [3, 0, -2]]])
    dirs = np.float32([[[0, 0, 1]] * 3])
    planes = np.zeros((1, 3, 4, 4, 3), np.float32)
    out = render_jit(cfg, constant_decoder)(planes, origins, dirs, zero_jitter(cfg, 3))
    d = np.asarray(out["depths_coarse"])[0, :, :, 0]
    np.testing.assert_allclose(d[0], np.linspace(1.5, 2.5, 6), rtol=1e-6)
    np.testing.assert_allclose(d[1], np.linspace(2.0, 3.0, 6), rtol=1e-6)
    np.testing.assert_allclose(d[2], np.linspace(1.5, 2.0, 6), rtol=1e-6)
    chord = np.array([1.0, 1.0, 0.5])
    total = 1 - np.exp(-softplus(1.5 - 1) * chord)
    np.testing.assert_allclose(out["weights_sum"][0, :, 0], total, rtol=1e-5)
    np.testing.assert_allclose(
        out["features"][0], np.broadcast_to(2 * total[:, None] - 1, (3, 3)), rtol=1e-5
    )
    assert "depths_fine" not in out and out["weights"].shape == (1, 3, 5, 1)
