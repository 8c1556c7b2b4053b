"""Tri-plane feature lookup: projection and bilinear sampling as EG3D's `sample_from_planes`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Which two coordinates index each plane's (width, height) axes. EG3D's generate_planes()
# projects onto (x,y), (x,z), (z,x): the y–z plane is never used. Kept as the default so
# converted checkpoints match; "corrected" uses (x,y), (x,z), (y,z).
PLANE_AXES = {
    "eg3d": ((0, 1), (0, 2), (2, 0)),
    "corrected": ((0, 1), (0, 2), (1, 2)),
}


def project(coords: jax.Array, axes: str = "eg3d") -> jax.Array:
    """coords [B, M, 3] -> plane coordinates [B, 3, M, 2]."""
    if axes not in PLANE_AXES:
        raise ValueError(f"plane axes {axes!r}: expected one of {sorted(PLANE_AXES)}")
    return jnp.stack([coords[..., list(ij)] for ij in PLANE_AXES[axes]], axis=1)


def grid_sample(features: jax.Array, uv: jax.Array) -> jax.Array:
    """torch grid_sample(bilinear, padding 'zeros', align_corners=False), channels last.

    features [N, H, W, C], uv [N, M, 2] in [−1, 1] (u along W, v along H) -> [N, M, C].
    """
    n, h, w, c = features.shape
    x = ((uv[..., 0] + 1) * w - 1) * 0.5
    y = ((uv[..., 1] + 1) * h - 1) * 0.5
    x0, y0 = jnp.floor(x), jnp.floor(y)
    flat = features.reshape(n, h * w, c)
    out = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - jnp.abs(x - xi)) * (1 - jnp.abs(y - yi))
            inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            idx = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).astype(jnp.int32)
            vals = jnp.take_along_axis(flat, idx[..., None], axis=1)  # [N, M, C]
            out = out + vals * jnp.where(inside, wgt, 0.0)[..., None].astype(vals.dtype)
    return out


def materialize(planes: jax.Array) -> jax.Array:
    """planes [..., C] unchanged, as a buffer of their own (an identity matmul over C).

    XLA:CPU fuses the elementwise producer of the planes (the backbone's last skip add:
    up-sampled image + ToRGB output + bias, and the transpose to [B, 3, H, W, C]) into
    every `grid_sample` gather fusion, recomputing it per gathered element; reading two
    buffers there keeps LLVM from vectorising the loop and the renderer ran ~4x slower
    (BENCHMARKS, generator on CPU). An optimization barrier does not stop it (XLA removes
    barriers before fusion); a dot is never fused into a loop fusion, so its output is
    materialised once. x·1 + Σ 0·y is exact for finite values, in "highest" precision.
    """
    eye = jnp.eye(planes.shape[-1], dtype=planes.dtype)
    return jnp.einsum("...c,cd->...d", planes, eye, precision="highest")


def sample_planes(planes: jax.Array, coords: jax.Array, *, box_warp: float, axes: str = "eg3d"):
    """planes [B, 3, H, W, C], coords [B, M, 3] -> features [B, 3, M, C]."""
    b, p, h, w, c = planes.shape
    uv = project(coords * (2.0 / box_warp), axes).reshape(b * p, -1, 2)
    out = grid_sample(planes.reshape(b * p, h, w, c), uv)
    return out.reshape(b, p, -1, c)
