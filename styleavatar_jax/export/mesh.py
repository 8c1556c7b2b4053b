"""Meshes from the radiance field: σ on a grid, marching cubes, decimation, vertex colours,
PLY/OBJ (textured GLB and OBJ + MTL + PNG: `export.texture`, `export.gltf`).

As EG3D's extract_shapes.py: σ (the decoder's raw density, before softplus) is sampled on a
res³ grid spanning the renderer's box [−box_warp/2, box_warp/2]³ and the surface is the
level set σ = 10. Differences (ours): the grid is padded by one voxel of "empty" so every
surface closes at the box (EG3D overwrites a border of the grid with −1000), vertices are
in world coordinates (x right, y up, z towards the face: the cameras' frame), and each
vertex gets the colour of the radiance field there: the decoder's first 3 feature channels,
the raw RGB that EG3D's super-resolution starts from (the SR is a 2D image network and is
not applied, so mesh colours are blurrier than images).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax.files import write_atomic

EG3D_THRESHOLD = 10.0  # extract_shapes.py: marching cubes level on σ


def surface_threshold(cfg) -> float:
    """The σ level a model's surface is meshed at: its config.sample.surface_threshold (a
    model that keeps its background as thin density needs a higher level), else EG3D's."""
    sample = cfg.get("sample") or {}
    return float(sample.get("surface_threshold", EG3D_THRESHOLD))


# points [N, 3] -> (rgb [N, 3] in [0, 1], sigma [N])
FieldFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def grid_points(res: int, box: float) -> np.ndarray:
    """res³ lattice over [−box/2, box/2]³ (corners included) -> [res, res, res, 3], index
    order (x, y, z)."""
    if res < 2:
        raise ValueError(f"--res={res}: expected at least 2")
    t = np.linspace(-box / 2, box / 2, res, dtype=np.float32)
    return np.stack(np.meshgrid(t, t, t, indexing="ij"), axis=-1)


def query_chunked(fn, points: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate a field fn(points [chunk, 3]) -> (rgb [chunk, 3], sigma [chunk]) over points
    [N, 3] in fixed-size chunks (the last padded), so a jitted fn compiles once."""
    n = len(points)
    rgb, sigma = np.empty((n, 3), np.float32), np.empty(n, np.float32)
    for start in range(0, n, chunk):
        part = points[start : start + chunk]
        m = len(part)
        if m < chunk:
            part = np.concatenate([part, np.zeros((chunk - m, 3), part.dtype)])
        r, s = fn(part)
        rgb[start : start + m], sigma[start : start + m] = np.asarray(r)[:m], np.asarray(s)[:m]
    return rgb, sigma


def density_grid(fn: FieldFn, res: int, box: float, chunk: int) -> np.ndarray:
    """σ on the res³ grid of `grid_points` -> [res, res, res] float32 (x, y, z order)."""
    pts = grid_points(res, box).reshape(-1, 3)
    return query_chunked(fn, pts, chunk)[1].reshape(res, res, res)


def marching_cubes(sigma: np.ndarray, threshold: float, box: float):
    """σ grid [res, res, res] over [−box/2, box/2]³ -> vertices [V, 3] (world), faces [F, 3]
    (int64), triangles wound so their normals point out (towards lower σ)."""
    from skimage import measure

    lo, hi = float(sigma.min()), float(sigma.max())
    if not lo < threshold < hi:
        p50, p90, p95, p99 = np.percentile(sigma, [50, 90, 95, 99])
        raise ValueError(f"--threshold={threshold:g}: no surface, σ ranges over [{lo:.3g}, "
                         f"{hi:.3g}] on the grid; pick a level inside it, e.g. --threshold "
                         f"{p95:.3g} (the 95th percentile of σ on the grid: 5 % of the box "
                         f"inside the surface; percentiles 50/90/99: {p50:.3g} / {p90:.3g} / "
                         f"{p99:.3g})")  # fmt: skip
    res = sigma.shape[0]
    empty = min(lo, threshold) - 1.0  # outside the box: below the level, so surfaces close
    padded = np.pad(sigma, 1, constant_values=empty)
    step = box / (res - 1)
    # skimage winds "ascent" triangles with normals towards lower values: outwards here.
    verts, faces, _, _ = measure.marching_cubes(padded, level=threshold, spacing=(step,) * 3,
                                                gradient_direction="ascent")  # fmt: skip
    verts = verts - step - box / 2  # undo the pad, move the grid's corner to −box/2
    return verts.astype(np.float32), faces.astype(np.int64)


def colors_uint8(rgb: np.ndarray) -> np.ndarray:
    """Decoder RGB [..., 3] in (−0.001, 1.001) -> uint8 [..., 3]."""
    return np.clip(np.round(np.asarray(rgb) * 255), 0, 255).astype(np.uint8)


def extract_mesh(fn: FieldFn, res: int, box: float, threshold: float, chunk: int = 65536):
    """A field -> (vertices [V, 3], faces [F, 3], colours uint8 [V, 3])."""
    sigma = density_grid(fn, res, box, chunk)
    verts, faces = marching_cubes(sigma, threshold, box)
    rgb, _ = query_chunked(fn, verts, chunk)
    return verts, faces, colors_uint8(rgb)


def surface_parts(faces: np.ndarray, num_verts: int) -> int:
    """Number of connected parts of a triangle mesh: faces [F, 3] over num_verts vertices
    (vertices no face uses are not counted)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    faces = np.asarray(faces, np.int64)
    if not faces.size:
        return 0
    a, b = faces.ravel(), np.roll(faces, 1, axis=1).ravel()  # the 3 edges of each face
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(num_verts, num_verts))
    _, label = connected_components(graph, directed=False)
    return len(np.unique(label[np.unique(faces)]))


def largest_part(verts: np.ndarray, faces: np.ndarray, centre=(0.0, 0.0, 0.0)):
    """Keep the subject: the connected part with the most faces among those whose bounding
    box holds `centre` (the box's centre, where the cameras look), or the part with the
    most faces overall if none does. Drops floaters (density blobs the renderer tolerates
    but a mesh shows) and background fog: a trained model's fog around the box's edge can be
    a larger part than the head (the shipped model's ring of fog under the shoulders).
    verts [V, 3], faces [F, 3] -> (verts [V', 3], faces [F', 3]) with unused vertices
    removed and faces re-indexed."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    faces = np.asarray(faces, np.int64)
    if not faces.size:
        return np.asarray(verts), faces
    a, b = faces.ravel(), np.roll(faces, 1, axis=1).ravel()
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(len(verts), len(verts)))
    _, label = connected_components(graph, directed=False)
    face_label = label[faces[:, 0]]
    size = np.bincount(face_label).astype(np.float64)
    v = np.asarray(verts, np.float64)
    lo = np.full((len(size), 3), np.inf)
    hi = np.full((len(size), 3), -np.inf)
    for k in range(3):
        np.minimum.at(lo, face_label, v[faces[:, k]])
        np.maximum.at(hi, face_label, v[faces[:, k]])
    centre = np.asarray(centre, np.float64)
    holds = np.all((lo <= centre) & (centre <= hi), axis=1)
    part = np.where(holds, size, -1).argmax() if holds.any() else size.argmax()
    keep = faces[face_label == part]
    used = np.unique(keep)
    remap = np.full(len(verts), -1, np.int64)
    remap[used] = np.arange(len(used))
    return np.asarray(verts)[used], remap[keep]


MIN_FACES_PER_PART = 4  # a closed surface (a tetrahedron) needs 4 triangles


def decimate(verts: np.ndarray, faces: np.ndarray, target: int, flag: str = "--faces"):
    """Quadric-error decimation (fast-simplification) to `target` faces.

    verts [V, 3] float32, faces [F, 3] int64 -> (verts [V', 3] float32, faces [F', 3] int64),
    F' ≈ target (the simplifier may stop a little above it). A target at or above F returns
    the mesh unchanged. Every closed part needs 4 faces: a target below 4 per connected
    part is a ValueError naming `flag`.
    """
    verts, faces = np.asarray(verts, np.float32), np.asarray(faces, np.int64)
    if target >= len(faces):
        return verts, faces
    parts = surface_parts(faces, len(verts))
    if target < MIN_FACES_PER_PART * max(parts, 1):
        raise ValueError(f"{flag}={target}: too few faces to keep the surface; its {parts} "
                         f"separate part(s) need at least {MIN_FACES_PER_PART} faces each "
                         f"({MIN_FACES_PER_PART * max(parts, 1)}); the surface has "
                         f"{len(faces)}")  # fmt: skip
    import fast_simplification

    v, f = fast_simplification.simplify(verts, faces, target_count=int(target))
    v, f = np.asarray(v, np.float32), np.asarray(f, np.int64).reshape(-1, 3)
    used = np.unique(f)  # drop vertices the collapses left unused
    remap = np.full(len(v), -1, np.int64)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals: verts [V, 3], faces [F, 3] (wound outwards) -> unit
    [V, 3] float32 (0 for a vertex no face uses)."""
    v = np.asarray(verts, np.float64)
    tri = v[np.asarray(faces)]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2·area
    idx = np.asarray(faces).T.ravel()  # each face's normal goes to its 3 vertices
    n = np.stack([np.bincount(idx, np.tile(face_n[:, d], 3), len(v)) for d in range(3)], 1)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return (n / np.maximum(norm, 1e-30)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def make_field_fn(G, mesh: Mesh):
    """-> jitted fn(variables, planes [1, 3, H, W, C], points [N, 3]) -> (rgb [N, 3] in
    [0, 1], sigma [N]); N is split over the devices of the mesh (N divisible by its size)."""
    d = mesh.size

    def run(variables, planes, points):
        coords = points.reshape(d, -1, 3)
        planes_d = jnp.broadcast_to(planes, (d, *planes.shape[1:]))
        rgb, sigma = G.apply(variables, planes_d, coords, method=G.sample_density)
        return rgb[..., :3].reshape(-1, 3), sigma.reshape(-1)

    repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(run, in_shardings=(repl, repl, rows), out_shardings=(rows, rows))


def generator_field(G, variables, planes, mesh: Mesh) -> FieldFn:
    """The radiance field of one latent: planes [1, 3, H, W, C] -> FieldFn."""
    fn = make_field_fn(G, mesh)
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    planes = jax.device_put(planes, NamedSharding(mesh, P()))
    return lambda pts: jax.device_get(fn(variables, planes, pts))


# --- files --------------------------------------------------------------------------------


def _check(verts, faces, colors):
    verts, faces = np.asarray(verts, np.float32), np.asarray(faces)
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"mesh: expected vertices [V, 3] and faces [F, 3], got {verts.shape} "
                         f"and {faces.shape}")  # fmt: skip
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(f"mesh: face indices outside [0, {len(verts)})")
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != verts.shape or colors.dtype != np.uint8:
            raise ValueError(f"mesh: colours must be uint8 {verts.shape}, got {colors.dtype} "
                             f"{colors.shape}")  # fmt: skip
    return verts, faces, colors


def ply_bytes(verts, faces, colors=None) -> bytes:
    """Binary little-endian PLY: float x y z [uchar red green blue], faces as uchar-counted
    int lists."""
    verts, faces, colors = _check(verts, faces, colors)
    props = ["property float x", "property float y", "property float z"]
    fields = [("xyz", "<f4", (3,))]
    if colors is not None:
        props += ["property uchar red", "property uchar green", "property uchar blue"]
        fields.append(("rgb", "u1", (3,)))
    header = "\n".join(["ply", "format binary_little_endian 1.0",
                        "comment styleavatar-jax marching cubes",
                        f"element vertex {len(verts)}", *props,
                        f"element face {len(faces)}", "property list uchar int vertex_indices",
                        "end_header"]) + "\n"  # fmt: skip
    v = np.empty(len(verts), np.dtype(fields))
    v["xyz"] = verts
    if colors is not None:
        v["rgb"] = colors
    f = np.empty(len(faces), np.dtype([("n", "u1"), ("idx", "<i4", (3,))]))
    f["n"], f["idx"] = 3, faces
    return header.encode("ascii") + v.tobytes() + f.tobytes()


def obj_text(verts, faces, colors=None) -> str:
    """Wavefront OBJ; colours as the common 'v x y z r g b' extension (r g b in [0, 1])."""
    verts, faces, colors = _check(verts, faces, colors)
    if colors is None:
        vlines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    else:
        c = colors / 255.0
        vlines = [f"v {p[0]:.6f} {p[1]:.6f} {p[2]:.6f} {q[0]:.4f} {q[1]:.4f} {q[2]:.4f}"
                  for p, q in zip(verts, c, strict=True)]  # fmt: skip
    flines = [f"f {a} {b} {c}" for a, b, c in faces + 1]
    return "\n".join(["# styleavatar-jax marching cubes", *vlines, *flines]) + "\n"


def write_mesh(path: str | os.PathLike, verts, faces, colors=None) -> Path:
    """Write a .ply (binary) or .obj atomically, by the path's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        data = ply_bytes(verts, faces, colors)
    elif suffix == ".obj":
        data = obj_text(verts, faces, colors).encode("ascii")
    else:
        raise ValueError(f"--out={path}: expected a file ending in .ply or .obj")
    return write_atomic(path, lambda f: f.write(data))


# --- a picture of a mesh ------------------------------------------------------------------


def lambert_views(verts, faces, c: np.ndarray, resolution: int, colors=None) -> np.ndarray:
    """Ray-cast the mesh (heads.mesh.render_mesh) at labels c [V, 25] and shade it with a
    headlight Lambert model (ambient 0.2 + 0.8·max(n·l, 0), l from the camera, raised 30°)
    -> uint8 [resolution, V·resolution, 3] on white. Grey, or the vertex colours' face mean."""
    import trimesh

    from styleavatar_jax.heads.mesh import render_mesh

    tm = trimesh.Trimesh(np.asarray(verts), np.asarray(faces), process=False)
    out = render_mesh(tm, c, resolution)
    m = np.asarray(c, np.float64)[:, :16].reshape(-1, 4, 4)
    # Light direction: towards the camera (−forward) tilted towards the camera's up (−y).
    light = -m[:, :3, 2] * np.cos(np.pi / 6) - m[:, :3, 1] * np.sin(np.pi / 6)
    lam = np.einsum("bhwj,bj->bhw", out["normal"].astype(np.float64), light)
    shade = 0.2 + 0.8 * np.clip(lam, 0, 1)
    if colors is None:
        albedo = np.full(out["face"].shape + (3,), 0.8)
    else:
        face_rgb = np.asarray(colors, np.float64)[np.asarray(faces)].mean(1) / 255.0
        albedo = face_rgb[np.maximum(out["face"], 0)]
    img = np.where(out["mask"][..., None], albedo * shade[..., None], 1.0)
    img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)  # [V, H, W, 3]
    return np.concatenate(list(img), axis=1)
