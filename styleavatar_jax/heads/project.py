"""Projection of 3D points by an EG3D camera label, and their visibility in a depth map.

Image coordinates are normalised as EG3D's intrinsics are: uv ∈ [0, 1]², u to the right,
v down, pixel (row i, col j) of an H×W image has its centre at ((j + 0.5)/W, (i + 0.5)/H).
This is also OpenPose/ControlNet's normalised keypoint layout (x·W, y·H in pixels).
Depth is the distance along the (unit) ray from the camera origin, as EG3D's renderer
and our sphere tracer report it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from styleavatar_jax import cameras


@jax.jit
def project_points(points, c):
    """points [..., N, 3] (world), label c [..., 25] -> uv [..., N, 2], dist [..., N], z [..., N].

    uv is normalised image position (see module doc), dist the ray distance from the camera
    origin, z the camera-space depth (> 0 in front of the camera).
    """
    cam2world, k = cameras.split_label(c)
    rot, origin = cam2world[..., :3, :3], cam2world[..., None, :3, 3]
    rel = jnp.asarray(points, jnp.float32) - origin
    cam = jnp.einsum("...ji,...nj->...ni", rot, rel, precision="highest")  # R^T (p - o)
    z = cam[..., 2]
    zs = jnp.where(jnp.abs(z) > 1e-9, z, 1e-9)
    x, y = cam[..., 0] / zs, cam[..., 1] / zs
    fx, fy = k[..., None, 0, 0], k[..., None, 1, 1]
    sk, cx, cy = k[..., None, 0, 1], k[..., None, 0, 2], k[..., None, 1, 2]
    uv = jnp.stack([fx * x + sk * y + cx, fy * y + cy], axis=-1)
    return uv, jnp.linalg.norm(rel, axis=-1), z


def _min_filter3(depth: jax.Array) -> jax.Array:
    """[..., H, W] -> 3×3 minimum (edges padded with +inf)."""
    pad = [(0, 0)] * (depth.ndim - 2) + [(1, 1), (1, 1)]
    return jax.lax.reduce_window(
        depth,
        jnp.inf,
        jax.lax.min,
        (1,) * (depth.ndim - 2) + (3, 3),
        (1,) * depth.ndim,
        pad,
    )


@jax.jit
def visible_points(uv, dist, z, depth, tolerance=0.02, facing=None):
    """Which projected points the camera sees.

    uv [..., N, 2], dist [..., N], z [..., N] from `project_points`; depth [..., H, W]
    (ray distance, +inf or any value ≥ 1e9 where the ray misses); facing [..., N] optional
    cosine between each point's outward direction and the direction to the camera.
    A point is visible when it is in front of the camera, inside the image, not farther
    than the nearest surface around its pixel (3×3 minimum) + `tolerance`, and, when
    `facing` is given, facing > 0. -> bool [..., N].
    """
    h, w = depth.shape[-2:]
    near = _min_filter3(depth)
    col = jnp.clip(jnp.floor(uv[..., 0] * w).astype(jnp.int32), 0, w - 1)
    row = jnp.clip(jnp.floor(uv[..., 1] * h).astype(jnp.int32), 0, h - 1)
    flat = near.reshape(near.shape[:-2] + (h * w,))
    surface = jnp.take_along_axis(flat, row * w + col, axis=-1)
    inside = jnp.all((uv >= 0.0) & (uv < 1.0), axis=-1)
    ok = (z > 0) & inside & (dist <= surface + tolerance)
    if facing is not None:
        ok = ok & (facing > 0)
    return ok
