"""Rendering distance fields (the mannequin, or any SDF) by sphere tracing at EG3D cameras.

Rays are EG3D's (`render.rays.pixel_rays`: one per pixel centre, unit directions), so a
render and a generator image of the same label see the same pixels; depth is the ray
distance, as EG3D's renderer reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from styleavatar_jax import cameras
from styleavatar_jax.heads import mannequin, sdf
from styleavatar_jax.heads.mannequin import Identity
from styleavatar_jax.render.rays import pixel_rays


def render_rays(ident: Identity, origins, dirs, *, background=None):
    """Trace one identity's rays origins/dirs [R, 3] -> dict of per-ray outputs:

    rgb [R, 3] in [0, 1] (background colour where missed), depth [R] (ray distance, +inf
    where missed), mask [R] bool, normal [R, 3] (world, unit; 0 where missed), part [R]
    int32 (index into mannequin.PARTS; −1 where missed).
    """
    dist = partial(mannequin.distance, ident)
    t, hit = sdf.sphere_trace(dist, origins, dirs, bound=mannequin.BOUND)
    p = origins + jnp.where(hit, t, 0.0)[..., None] * dirs
    n = sdf.normals(dist, p)
    part = mannequin.part_index(mannequin.part_distances(ident, p))
    rgb = mannequin.shade(ident, p, n, part)
    bg = jnp.asarray(mannequin.BACKGROUND if background is None else background, jnp.float32)
    return dict(
        rgb=jnp.where(hit[..., None], rgb, bg),
        depth=t,
        mask=hit,
        normal=jnp.where(hit[..., None], n, 0.0),
        part=jnp.where(hit, part, -1).astype(jnp.int32),
    )


def _per_image(fn: Callable, per_image_args, c, resolution: int, chunk: int):
    """Run fn(args_i, origins [r, 3], dirs [r, 3]) -> dict of [r, ...] over each image's
    rays in chunks of r = `chunk` -> dict of [B, H, W, ...]."""
    cam2world, intrinsics = cameras.split_label(jnp.asarray(c, jnp.float32))
    origins, dirs = pixel_rays(cam2world, intrinsics, resolution)  # [B, R, 3]
    b, r = origins.shape[:2]
    chunk = min(chunk, r)
    pad = -r % chunk
    origins, dirs = (jnp.pad(x, ((0, 0), (0, pad), (0, 0)), mode="edge") for x in (origins, dirs))

    def one(args):
        arg, o, d = args
        o, d = o.reshape(-1, chunk, 3), d.reshape(-1, chunk, 3)
        out = jax.lax.map(lambda od: fn(arg, *od), (o, d))
        return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:r], out)

    out = jax.lax.map(one, (per_image_args, origins, dirs))
    shape = (b, resolution, resolution)
    return {k: v.reshape(shape + v.shape[2:]) for k, v in out.items()}


@partial(jax.jit, static_argnames=("resolution", "chunk"))
def render(ident: Identity, c, *, resolution: int, chunk: int = 16384, background=None):
    """Mannequins: identities [B] (leading axis on each field), labels c [B, 25] ->

    rgb [B, H, W, 3], depth [B, H, W], mask [B, H, W], normal [B, H, W, 3], part [B, H, W]
    (H = W = resolution). Rays are traced in chunks of `chunk` per image to bound memory.
    """
    fn = lambda i, o, d: render_rays(i, o, d, background=background)
    return _per_image(fn, ident, c, resolution, chunk)


@partial(jax.jit, static_argnames=("distance", "resolution", "bound", "chunk"))
def trace_depth(distance: Callable, c, *, resolution: int, bound: float, chunk: int = 16384):
    """Any distance field p [..., 3] -> d [...] (a hashable function), labels c [B, 25] ->
    depth [B, H, W] (ray distance, +inf where missed), mask [B, H, W], normal [B, H, W, 3]."""

    def fn(_, o, d):
        t, hit = sdf.sphere_trace(distance, o, d, bound=bound)
        n = sdf.normals(distance, o + jnp.where(hit, t, 0.0)[..., None] * d)
        return dict(depth=t, mask=hit, normal=jnp.where(hit[..., None], n, 0.0))

    return _per_image(fn, jnp.zeros(c.shape[0]), c, resolution, chunk)
