"""A user's mesh as the 3D head model: loading, depth rendering, projected keypoints.

The mesh (OBJ, PLY, GLB/glTF; a scene's meshes are joined with their transforms applied)
must be in EG3D world units, as the mannequin is (`heads.mannequin`): the head inside the
box [−0.5, 0.5]³, y up, the face looking towards +z, the person's right towards −x, and
faces wound counter-clockwise seen from outside (normals point out).

OpenPose keypoints cannot be read off a bare mesh, so each mesh comes with a keypoints file,
`<mesh stem>.keypoints.json` next to it (`keypoints_path`), in the mesh's coordinates:

    {
      "body": {"nose": [0.0, 0.02, 0.45], "neck": [0.0, -0.35, 0.0], "r_eye": null, ...},
      "face": [[x, y, z] or null, ... 70 entries]
    }

- "body" (required): an object whose keys are names from `openpose.BODY_NAMES` (any subset;
  a missing name or null is a point the pose image never shows);
- "face" (optional): exactly 70 entries in OpenPose's face order (`openpose.FACE_GROUPS`:
  the 68 iBUG/dlib landmarks, then the right and left pupils), each [x, y, z] or null.

Visibility (`mesh_keypoints_2d`): every point must be in the image and not behind the
surface seen at its pixel, with the depth tolerance widened by the point's own distance
to the mesh, so joints inside the body (neck, shoulders, hips: OpenPose marks joint
centres) count as seen when the surface over them is, and are hidden when something nearer
(the head, an arm) covers them. Points on the surface (face points always, body points
within `SURFACE_DISTANCE` of it: nose, eyes, ears) must also face the camera: the outward
normal of the nearest mesh triangle has a positive cosine with the direction to the camera,
so back views show no face points. Joint centres skip that test: their nearest triangle's
normal says nothing about whether the joint is seen.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import numpy as np
import trimesh

from styleavatar_jax import cameras
from styleavatar_jax.heads import openpose
from styleavatar_jax.heads.project import project_points, visible_points
from styleavatar_jax.render.rays import pixel_rays

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf")
SURFACE_DISTANCE = 0.02  # body points nearer the mesh than this (world units) are on it
_rays = jax.jit(pixel_rays, static_argnames="resolution")  # one compile per resolution
_PAIRS_PER_CHUNK = 1 << 20  # ray-triangle pairs per batch: ~250 MB of temporaries


@dataclasses.dataclass(frozen=True)
class Keypoints:
    """A head's 3D OpenPose keypoints (world units; 0 where absent)."""

    body: np.ndarray  # [18, 3] float64, openpose.BODY_NAMES order
    body_present: np.ndarray  # [18] bool
    face: np.ndarray  # [70, 3] float64, openpose face order
    face_present: np.ndarray  # [70] bool


def load_mesh(path) -> trimesh.Trimesh:
    """Read an OBJ/PLY/GLB/glTF file -> one triangle mesh (a scene's meshes joined).

    Raises ValueError naming the file when it cannot be read or holds no triangles.
    """
    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh format; expected one of {MESH_SUFFIXES}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mesh file")
    try:
        mesh = trimesh.load_scene(path).to_mesh()
    except Exception as e:  # trimesh raises many types for malformed files
        raise ValueError(f"{path}: not a readable {path.suffix} mesh ({e})") from e
    if len(mesh.faces) == 0:
        raise ValueError(f"{path}: holds no triangles; expected a triangle mesh")
    if not np.all(np.isfinite(mesh.vertices)):
        raise ValueError(f"{path}: has non-finite vertex coordinates")
    if mesh.is_watertight and mesh.is_winding_consistent and mesh.volume < 0:
        mesh.invert()  # a closed mesh wound inside-out: make its normals point out
    return mesh


def keypoints_path(mesh_path) -> Path:
    """head.obj -> head.keypoints.json (same folder)."""
    mesh_path = Path(mesh_path)
    return mesh_path.with_name(mesh_path.stem + ".keypoints.json")


def _point(value, path: Path, key: str):
    """[x, y, z] of finite numbers or null -> float array [3] or None, else ValueError."""
    if value is None:
        return None
    ok = (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
    )
    if not ok:
        raise ValueError(f"{path}: {key} = {value!r}; expected [x, y, z] of finite numbers or null")
    return np.asarray(value, np.float64)


def parse_keypoints(data, path) -> Keypoints:
    """The decoded JSON of a keypoints file (module doc) -> Keypoints; `path` names it in errors."""
    path = Path(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with 'body' (and optional 'face')")
    unknown = sorted(set(data) - {"body", "face"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}; expected 'body', 'face'")
    if not isinstance(data.get("body"), dict):
        raise ValueError(f"{path}: 'body' missing or not an object of name -> [x, y, z]")
    body = np.zeros((len(openpose.BODY_NAMES), 3))
    body_present = np.zeros(len(openpose.BODY_NAMES), bool)
    for name, value in data["body"].items():
        if name not in openpose.BODY_INDEX:
            raise ValueError(
                f"{path}: body key {name!r} is not an OpenPose body point; expected one of "
                f"{', '.join(openpose.BODY_NAMES)}"
            )
        p = _point(value, path, f"body.{name}")
        if p is not None:
            body[openpose.BODY_INDEX[name]], body_present[openpose.BODY_INDEX[name]] = p, True
    face = np.zeros((openpose.NUM_FACE, 3))
    face_present = np.zeros(openpose.NUM_FACE, bool)
    if "face" in data:
        if not isinstance(data["face"], list) or len(data["face"]) != openpose.NUM_FACE:
            got = len(data["face"]) if isinstance(data["face"], list) else type(data["face"])
            raise ValueError(
                f"{path}: 'face' has {got} entries; expected a list of {openpose.NUM_FACE} "
                "[x, y, z] or null (68 iBUG landmarks, then right and left pupils)"
            )
        for i, value in enumerate(data["face"]):
            p = _point(value, path, f"face[{i}]")
            if p is not None:
                face[i], face_present[i] = p, True
    return Keypoints(body, body_present, face, face_present)


def load_keypoints(path) -> Keypoints:
    """Read and check a keypoints JSON file (module doc) -> Keypoints."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    return parse_keypoints(data, path)


def load_head(mesh_path, keypoints_file=None) -> tuple[trimesh.Trimesh, Keypoints]:
    """A mesh and its keypoints (default `keypoints_path(mesh_path)`) -> (mesh, Keypoints)."""
    mesh_path = Path(mesh_path)
    kp = Path(keypoints_file) if keypoints_file is not None else keypoints_path(mesh_path)
    if not kp.is_file():
        raise FileNotFoundError(
            f"{mesh_path}: no keypoints file {kp}; a mesh needs its OpenPose keypoints as "
            "JSON (format: styleavatar_jax.heads.mesh module doc)"
        )
    return load_mesh(mesh_path), load_keypoints(kp)


def _face_ranges(tri, origin, rot, k, resolution: int):
    """Each triangle's candidate pixels: the bounding box of its projection (all pixels when
    it crosses the camera plane, none when it is behind) -> r0, r1, c0, c1 [F] int64."""
    cam = (tri - origin) @ rot  # [F, 3, 3] camera space: R^T (p − o)
    z = cam[..., 2]
    zs = np.where(z > 1e-9, z, 1.0)
    x, y = cam[..., 0] / zs, cam[..., 1] / zs
    # Pixel coordinates whose integers are pixel centres, as pixel_rays places them.
    col = (k[0, 0] * x + k[0, 1] * y + k[0, 2]) * resolution - 0.5
    row = (k[1, 1] * y + k[1, 2]) * resolution - 0.5
    eps = 1e-3  # px: the box only has to contain every centre the exact test can hit
    r0, r1 = np.ceil(row.min(1) - eps), np.floor(row.max(1) + eps)
    c0, c1 = np.ceil(col.min(1) - eps), np.floor(col.max(1) + eps)
    front, behind = np.all(z > 1e-9, axis=1), np.all(z <= 1e-9, axis=1)
    full = ~front & ~behind
    r0, c0 = np.where(full, 0, r0), np.where(full, 0, c0)
    r1, c1 = np.where(full, resolution - 1, r1), np.where(full, resolution - 1, c1)
    r0, c0 = np.clip(r0, 0, resolution), np.clip(c0, 0, resolution)
    r1, c1 = np.clip(r1, -1, resolution - 1), np.clip(c1, -1, resolution - 1)
    r1 = np.where(behind, -1, r1)
    return (a.astype(np.int64) for a in (r0, r1, c0, c1))


def _cast_one(tri, origin, dirs, rot, k, resolution: int):
    """First hit of one camera's rays: tri [F, 3, 3], origin [3], dirs [R, 3] ->
    t [R] (inf where missed), face [R] int64 (−1 where missed).

    Exact Möller–Trumbore ray-triangle tests in float64, only between each triangle and the
    pixels of its projected bounding box (a rasteriser's culling, a ray tracer's answer).
    """
    r0, r1, c0, c1 = _face_ranges(tri, origin, rot, k, resolution)
    n_cols = np.maximum(c1 - c0 + 1, 0)
    counts = np.maximum(r1 - r0 + 1, 0) * n_cols
    best_t = np.full(len(dirs), np.inf)
    best_f = np.full(len(dirs), -1, np.int64)
    faces = np.flatnonzero(counts)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    s = origin - tri[:, 0]  # [F, 3]
    q = np.cross(s, e1)
    ends = np.cumsum(counts[faces])
    cuts = np.arange(_PAIRS_PER_CHUNK, ends[-1] if len(ends) else 0, _PAIRS_PER_CHUNK)
    for f in np.split(faces, np.unique(np.searchsorted(ends, cuts))):  # ≈ equal pair counts
        n = counts[f]
        pf = np.repeat(f, n)
        off = np.arange(len(pf)) - np.repeat(np.cumsum(n) - n, n)
        pix = (r0[pf] + off // n_cols[pf]) * resolution + c0[pf] + off % n_cols[pf]
        d = dirs[pix]
        p = np.cross(d, e2[pf])
        det = np.einsum("ij,ij->i", e1[pf], p)
        ok = np.abs(det) > 1e-14
        inv = 1.0 / np.where(ok, det, 1.0)
        u = np.einsum("ij,ij->i", s[pf], p) * inv
        v = np.einsum("ij,ij->i", d, q[pf]) * inv
        t = np.einsum("ij,ij->i", e2[pf], q[pf]) * inv
        hit = ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 0)
        pix, t, pf = pix[hit], t[hit], pf[hit]
        order = np.lexsort((t, pix))  # nearest hit first within each pixel
        pix, t, pf = pix[order], t[order], pf[order]
        first = np.ones(len(pix), bool)
        first[1:] = pix[1:] != pix[:-1]
        pix, t, pf = pix[first], t[first], pf[first]
        nearer = t < best_t[pix]
        best_t[pix[nearer]], best_f[pix[nearer]] = t[nearer], pf[nearer]
    return best_t, best_f


def render_mesh(mesh: trimesh.Trimesh, c, resolution: int) -> dict[str, np.ndarray]:
    """Ray-cast a mesh at labels c [B, 25] -> dict of numpy arrays (H = W = resolution):

    depth [B, H, W] float32 (ray distance, +inf where missed), mask [B, H, W] bool,
    normal [B, H, W, 3] float32 (world, unit, the hit triangle's normal turned to face the
    camera; 0 where missed), face [B, H, W] int64 (hit triangle, −1 where missed). The keys
    and conventions are `head_render.render`'s. Rays are `render.rays.pixel_rays`, so a
    render and a generator image of the same label see the same pixels.
    """
    c = np.asarray(c, np.float32)
    if c.ndim != 2 or c.shape[-1] != 25:
        raise ValueError(f"render_mesh: c has shape {c.shape}; expected [B, 25] camera labels")
    cam2world, k = cameras.split_label(c)
    _, dirs = _rays(cam2world, k, resolution=resolution)
    cam2world, k = np.asarray(cam2world, np.float64), np.asarray(k, np.float64)
    dirs = np.asarray(dirs, np.float64)
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)  # float32 unit -> float64 unit
    tri = np.asarray(mesh.triangles, np.float64)
    face_normals = np.asarray(mesh.face_normals, np.float64)
    out = dict(depth=[], mask=[], normal=[], face=[])
    for b in range(len(c)):
        t, f = _cast_one(tri, cam2world[b, :3, 3], dirs[b], cam2world[b, :3, :3], k[b],
                         resolution)  # fmt: skip
        hit = f >= 0
        n = np.where(hit[:, None], face_normals[np.maximum(f, 0)], 0.0)
        n *= np.where(np.einsum("ij,ij->i", n, dirs[b]) > 0, -1.0, 1.0)[:, None]
        shape = (resolution, resolution)
        out["depth"].append(t.reshape(shape))
        out["mask"].append(hit.reshape(shape))
        out["normal"].append(n.reshape(shape + (3,)))
        out["face"].append(f.reshape(shape))
    dtypes = dict(depth=np.float32, mask=bool, normal=np.float32, face=np.int64)
    return {key: np.stack(v).astype(dtypes[key]) for key, v in out.items()}


def mesh_keypoints_2d(mesh: trimesh.Trimesh, keypoints: Keypoints, c, depth, tolerance=0.02):
    """Project a head's keypoints and test them against its depth render (module doc).

    c [B, 25], depth [B, H, W] (`render_mesh(mesh, c, ...)["depth"]`) -> body_uv [B, 18, 2],
    body_visible [B, 18] bool, face_uv [B, 70, 2], face_visible [B, 70] bool (numpy; uv
    normalised as `heads.project`). Absent points are never visible.
    """
    c = np.asarray(c, np.float32)
    depth = np.asarray(depth, np.float32)
    if c.ndim != 2 or depth.ndim != 3 or len(c) != len(depth):
        raise ValueError(f"c {c.shape}, depth {depth.shape}: expected [B, 25] and [B, H, W]")
    nb = len(openpose.BODY_NAMES)
    points = np.concatenate([keypoints.body, keypoints.face])  # [N, 3]
    present = np.concatenate([keypoints.body_present, keypoints.face_present])
    _, off_surface, tri = trimesh.proximity.closest_point(mesh, points)
    normal = np.asarray(mesh.face_normals)[tri]  # [N, 3] outward
    check_facing = np.arange(len(points)) >= nb  # face points
    check_facing |= off_surface <= SURFACE_DISTANCE
    cam2world, _ = cameras.split_label(c)
    to_camera = np.asarray(cam2world, np.float64)[:, None, :3, 3] - points  # [B, N, 3]
    to_camera /= np.maximum(np.linalg.norm(to_camera, axis=-1, keepdims=True), 1e-12)
    cos = np.einsum("bnj,nj->bn", to_camera, normal)
    facing = np.where(check_facing, cos, 1.0).astype(np.float32)
    uv, dist, z = project_points(points.astype(np.float32), c)
    tol = (tolerance + off_surface).astype(np.float32)  # [N]
    visible = np.asarray(visible_points(uv, dist, z, depth, tol, facing)) & present
    uv = np.asarray(uv)
    return uv[:, :nb], visible[:, :nb], uv[:, nb:], visible[:, nb:]
