"""Multi-view consistency of a 3D generator: does the depth seen from one camera agree with
the depth seen from another?

For a pair of views A, B of one avatar (the same ws and planes, two cameras ~20° apart):
each pixel of A's depth map (the renderer's expected ray distance t, `image_depth`) is
lifted to the 3D point X = o_A + t·d_A on its pixel ray (render/rays.py), projected into B
with B's label (EG3D: OpenCV cam2world, normalised intrinsics), and B's depth is read
there by bilinear interpolation, t_B. Along B's ray through that point, B's surface is at
t_B and X at ‖X − o_B‖, so |t_B − ‖X − o_B‖| is the disagreement in scene units. A pixel
counts when X is foreground in A (t < max_depth), lands inside B's image in front of B,
the depths it interpolates agree within `edge_tol` (no depth edge: a silhouette between
head and background is a jump of ~0.5, a steep but continuous surface changes by a few
hundredths per pixel), and X is not hidden in B (‖X − o_B‖ ≤ t_B + occlusion_tol).
X *in front of* B's surface is not excused: B should have seen it. Reported: mean absolute
error over valid pixels (scene units; the FFHQ head is ~0.3 wide) and the fraction of A's
foreground that is valid.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from styleavatar_jax import cameras
from styleavatar_jax.render.rays import pixel_rays


class ReprojectionStats(NamedTuple):
    """Per pair [B]: Σ |error| over valid pixels, valid pixels, foreground pixels of A."""

    abs_error_sum: jax.Array
    num_valid: jax.Array
    num_foreground: jax.Array


def project(points: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """World points [B, M, 3], labels c [B, 25] -> pixel coordinates [B, M, 2] (x right,
    y down; pixel i spans [i, i+1), its centre at i + 0.5 as `pixel_rays`, in units of
    the normalised image: multiply by the resolution) and camera-space z [B, M]."""
    cam2world, k = cameras.split_label(c)
    rel = points - cam2world[:, None, :3, 3]
    cam = jnp.einsum("bmi,bij->bmj", rel, cam2world[:, :3, :3], precision="highest")  # Rᵀ(X − o)
    x, y, z = cam[..., 0] / cam[..., 2], cam[..., 1] / cam[..., 2], cam[..., 2]
    fx, fy, sk = k[:, None, 0, 0], k[:, None, 1, 1], k[:, None, 0, 1]
    u = fx * x + sk * y + k[:, None, 0, 2]  # inverse of pixel_rays' lift
    v = fy * y + k[:, None, 1, 2]
    return jnp.stack([u, v], -1), z


def _bilinear(depth: jax.Array, px: jax.Array, py: jax.Array):
    """depth [B, r, r], pixel-centre coordinates px, py [B, M] in [0, r − 1] -> value [B, M],
    range (max − min) [B, M] of the neighbours with non-zero weight."""
    b, r, _ = depth.shape
    x0 = jnp.clip(jnp.floor(px), 0, r - 2)
    y0 = jnp.clip(jnp.floor(py), 0, r - 2)
    fx, fy = px - x0, py - y0
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    flat = depth.reshape(b, r * r)
    corners = [(0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
               (1, 0, (1 - fx) * fy), (1, 1, fx * fy)]  # fmt: skip
    value = jnp.zeros_like(px)
    lo, hi = jnp.full_like(px, jnp.inf), jnp.full_like(px, -jnp.inf)
    for dy, dx, w in corners:
        d = jnp.take_along_axis(flat, (y0 + dy) * r + (x0 + dx), axis=1)
        value = value + w * d
        used = w > 1e-6
        lo, hi = jnp.where(used, jnp.minimum(lo, d), lo), jnp.where(used, jnp.maximum(hi, d), hi)
    return value, hi - lo


@functools.partial(jax.jit, static_argnames=("return_maps",))
def reprojection_error(depth_a, c_a, depth_b, c_b, *, occlusion_tol: float = 0.02,
                       edge_tol: float = 0.1, max_depth: float = jnp.inf,
                       return_maps: bool = False):  # fmt: skip
    """Depth maps depth_a, depth_b [B, r, r, 1] (ray distances) of views with labels
    c_a, c_b [B, 25] -> ReprojectionStats (module docstring); with return_maps also
    (error [B, r, r] (0 where invalid), valid [B, r, r] bool)."""
    b, r = depth_a.shape[0], depth_a.shape[1]
    cam2world_a, k_a = cameras.split_label(c_a)
    origins, dirs = pixel_rays(cam2world_a, k_a, r)  # [B, R, 3]
    t_a = depth_a.reshape(b, r * r)
    points = origins + t_a[..., None] * dirs
    uv, z = project(points, c_b)
    px, py = uv[..., 0] * r - 0.5, uv[..., 1] * r - 0.5
    inside = (z > 0) & (px >= 0) & (px <= r - 1) & (py >= 0) & (py <= r - 1)
    t_b, spread = _bilinear(depth_b[..., 0], px, py)
    dist = jnp.linalg.norm(points - cameras.split_label(c_b)[0][:, None, :3, 3], axis=-1)
    foreground = t_a < max_depth
    valid = foreground & inside & (spread <= edge_tol) & (dist <= t_b + occlusion_tol)
    error = jnp.where(valid, jnp.abs(t_b - dist), 0.0)
    stats = ReprojectionStats(error.sum(1), valid.sum(1), foreground.sum(1))
    if return_maps:
        return stats, (error.reshape(b, r, r), valid.reshape(b, r, r))
    return stats


def summarize(stats: ReprojectionStats) -> dict:
    """Stats of many pairs (arrays [N]) -> {'error': mean |error| over all valid pixels
    (scene units; None when none is valid), 'valid_fraction', 'pairs'}."""
    s = jax.tree.map(lambda x: np.asarray(x, np.float64), stats)
    valid, fg = float(s.num_valid.sum()), float(s.num_foreground.sum())
    return {
        "error": float(s.abs_error_sum.sum() / valid) if valid else None,
        "valid_fraction": valid / fg if fg else 0.0,
        "pairs": int(len(s.num_valid)),
    }


def pair_labels(yaw_deg, delta_deg: float, pitch_deg: float, camera: dict) -> np.ndarray:
    """Yaws [K] (degrees) -> labels [2K, 25]: views (yaw, pitch), (yaw + Δ, pitch)
    interleaved on the config's orbit (`camera`: radius, fov_degrees, pivot)."""
    from styleavatar_jax.sampling import view_labels

    yaw = np.radians(np.asarray(yaw_deg, np.float32))
    both = np.stack([yaw, yaw + np.radians(delta_deg)], 1).reshape(-1)
    return view_labels(both, np.full_like(both, np.radians(pitch_deg)), camera)


def generator_consistency(G, variables, seeds, settings, camera: dict, *, batch: int, mesh,
                          yaws_deg=tuple(range(0, 360, 45)), delta_deg: float = 20.0,
                          pitch_deg: float = 0.0, occlusion_tol: float = 0.02,
                          edge_tol: float = 0.1, max_depth: float | None = None,
                          progress=None) -> dict:  # fmt: skip
    """Consistency of G (variables) over `seeds`: each avatar, conditioned on the frontal
    camera (as `sampling`), rendered at every yaw in `yaws_deg` and at yaw + delta_deg
    (`generate.render_batches`; settings: a `sampling.SampleSettings`) -> `summarize` over
    all pairs, per view group of the first view ('groups': front/side/back), and the
    protocol. max_depth: A's pixels at or beyond it are background (None: the renderer's
    ray_end minus 2% of the depth range when numeric, else no mask)."""
    from styleavatar_jax.eval.generate import render_batches
    from styleavatar_jax.eval.groups import GROUPS, metric_group
    from styleavatar_jax.sampling import view_labels

    render = G.cfg.render
    if max_depth is None and render.ray_end is not None:
        max_depth = render.ray_end - 0.02 * (render.ray_end - render.ray_start)
    n = len(seeds)
    c_front = np.broadcast_to(view_labels(np.zeros(1), np.zeros(1), camera), (n, 25))
    labels = pair_labels(yaws_deg, delta_deg, pitch_deg, camera)  # [2K, 25]: a, b, a, b, ...

    def depth_at(label):
        c = np.broadcast_to(label, (n, 25))
        return np.concatenate([d for _, d in render_batches(
            G, variables, seeds, c_front, c, settings, batch=batch, mesh=mesh)])  # fmt: skip

    by_yaw = []
    for k in range(len(yaws_deg)):
        c_a, c_b = labels[2 * k], labels[2 * k + 1]
        by_yaw.append(jax.device_get(reprojection_error(
            depth_at(c_a), np.broadcast_to(c_a, (n, 25)),
            depth_at(c_b), np.broadcast_to(c_b, (n, 25)),
            occlusion_tol=occlusion_tol, edge_tol=edge_tol,
            max_depth=np.inf if max_depth is None else max_depth,
        )))  # fmt: skip
        if progress is not None:
            progress(n)
    cat = lambda parts: jax.tree.map(lambda *x: np.concatenate(x), *parts)
    groups = metric_group(np.radians(np.asarray(yaws_deg, np.float32)))
    result = summarize(cat(by_yaw)) | {"groups": {}}
    for g in GROUPS:
        members = [s for s, name in zip(by_yaw, groups, strict=True) if name == g]
        if members:
            result["groups"][g] = summarize(cat(members))
    result["protocol"] = {
        "seeds": n, "yaws_deg": [float(y) for y in yaws_deg], "delta_deg": delta_deg,
        "pitch_deg": pitch_deg, "occlusion_tol": occlusion_tol, "edge_tol": edge_tol,
        "max_depth": max_depth, "neural_res": settings.neural_res,
        "truncation_psi": settings.truncation_psi, "conditioning": "frontal camera",
    }  # fmt: skip
    return result
