"""3D Gaussian splats rasterised as the reference 3D Gaussian Splatting code does.

Kerbl et al. 2023 (graphdeco-inria/diff-gaussian-rasterization, cuda_rasterizer/forward.cu):
each Gaussian (mean μ, covariance Σ = R S Sᵀ Rᵀ from a unit quaternion and per-axis scales)
projects to a 2D Gaussian with the EWA covariance J W Σ Wᵀ Jᵀ (W the world-to-camera
rotation, J the Jacobian of the perspective projection at μ, its x/z and y/z clamped to
1.3× the half field of view) plus 0.3 px² on the diagonal (a low-pass filter); Gaussians
closer than 0.2 are culled. At pixel p it has alpha = min(0.99, o·exp(−½ dᵀ Σ2D⁻¹ d)),
d = p − μ2D, dropped below 1/255; sorted by camera depth, they are composited front to
back, C = Σ cᵢ αᵢ Tᵢ, and a pixel stops at the first Gaussian that would take its
transmittance below 10⁻⁴; the background adds T·bg.

Like the reference, the image is cut into 16² tiles and a Gaussian is composited only in
the tiles its 3σ square (radius ceil(3·√λmax) px) touches. Differences (ours): cameras are
EG3D labels (OpenCV cam2world, intrinsics normalised by the image size; pixel i's centre
at (i + ½)/res, as `render.rays.pixel_rays`), so pixel coordinates here have centres at
i + ½ (the reference's at i); colours are RGB (degree-0 spherical harmonics already
evaluated, clamped below at 0 as the reference does); each tile composites its Gaussians
as one dense [tile², capacity] block (capacity: the most Gaussians on any tile), vectorised
rather than a loop per pixel. Fine for tens of thousands of splats at 64²–256², not a
real-time renderer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

NEAR = 0.2  # forward.cu in_frustum: p_view.z <= 0.2 is culled
DILATION = 0.3  # px² added to the 2D covariance's diagonal
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4  # a pixel stops before its transmittance would fall below this


def quat_to_rotmat(quats: jax.Array) -> jax.Array:
    """Quaternions [..., 4] (w, x, y, z; normalised here, as the reference) -> rotation
    matrices [..., 3, 3] (3DGS build_rotation)."""
    q = quats / jnp.linalg.norm(quats, axis=-1, keepdims=True)
    r, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - r * z), 2 * (x * z + r * y)],
        [2 * (x * y + r * z), 1 - 2 * (x * x + z * z), 2 * (y * z - r * x)],
        [2 * (x * z - r * y), 2 * (y * z + r * x), 1 - 2 * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(row, -1) for row in rows], -2)


def covariances(scales: jax.Array, quats: jax.Array) -> jax.Array:
    """scales [N, 3] (standard deviations), quats [N, 4] -> Σ = R S Sᵀ Rᵀ [N, 3, 3]."""
    m = quat_to_rotmat(quats) * scales[:, None, :]  # R S
    return jnp.einsum("nij,nkj->nik", m, m, precision="highest")


def project(means, cov3d, cam2world, intrinsics, resolution: int):
    """3D Gaussians -> their 2D images in one camera (3DGS preprocessCUDA).

    means [N, 3], cov3d [N, 3, 3] (world), cam2world [4, 4] (OpenCV), intrinsics [3, 3]
    (normalised) -> xy [N, 2] (pixels, centres at i + ½), depth [N] (camera z),
    conic [N, 3] (the inverse of the dilated 2D covariance [[a, b], [b, c]]), cov2d (a, b,
    c) [N] each, valid [N] bool.
    """
    rot = cam2world[:3, :3].T  # world -> camera
    t = (means - cam2world[:3, 3]) @ rot.T  # [N, 3]
    fx, fy = intrinsics[0, 0] * resolution, intrinsics[1, 1] * resolution
    cx, cy = intrinsics[0, 2] * resolution, intrinsics[1, 2] * resolution
    z = t[:, 2]
    zs = jnp.where(z > NEAR, z, 1.0)  # culled anyway; keeps the maths finite
    # forward.cu computeCov2D: the Jacobian at a point clamped to 1.3x the half-FOV.
    lim_x = 1.3 * 0.5 / intrinsics[0, 0]
    lim_y = 1.3 * 0.5 / intrinsics[1, 1]
    tx = jnp.clip(t[:, 0] / zs, -lim_x, lim_x) * zs
    ty = jnp.clip(t[:, 1] / zs, -lim_y, lim_y) * zs
    zero = jnp.zeros_like(zs)
    jac = jnp.stack([jnp.stack([fx / zs, zero, -fx * tx / zs**2], -1),
                     jnp.stack([zero, fy / zs, -fy * ty / zs**2], -1)], -2)  # fmt: skip
    m = jnp.einsum("nij,jk->nik", jac, rot, precision="highest")  # J W [N, 2, 3]
    cov = jnp.einsum("nij,njk,nlk->nil", m, cov3d, m, precision="highest")  # [N, 2, 2]
    a = cov[:, 0, 0] + DILATION
    b = cov[:, 0, 1]
    c = cov[:, 1, 1] + DILATION
    det = a * c - b * b
    ok = det > 0
    inv = 1.0 / jnp.where(ok, det, 1.0)
    conic = jnp.stack([c * inv, -b * inv, a * inv], -1)
    xy = jnp.stack([fx * t[:, 0] / zs + cx, fy * t[:, 1] / zs + cy], -1)
    return xy, z, conic, (a, b, c), (z > NEAR) & ok


def radii(a, b, c):
    """2D covariance entries a, b, c [N] (dilated) -> 3DGS's screen radius ceil(3·√λmax)."""
    mid = 0.5 * (a + c)
    det = a * c - b**2
    lam = mid + jnp.sqrt(jnp.maximum(0.1, mid * mid - det))
    return jnp.ceil(3.0 * jnp.sqrt(lam))


def tile_ranges(xy, radius, resolution: int, tile: int):
    """3DGS getRect: the tiles a Gaussian's 3σ square touches -> lo, hi [N, 2] (x, y tile
    indices, hi exclusive). xy in our pixel coordinates (centres at i + ½)."""
    grid = -(-resolution // tile)
    p = xy - 0.5  # the reference's pixel coordinates: centres at integers
    lo = jnp.clip(jnp.floor((p - radius[:, None]) / tile), 0, grid)
    hi = jnp.clip(jnp.floor((p + radius[:, None] + tile - 1) / tile), 0, grid)
    return lo.astype(jnp.int32), hi.astype(jnp.int32)


def _tile_lists(means, cov3d, opacities, label, resolution, tile):
    """One view -> per tile, overlap [T, N] bool (Gaussian touches tile), depth [N], and
    the projected xy, conic."""
    cam2world, intrinsics = label[:16].reshape(4, 4), label[16:25].reshape(3, 3)
    xy, depth, conic, cov2d, valid = project(means, cov3d, cam2world, intrinsics, resolution)
    rad = radii(*cov2d)
    lo, hi = tile_ranges(xy, rad, resolution, tile)
    grid = -(-resolution // tile)
    ty, tx = (a.reshape(-1) for a in jnp.meshgrid(jnp.arange(grid), jnp.arange(grid),
                                                   indexing="ij"))  # fmt: skip
    touched = (hi[:, 0] > lo[:, 0]) & (hi[:, 1] > lo[:, 1])
    live = valid & touched & (rad > 0) & (opacities > 0)
    overlap = ((tx[:, None] >= lo[None, :, 0]) & (tx[:, None] < hi[None, :, 0])
               & (ty[:, None] >= lo[None, :, 1]) & (ty[:, None] < hi[None, :, 1])
               & live[None])  # fmt: skip
    return overlap, depth, xy, conic


def _composite_tile(px, py, xy, conic, opac, rgb, background):
    """Pixels px, py [P] and their tile's Gaussians sorted front to back ([K, ...], opacity 0
    for padding) -> rgb [P, 3], transmittance [P] (forward.cu renderCUDA)."""
    dx, dy = px[:, None] - xy[None, :, 0], py[:, None] - xy[None, :, 1]  # [P, K]
    power = -0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) - conic[:, 1] * dx * dy
    alpha = jnp.minimum(ALPHA_MAX, opac * jnp.exp(jnp.minimum(power, 0.0)))
    alpha = jnp.where((power <= 0) & (alpha >= ALPHA_MIN), alpha, 0.0)
    incl = jnp.cumprod(1 - alpha, axis=1)  # T after each Gaussian
    excl = jnp.concatenate([jnp.ones_like(incl[:, :1]), incl[:, :-1]], axis=1)  # T before
    keep = incl >= T_MIN  # a prefix: T only falls; the reference stops at the first failure
    w = jnp.where(keep, alpha * excl, 0.0)
    color = jnp.einsum("pk,kc->pc", w, rgb, precision="highest")
    trans = jnp.min(jnp.where(keep, incl, 1.0), axis=1)
    return color + trans[:, None] * background, trans


@functools.partial(jax.jit, static_argnames=("resolution", "tile"))
def tile_counts(means, scales, quats, opacities, c, *, resolution: int, tile: int = 16):
    """-> the most Gaussians any tile of any view holds (the `capacity` rasterize needs)."""
    cov3d = covariances(scales, quats)

    def one(label):
        overlap = _tile_lists(means, cov3d, opacities, label, resolution, tile)[0]
        return jnp.max(jnp.sum(overlap, axis=1))

    return jnp.max(jax.lax.map(one, jnp.asarray(c, jnp.float32)))


@functools.partial(jax.jit, static_argnames=("resolution", "tile", "capacity"))
def rasterize_tiles(means, scales, quats, opacities, colors, c, background, *,
                    resolution: int, tile: int, capacity: int):  # fmt: skip
    """`rasterize` with a fixed per-tile capacity (the `capacity` nearest Gaussians of each
    tile are composited; pass at least `tile_counts` to drop none)."""
    cov3d = covariances(scales, quats)
    background = jnp.asarray(background, jnp.float32)
    rgb_all = jnp.maximum(colors, 0.0)
    grid = -(-resolution // tile)
    k = min(capacity, means.shape[0])
    t = jnp.arange(tile, dtype=jnp.float32) + 0.5
    oy, ox = (a.reshape(-1) for a in jnp.meshgrid(t, t, indexing="ij"))  # [tile²]

    def one(label):
        overlap, depth, xy, conic = _tile_lists(means, cov3d, opacities, label, resolution, tile)

        def tile_image(args):
            i, ov = args
            key = jnp.where(ov, -depth, -jnp.inf)
            top, idx = jax.lax.top_k(key, k)  # nearest first
            opac = jnp.where(top > -jnp.inf, opacities[idx], 0.0)
            px = ox + (i % grid) * tile
            py = oy + (i // grid) * tile
            return _composite_tile(px, py, xy[idx], conic[idx], opac, rgb_all[idx], background)

        img, trans = jax.lax.map(tile_image, (jnp.arange(grid * grid), overlap))
        size = grid * tile  # tiles cover the image, cropped below
        img = img.reshape(grid, grid, tile, tile, 3).transpose(0, 2, 1, 3, 4).reshape(size, size, 3)
        trans = trans.reshape(grid, grid, tile, tile).transpose(0, 2, 1, 3).reshape(size, size)
        return img[:resolution, :resolution], 1 - trans[:resolution, :resolution]

    return jax.lax.map(one, jnp.asarray(c, jnp.float32))


def rasterize(means, scales, quats, opacities, colors, c, background, *, resolution: int,
              tile: int = 16):  # fmt: skip
    """Render 3D Gaussians at EG3D cameras, as the reference rasteriser (module docstring).

    means [N, 3], scales [N, 3] (standard deviations, world units), quats [N, 4] (w, x, y, z),
    opacities [N] in [0, 1], colors [N, 3] (RGB), c [V, 25] (EG3D labels), background [3]
    -> image [V, res, res, 3], alpha [V, res, res] (1 − final transmittance).

    Tiles of tile² pixels (16, as the reference) each composite the Gaussians whose 3σ
    square touches them, nearest first: memory and work ~ tile² × the most Gaussians on
    one tile (`tile_counts`, measured first; one compile per capacity, rounded up to a
    multiple of 256).
    """
    args = [jnp.asarray(a, jnp.float32) for a in (means, scales, quats, opacities, colors, c)]
    means, scales, quats, opacities, colors, c = args
    count = int(tile_counts(means, scales, quats, opacities, c, resolution=resolution,
                            tile=tile))  # fmt: skip
    capacity = max(256, -(-count // 256) * 256)
    return rasterize_tiles(means, scales, quats, opacities, colors, c,
                           jnp.asarray(background, jnp.float32), resolution=resolution,
                           tile=tile, capacity=capacity)  # fmt: skip
