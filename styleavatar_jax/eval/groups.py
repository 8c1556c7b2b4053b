"""View groups for per-view metrics: front, side (left ∪ right) and back.

`cameras.view_group` bins yaw into 4 coarse bins of 90° (front |yaw| < 45°, left/right
45°–135°, back beyond); metrics merge left and right so each group holds enough images
for a covariance (and a mirrored dataset has both sides in equal measure anyway).
"""

from __future__ import annotations

import numpy as np

from styleavatar_jax import cameras

GROUPS = ("front", "side", "back")
_FROM_COARSE = {"front": "front", "left": "side", "right": "side", "back": "back"}


def metric_group(yaw) -> np.ndarray:
    """yaw [...] (radians) -> 'front' | 'side' | 'back' [...] (str array)."""
    coarse = np.asarray(cameras.view_group(np.asarray(yaw, np.float32)))
    return np.vectorize(_FROM_COARSE.__getitem__, otypes=[str])(coarse).astype("<U5")


def label_groups(labels) -> np.ndarray:
    """EG3D labels [N, 25] -> metric_group of each camera's yaw about the world origin [N]."""
    cam2world, _ = cameras.split_label(np.asarray(labels, np.float32))
    yaw, _, _ = cameras.angles_from_pose(cam2world)
    return metric_group(np.asarray(yaw))
