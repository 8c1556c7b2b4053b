"""EG3D's `ImportanceRenderer`: coarse pass, importance pass, compositing.

A pure function over arrays: the tri-plane decoder comes in as a callable and every random
draw comes in as `RenderUniforms` (from `draw_uniforms(key, ...)` or a reference run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from styleavatar_jax.render.composite import composite
from styleavatar_jax.render.planes import PLANE_AXES, sample_planes
from styleavatar_jax.render.rays import box_ray_limits
from styleavatar_jax.render.sampling import (
    importance_depths,
    stratified_depths,
    stratified_disparity_depths,
)

# features [B, 3, M, C] -> (rgb [B, M, C'], sigma [B, M, 1])
Decoder = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Renderer settings; defaults are EG3D's FFHQ ones (train.py rendering_options)."""

    ray_start: float | None = 2.25  # None (with ray_end None) = EG3D 'auto': the box's limits
    ray_end: float | None = 3.3
    depth_resolution: int = 48  # stratified samples per ray
    depth_resolution_importance: int = 48  # importance samples per ray (0 = coarse only)
    box_warp: float = 1.0  # side of the cube the planes span
    disparity_space_sampling: bool = False
    white_back: bool = False
    plane_axes: str = "eg3d"  # or "corrected" (see render/planes.py)

    def __post_init__(self):
        if (self.ray_start is None) != (self.ray_end is None):
            raise ValueError("render: ray_start and ray_end must both be numbers or both None")
        if self.depth_resolution < 2:
            raise ValueError(f"render.depth_resolution={self.depth_resolution}: expected >= 2")
        if self.plane_axes not in PLANE_AXES:
            raise ValueError(
                f"render.plane_axes={self.plane_axes!r}: expected one of {sorted(PLANE_AXES)}"
            )


class RenderUniforms(NamedTuple):
    """The renderer's two random draws (EG3D order): stratified [B, R, S, 1], pdf [B·R, K]."""

    stratified: jax.Array
    pdf: jax.Array


def draw_uniforms(key: jax.Array, batch: int, num_rays: int, cfg: RenderConfig) -> RenderUniforms:
    k1, k2 = jax.random.split(key)
    return RenderUniforms(
        jax.random.uniform(k1, (batch, num_rays, cfg.depth_resolution, 1)),
        jax.random.uniform(k2, (batch * num_rays, cfg.depth_resolution_importance)),
    )


def _ray_limits(origins, directions, cfg: RenderConfig):
    if cfg.ray_start is not None:
        return cfg.ray_start, cfg.ray_end
    # EG3D: rays that miss the box take the extreme starts of the rays that hit it.
    start, end = box_ray_limits(origins, directions, cfg.box_warp)
    valid = end > start
    any_valid = jnp.any(valid)
    lo = jnp.min(jnp.where(valid, start, jnp.inf))
    hi = jnp.max(jnp.where(valid, start, -jnp.inf))
    start = jnp.where(valid | ~any_valid, start, lo)
    end = jnp.where(valid | ~any_valid, end, hi)
    return start, end


def render(
    planes: jax.Array,
    decoder: Decoder,
    origins: jax.Array,
    directions: jax.Array,
    cfg: RenderConfig,
    uniforms: RenderUniforms,
) -> dict[str, jax.Array]:
    """planes [B, 3, H, W, C], origins/directions [B, R, 3] ->
    features [B, R, C'], depth [B, R, 1], weights_sum [B, R, 1], plus the intermediate
    samples (depths_coarse, sigma_coarse, weights_coarse, depths_fine, sigma_fine,
    depths_all, weights) for inspection; jit drops what is unused.
    """
    b, r, _ = origins.shape
    start, end = _ray_limits(origins, directions, cfg)
    sampler = stratified_disparity_depths if cfg.disparity_space_sampling else stratified_depths
    depths_c = sampler(uniforms.stratified, start, end, cfg.depth_resolution)  # [B, R, S, 1]

    def run(depths):
        s = depths.shape[2]
        coords = (origins[:, :, None] + depths * directions[:, :, None]).reshape(b, r * s, 3)
        feats = sample_planes(planes, coords, box_warp=cfg.box_warp, axes=cfg.plane_axes)
        rgb, sigma = decoder(feats)
        return rgb.reshape(b, r, s, -1), sigma.reshape(b, r, s, 1)

    rgb_c, sigma_c = run(depths_c)
    out = {"depths_coarse": depths_c, "sigma_coarse": sigma_c}
    if cfg.depth_resolution_importance > 0:
        _, _, weights_c = composite(rgb_c, sigma_c, depths_c, white_back=cfg.white_back)
        depths_f = importance_depths(uniforms.pdf, depths_c, weights_c)
        rgb_f, sigma_f = run(depths_f)
        depths = jnp.concatenate([depths_c, depths_f], axis=2)
        order = jnp.argsort(depths, axis=2)
        gather = lambda x: jnp.take_along_axis(
            x, jnp.broadcast_to(order, (*order.shape[:3], x.shape[-1])), 2
        )
        depths, rgb, sigma = (
            gather(depths),
            gather(jnp.concatenate([rgb_c, rgb_f], 2)),
            gather(jnp.concatenate([sigma_c, sigma_f], 2)),
        )
        out.update(
            weights_coarse=weights_c, depths_fine=depths_f, sigma_fine=sigma_f, depths_all=depths
        )
    else:
        depths, rgb, sigma = depths_c, rgb_c, sigma_c
    features, depth, weights = composite(rgb, sigma, depths, white_back=cfg.white_back)
    out.update(features=features, depth=depth, weights=weights, weights_sum=weights.sum(axis=2))
    return out
