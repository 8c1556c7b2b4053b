"""Guidance images at known cameras, from the 3D head model, through the project's renderer.

Image i's camera is make_mannequin's (`view_angles`: yaw and pitch uniform in their ranges
from `np.random.default_rng([seed, i])`, orbiting the head centre at `radius` with `fov`),
so a data_gen set and a mannequin set with the same seed share cameras. The head is the
procedural mannequin (identity i // views_per_id, `make_mannequin.render_views`) or a
user's mesh with OpenPose keypoints (`styleavatar_jax.heads.mesh`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from styleavatar_jax.heads import guidance, mesh, openpose
from styleavatar_jax.heads.make_mannequin import (
    MannequinDatasetConfig,
    render_views,
    view_angles,
    view_labels,
)


@dataclasses.dataclass(frozen=True)
class Cameras:
    """How cameras are drawn (DESIGN §5) and how many images share a mannequin."""

    resolution: int = 512
    seed: int = 0
    yaw_range: tuple[float, float] = (-180.0, 180.0)  # degrees
    pitch_range: tuple[float, float] = (-30.0, 30.0)  # degrees
    radius: float = 2.7  # cameras.RADIUS
    fov: float = 18.837  # degrees, cameras.FOV_DEGREES
    views_per_id: int = 1  # mannequin identity of image i: i // views_per_id

    def mannequin(self, kinds: tuple[str, ...], num_images: int = 1) -> MannequinDatasetConfig:
        """The equivalent make_mannequin config (which also validates the ranges)."""
        return MannequinDatasetConfig(
            num_ids=max(1, -(-num_images // self.views_per_id)), views_per_id=self.views_per_id,
            resolution=self.resolution, seed=self.seed, yaw_range=self.yaw_range,
            pitch_range=self.pitch_range, radius=self.radius, fov=self.fov,
            guidance=tuple(k for k in ("depth", "pose") if k in kinds),
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class MeshHead:
    """A user's head mesh with its 3D OpenPose keypoints."""

    mesh: object  # trimesh.Trimesh
    keypoints: mesh.Keypoints
    digest: str  # sha256 of the mesh and keypoints files

    @classmethod
    def load(cls, mesh_path: str | Path, keypoints_path: str | Path | None = None) -> MeshHead:
        kp_path = Path(keypoints_path) if keypoints_path else mesh.keypoints_path(mesh_path)
        head, kp = mesh.load_head(mesh_path, kp_path)
        sha = hashlib.sha256(Path(mesh_path).read_bytes() + kp_path.read_bytes()).hexdigest()
        return cls(head, kp, sha)

    def __reduce__(self):
        # Pickled (to Ray actors) without trimesh's caches: trimesh 5.2 pickles a built rtree
        # empty, and closest-point queries on the copy then fail.
        return MeshHead, (self.mesh.copy(), self.keypoints, self.digest)


def render_guidance(cams: Cameras, kinds: tuple[str, ...], indices: np.ndarray,
                    head: MeshHead | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Images `indices` [N] -> label [N, 25], yaw/pitch [N] (degrees), identity [N], and
    uint8 [N, H, W, 3] guidance images for each of `kinds` ('pose': OpenPose drawing,
    'depth': MiDaS-style inverse depth), from the mannequin or from `head`."""
    indices = np.asarray(indices, np.int64)
    cfg = cams.mannequin(kinds, int(indices.max()) + 1)
    if head is None:
        views = render_views(cfg, indices)
        return {k: views[k] for k in ("label", "yaw", "pitch", "identity", *kinds)}
    yaw, pitch = view_angles(cfg, indices)
    c = view_labels(cfg, yaw, pitch)
    res = cams.resolution
    out = mesh.render_mesh(head.mesh, c, res)
    result = dict(label=c, yaw=yaw, pitch=pitch, identity=np.zeros(len(indices), np.int64))
    if "depth" in kinds:
        result["depth"] = guidance.depth_guidance(out["depth"], out["mask"])
    if "pose" in kinds:
        vis = mesh.mesh_keypoints_2d(head.mesh, head.keypoints, c, out["depth"])
        result["pose"] = openpose.draw_poses(*vis, height=res, width=res)
    return result
