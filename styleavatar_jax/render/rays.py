"""Camera rays, EG3D's `RaySampler` (volumetric_rendering/ray_sampler.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pixel_rays(cam2world: jax.Array, intrinsics: jax.Array, resolution: int):
    """One ray through each pixel centre, row-major (ray m = row·res + col).

    cam2world [B, 4, 4] (OpenCV: x right, y down, z forward), intrinsics [B, 3, 3]
    normalised by image size -> origins [B, R, 3], directions [B, R, 3] (unit), R = res².
    """
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    t = jnp.arange(resolution, dtype=jnp.float32) * (1.0 / resolution) + (0.5 / resolution)
    y_cam, x_cam = (a.reshape(1, -1) for a in jnp.meshgrid(t, t, indexing="ij"))
    x_lift = (x_cam - cx + cy * sk / fy - sk * y_cam / fy) / fx
    y_lift = (y_cam - cy) / fy
    ones = jnp.ones_like(x_lift * y_lift)
    points = jnp.stack([x_lift * ones, y_lift * ones, ones, ones], axis=-1)  # [B, R, 4]
    world = jnp.einsum("bij,brj->bri", cam2world, points, precision="highest")[..., :3]
    origin = cam2world[:, None, :3, 3]
    dirs = world - origin
    dirs = dirs / jnp.maximum(jnp.linalg.norm(dirs, axis=-1, keepdims=True), 1e-12)
    return jnp.broadcast_to(origin, dirs.shape), dirs


def box_ray_limits(origins: jax.Array, directions: jax.Array, box_side: float):
    """Entry/exit depths of rays in the axis-aligned cube [−s/2, s/2]³ (EG3D math_utils).

    origins/directions [..., 3] -> start, end [..., 1]; a missing ray gets start −1, end −2.
    """
    inv = 1.0 / directions
    lo = (-0.5 * box_side - origins) * inv
    hi = (0.5 * box_side - origins) * inv
    tmin = jnp.minimum(lo, hi)
    tmax = jnp.maximum(lo, hi)
    start = jnp.max(tmin, axis=-1, keepdims=True)
    end = jnp.min(tmax, axis=-1, keepdims=True)
    valid = end > start
    return jnp.where(valid, start, -1.0), jnp.where(valid, end, -2.0)
