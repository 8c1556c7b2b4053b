"""Depth guidance images for ControlNet's depth model, made from an exact depth map.

ControlNet's depth annotator (annotator/midas) shows MiDaS's relative inverse depth,
min-max normalised per image: `d -= d.min(); d /= d.max(); (d * 255).clip(0, 255)
.astype(uint8)`, near = bright. We make the same picture from a rendered depth map: inverse
ray distance over the foreground, min-max normalised over the foreground onto [floor, 1]
(the nearest point is 255, the farthest foreground point floor·255, so the silhouette stays
visible as MiDaS's does; floor = 0.2 by default), background 0, truncated to uint8 as the
annotator does, grey in 3 channels. The OpenPose image is `heads.openpose.draw_pose`; a
"hybrid" guidance is the two images given to a multi-ControlNet, so it needs no helper.
"""

from __future__ import annotations

import numpy as np


def inverse_depth(depth, mask, floor: float = 0.0) -> np.ndarray:
    """depth [..., H, W] (ray distance), mask [..., H, W] bool -> float32 [..., H, W] in [0, 1].

    1/depth min-max normalised per image over the mask onto [floor, 1]; 0 outside it. An image whose
    foreground has one depth is 1 there; an empty mask gives zeros.
    """
    depth = np.asarray(depth, np.float64)
    mask = np.asarray(mask, bool)
    if depth.shape != mask.shape or depth.ndim < 2:
        raise ValueError(f"depth {depth.shape} and mask {mask.shape}: expected equal [..., H, W]")
    if np.any(mask & ~(np.isfinite(depth) & (depth > 0))):
        raise ValueError("depth: expected finite, positive ray distances wherever mask is set")
    inv = np.where(mask, 1.0 / np.where(mask, depth, 1.0), np.nan)
    lo = np.nanmin(inv, axis=(-2, -1), keepdims=True, initial=np.inf, where=mask)
    hi = np.nanmax(inv, axis=(-2, -1), keepdims=True, initial=-np.inf, where=mask)
    span = hi - lo
    norm = np.where(span > 0, (inv - lo) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(mask, floor + (1.0 - floor) * norm, 0.0).astype(np.float32)


def depth_guidance(depth, mask, floor: float = 0.2) -> np.ndarray:
    """depth [..., H, W] (ray distance), mask [..., H, W] bool -> uint8 [..., H, W, 3] grey,
    near = 255, farthest foreground = floor·255, background = 0 (module doc)."""
    grey = (
        (inverse_depth(depth, mask, floor).astype(np.float64) * 255.0).clip(0, 255).astype(np.uint8)
    )
    return np.repeat(grey[..., None], 3, axis=-1)
