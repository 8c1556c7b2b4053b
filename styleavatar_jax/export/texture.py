"""Textured meshes from the radiance field, and how close they come to the generator.

    σ grid -> marching cubes (`export.mesh`) -> decimation to a face budget (optional)
    -> UV atlas (xatlas) -> texture baked from the field -> GLB / OBJ + MTL + PNG
    (`export.gltf`)

**Atlas.** xatlas cuts the surface into charts and packs them into a square of
`texture_size` texels, `PADDING` texels apart. Vertices on a chart seam are repeated (one
per chart); their positions and normals are the original vertex's.

**Bake.** Every texel whose centre lies in a UV triangle (triangles rasterised in UV space
with barycentric coordinates, vectorised over triangles and texels) takes the 3D point with
the same barycentric coordinates on the 3D triangle, moved `offset` world units along the
inward normal (vertex normals interpolated), and the field's colour there: the decoder's
first 3 feature channels, the raw RGB that the image's super-resolution starts from (the SR
is a 2D network, not applied). Texels no triangle covers take the colour of the nearest
covered texel (a Euclidean distance transform), so bilinear filtering and mip-maps across
a chart border never pull in black.

**Inward offset.** The level set σ = threshold is where the density rises, not where a
ray's compositing weight sits: the colour an image shows comes from a little inside. The
bake queries `DEFAULT_OFFSET` = 0.03 world units inwards, the best of a sweep on the
shipped model (res 256, σ level 30; PSNR of the GLB's render against the generator's raw
images over the mesh's pixels, 8 yaws): offset 0 / 0.004 / 0.008 / 0.015 / 0.03 / 0.045 ->
14.15 / 14.56 / 14.96 / 15.53 / 16.12 / 15.77 dB (BENCHMARKS.md, "Textured mesh export").
It is a property of that model's soft density; `offset=0` bakes the level set's own colour.

**Units and axes.** World coordinates are EG3D's as the mannequin uses them (x right, y up,
the face looking towards +z; `heads.mannequin`), which are glTF's (right-handed, +Y up, an
asset's front facing +Z), so no rotation is needed. Positions are scaled by
`meters_per_unit` (`METERS_PER_UNIT` = 0.6 by default): the shipped model's head spans
≈ 0.40 world units from chin to crown and ≈ 0.26 across, so it comes out 24 cm tall and
16 cm wide, an adult head (≈ 23 / 15 cm). A model whose heads fill more of the box
[−0.5, 0.5]³ (FFHQ-like crops) wants a smaller value.

**Colour.** The GAN learns the values of sRGB-encoded images, so the texture stores them
as they are: glTF's base-colour textures are sRGB, and an unlit material shows them
unchanged.

**Measures.** `texture_mae`: the baked texture (bilinear) against the field's colour at
random surface points, in uint8 levels. `mesh_views` + `generator_raw_views` +
`masked_psnr`: the written file as trimesh loads it, ray-cast at the generator's cameras
(`heads.mesh.render_mesh`) and textured by interpolated UVs, against the generator's own
raw RGB image at the same cameras and resolution, over the pixels that either covers.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax.export import gltf
from styleavatar_jax.export import mesh as mesh_io
from styleavatar_jax.export.frames import shared_uniforms

METERS_PER_UNIT = 0.6  # world units -> metres: the shipped model's head ≈ 24 cm tall
DEFAULT_TEXTURE = 1024
MIN_TEXTURE, MAX_TEXTURE = 64, 8192
PADDING = 4  # texels between charts in the atlas
DEFAULT_OFFSET = 0.03  # world units: bake this far inside the level set (module doc)
MEASURE_RES, MEASURE_YAWS, MEASURE_POINTS = 64, 8, 1000
_PAIRS = 1 << 22  # (triangle, texel) candidates per rasterisation batch: ~200 MB


@dataclasses.dataclass(frozen=True)
class TexturedMesh:
    """A UV-mapped triangle mesh in world units (seam vertices repeated per chart)."""

    verts: np.ndarray  # [V, 3] float32, world units
    normals: np.ndarray  # [V, 3] float32, unit, outward
    uv: np.ndarray  # [V, 2] float32 in [0, 1], glTF's: (0, 0) the texture's top-left
    faces: np.ndarray  # [F, 3] int64, counter-clockwise seen from outside
    texture: np.ndarray  # [T, T, 3] uint8, row 0 at the top


def check_texture_size(size: int, flag: str = "--texture") -> int:
    """A texture size must be a power of two in [MIN_TEXTURE, MAX_TEXTURE]."""
    ok = isinstance(size, int | np.integer) and MIN_TEXTURE <= size <= MAX_TEXTURE
    if not ok or size & (size - 1):
        raise ValueError(f"{flag}={size}: expected a power of two from {MIN_TEXTURE} to "
                         f"{MAX_TEXTURE} texels, e.g. {flag}={DEFAULT_TEXTURE}")  # fmt: skip
    return int(size)


# --- atlas --------------------------------------------------------------------------------


def unwrap(verts: np.ndarray, faces: np.ndarray, texture_size: int, padding: int = PADDING):
    """UV atlas by xatlas: verts [V, 3], faces [F, 3] -> (vmapping [V'] int64: the original
    vertex of each new one, faces [F, 3] int64 into V', uv [V', 2] float32 in [0, 1] with
    texel (col, row) centred at ((col + ½)/T, (row + ½)/T), row 0 at the top), and the
    number of charts."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(verts, np.float32),
                   np.ascontiguousarray(faces, np.uint32))  # fmt: skip
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding, pack.bilinear = texture_size, padding, True
    atlas.generate(xatlas.ChartOptions(), pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas packed the charts into {atlas.atlas_count} atlases; "
                           "expected one")  # fmt: skip
    vmapping, new_faces, uv = atlas.get_mesh(0)
    # xatlas divides by its atlas's own width and height, which can come out below the
    # resolution asked for (then uv * texture_size are its texel coordinates) or above it
    # (then the atlas is shrunk to fit, its aspect kept: padding shrinks with it).
    w, h = atlas.width, atlas.height
    uv = uv * np.array([w, h], np.float32) / max(w, h, texture_size)
    return (np.asarray(vmapping, np.int64), np.asarray(new_faces, np.int64).reshape(-1, 3),
            np.asarray(uv, np.float32), int(atlas.chart_count))  # fmt: skip


def rasterize(tri_uv: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which texel centres each triangle covers, in UV space.

    tri_uv [F, 3, 2] in texel units (x = column, y = row; texel (c, r) centred at
    (c + ½, r + ½)) -> face [N] int64, texel [N] int64 (row·size + col), bary [N, 3] float64
    (weights of the triangle's 3 corners). A centre on a shared edge is listed for both
    triangles. Vectorised: each triangle's bounding box of texel centres is enumerated in
    batches of at most _PAIRS candidates and tested with edge functions.
    """
    tri = np.asarray(tri_uv, np.float64)
    lo = np.clip(np.ceil(tri.min(1) - 0.5), 0, size).astype(np.int64)  # [F, 2] first centre
    hi = np.clip(np.floor(tri.max(1) - 0.5), -1, size - 1).astype(np.int64)  # last centre
    wh = np.maximum(hi - lo + 1, 0)
    counts = wh[:, 0] * wh[:, 1]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    cross = lambda u, v: u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    area = cross(b - a, c - a)  # twice the signed area
    eps = 1e-9
    faces_out, texels_out, bary_out = [], [], []
    ends = np.cumsum(counts)
    start = 0
    while start < len(tri):
        # The largest run of triangles whose candidates fit one batch (at least one).
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _PAIRS, side="right")), start + 1)
        f = np.repeat(np.arange(start, stop), counts[start:stop])
        if len(f):
            first = np.repeat(ends[start:stop] - counts[start:stop], counts[start:stop])
            local = np.arange(base, base + len(f)) - first
            col = lo[f, 0] + local % wh[f, 0]
            row = lo[f, 1] + local // wh[f, 0]
            p = np.stack([col + 0.5, row + 0.5], axis=1)
            ok = np.abs(area[f]) > 1e-12
            den = np.where(ok, area[f], 1.0)
            wb = cross(p - a[f], c[f] - a[f]) / den
            wc = cross(b[f] - a[f], p - a[f]) / den
            wa = 1.0 - wb - wc
            inside = ok & (wa >= -eps) & (wb >= -eps) & (wc >= -eps)
            faces_out.append(f[inside])
            texels_out.append((row * size + col)[inside])
            bary_out.append(np.stack([wa, wb, wc], axis=1)[inside])
        start = stop
    if not faces_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3))
    return np.concatenate(faces_out), np.concatenate(texels_out), np.concatenate(bary_out)


def fill_empty(texture: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Give every texel not covered [T, T] the colour of the nearest covered one:
    texture [T, T, C] -> [T, T, C] (unchanged where covered)."""
    from scipy import ndimage

    if covered.all() or not covered.any():
        return texture
    _, (rows, cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return texture[rows, cols]


def _interp(values: np.ndarray, faces: np.ndarray, face: np.ndarray, bary: np.ndarray):
    """Per-vertex values [V, D] at barycentric points (face [N], bary [N, 3]) -> [N, D]."""
    corners = values[faces[face]]  # [N, 3, D]
    return np.einsum("nk,nkd->nd", bary, corners)


def _inward_points(verts, normals, faces, face, bary, offset: float) -> np.ndarray:
    """Surface points of (face, bary), moved `offset` along the inward normal -> [N, 3]."""
    p = _interp(np.asarray(verts, np.float64), faces, face, bary)
    if offset:
        n = _interp(np.asarray(normals, np.float64), faces, face, bary)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        p -= offset * n
    return p.astype(np.float32)


def bake(field_fn: mesh_io.FieldFn, verts, normals, faces, uv, texture_size: int, *,
         offset: float = 0.0, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The field's colour on the surface, as a texture.

    verts/normals [V, 3], faces [F, 3], uv [V, 2] (glTF convention) -> texture uint8
    [T, T, 3] (empty texels filled from the nearest covered one) and covered [T, T] bool.
    """
    t = texture_size
    face, texel, bary = rasterize(uv[faces] * t, t)
    texel, first = np.unique(texel, return_index=True)  # one query per texel
    points = _inward_points(verts, normals, faces, face[first], bary[first], offset)
    rgb, _ = mesh_io.query_chunked(field_fn, points, chunk) if len(points) else (None, None)
    texture = np.zeros((t * t, 3), np.uint8)
    covered = np.zeros(t * t, bool)
    if len(points):
        texture[texel], covered[texel] = mesh_io.colors_uint8(rgb), True
    covered = covered.reshape(t, t)
    return fill_empty(texture.reshape(t, t, 3), covered), covered


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup, clamped at the edges (glTF's LINEAR + CLAMP_TO_EDGE): texture
    [H, W, C] uint8, uv [N, 2] (glTF convention) -> [N, C] float64 in texture units."""
    h, w = texture.shape[:2]
    x = np.asarray(uv[:, 0], np.float64) * w - 0.5
    y = np.asarray(uv[:, 1], np.float64) * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    xi = [np.clip(x0 + k, 0, w - 1).astype(np.int64) for k in (0, 1)]
    yi = [np.clip(y0 + k, 0, h - 1).astype(np.int64) for k in (0, 1)]
    tex = texture.astype(np.float64)
    top = tex[yi[0], xi[0]] * (1 - fx) + tex[yi[0], xi[1]] * fx
    bottom = tex[yi[1], xi[0]] * (1 - fx) + tex[yi[1], xi[1]] * fx
    return top * (1 - fy) + bottom * fy


# --- the pipeline -------------------------------------------------------------------------


def textured_mesh(field_fn: mesh_io.FieldFn, res: int, box: float, threshold: float,
                  texture_size: int = DEFAULT_TEXTURE, *, faces: int | None = None,
                  offset: float | None = None, chunk: int = 65536, largest: bool = False,
                  ) -> tuple[TexturedMesh, dict]:  # fmt: skip
    """A field -> (TexturedMesh in world units, stats).

    res/box/threshold as `mesh.extract_mesh`; largest: keep only the largest connected part
    around the box's centre (`mesh.largest_part`: no floaters, no background fog); faces: a
    face budget (decimation before the atlas; None keeps every marching-cubes face);
    offset: inward bake offset in world units (None: DEFAULT_OFFSET). Stats: counts
    (surface_faces, vertices, faces, charts), coverage (texels inside a triangle / all),
    offset, and seconds per stage (grid, marching_cubes, decimate, atlas, bake).
    """
    check_texture_size(texture_size)
    if offset is None:
        offset = DEFAULT_OFFSET
    seconds, clock = {}, time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        seconds[name], clock = round(now - clock, 3), now

    sigma = mesh_io.density_grid(field_fn, res, box, chunk)
    lap("grid")
    verts, tris = mesh_io.marching_cubes(sigma, threshold, box)
    if largest:
        verts, tris = mesh_io.largest_part(verts, tris)
    surface_faces = len(tris)
    lap("marching_cubes")
    if faces is not None:
        verts, tris = mesh_io.decimate(verts, tris, faces)
    lap("decimate")
    normals = mesh_io.vertex_normals(verts, tris)
    vmapping, new_faces, uv, charts = unwrap(verts, tris, texture_size)
    verts, normals = verts[vmapping], normals[vmapping]
    lap("atlas")
    texture, covered = bake(field_fn, verts, normals, new_faces, uv, texture_size,
                            offset=offset, chunk=chunk)  # fmt: skip
    lap("bake")
    out = TexturedMesh(verts, normals, uv, new_faces, texture)
    stats = dict(surface_faces=surface_faces, vertices=len(verts), faces=len(new_faces),
                 charts=charts, texture=texture_size, coverage=float(covered.mean()),
                 offset=float(offset), seconds=seconds)  # fmt: skip
    return out, stats


def glb_of(mesh: TexturedMesh, *, unlit: bool = False,
           meters_per_unit: float = METERS_PER_UNIT) -> bytes:  # fmt: skip
    """A TexturedMesh -> .glb bytes, positions scaled to metres."""
    return gltf.glb_bytes(mesh.verts * np.float32(meters_per_unit), mesh.normals, mesh.uv,
                          mesh.faces, gltf.png_bytes(mesh.texture), unlit=unlit)  # fmt: skip


def write_textured(path: str | os.PathLike, mesh: TexturedMesh, *, unlit: bool = False,
                   meters_per_unit: float = METERS_PER_UNIT) -> list[Path]:  # fmt: skip
    """Write a .glb, or a .obj with its .mtl and .png (together), by path's suffix ->
    the paths written. `unlit` is a GLB material setting (OBJ has none)."""
    path = Path(path)
    if path.suffix.lower() == ".glb":
        return [gltf.write_glb(path, glb_of(mesh, unlit=unlit, meters_per_unit=meters_per_unit))]
    if path.suffix.lower() == ".obj":
        v = mesh.verts * np.float32(meters_per_unit)
        return list(gltf.write_obj(path, v, mesh.normals, mesh.uv, mesh.faces, mesh.texture))
    raise ValueError(f"--out={path}: a textured mesh is written as .glb or .obj")


def textured_glb(field_fn: mesh_io.FieldFn, res: int, box: float, threshold: float,
                 texture_size: int = DEFAULT_TEXTURE, faces: int | None = None,
                 unlit: bool = False, meters_per_unit: float = METERS_PER_UNIT, *,
                 offset: float | None = None, chunk: int = 65536, largest: bool = False,
                 ) -> tuple[bytes, dict]:  # fmt: skip
    """A field -> (the .glb file's bytes, stats): `textured_mesh` then `glb_of`; stats also
    hold the file's size in bytes (glb_bytes) and the texture-vs-field MAE (texture_mae)."""
    mesh, stats = textured_mesh(field_fn, res, box, threshold, texture_size, faces=faces,
                                offset=offset, chunk=chunk, largest=largest)  # fmt: skip
    data = glb_of(mesh, unlit=unlit, meters_per_unit=meters_per_unit)
    stats["glb_bytes"] = len(data)
    stats["texture_mae"] = texture_mae(mesh, field_fn, offset=stats["offset"], chunk=chunk)
    return data, stats


# --- measures -----------------------------------------------------------------------------


def surface_samples(verts, faces, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points uniform over a mesh's area: verts [V, 3], faces [F, 3] -> face [n] int64,
    bary [n, 3] float64."""
    rng = np.random.default_rng(seed)
    tri = np.asarray(verts, np.float64)[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)  # uniform on a triangle (Osada et al. 2002, eq. 1)
    return face, np.stack([1 - s, s * (1 - r2), s * r2], axis=1)


def texture_mae(mesh: TexturedMesh, field_fn: mesh_io.FieldFn, *, offset: float = 0.0,
                n: int = MEASURE_POINTS, seed: int = 0, chunk: int = 65536) -> float:  # fmt: skip
    """Mean |texture − field| in uint8 levels over n random surface points (area-uniform):
    the texture sampled bilinearly at the points' UVs against the field's colour (uint8) at
    the point the bake queries for them (`offset` inwards). It measures the texture's
    resolution and seams, not the choice of offset (the PSNR does)."""
    face, bary = surface_samples(mesh.verts, mesh.faces, n, seed)
    uv = _interp(mesh.uv.astype(np.float64), mesh.faces, face, bary)
    points = _inward_points(mesh.verts, mesh.normals, mesh.faces, face, bary, offset)
    rgb, _ = mesh_io.query_chunked(field_fn, points, chunk)
    truth = mesh_io.colors_uint8(rgb).astype(np.float64)
    return float(np.abs(sample_texture(mesh.texture, uv) - truth).mean())


def measure_cameras(camera: dict, yaws: int = MEASURE_YAWS, pitch_degrees: float = 0.0):
    """`yaws` cameras evenly round the config's orbit, looking at the world origin (the box
    centre): camera dict (radius, fov_degrees, ...) -> labels c [yaws, 25]."""
    from styleavatar_jax import sampling

    yaw = np.radians(np.arange(yaws) * 360.0 / yaws).astype(np.float32)
    pitch = np.full_like(yaw, np.radians(pitch_degrees))
    return sampling.view_labels(yaw, pitch, dict(camera, pivot=(0.0, 0.0, 0.0)))


def mesh_views(path: str | os.PathLike, c: np.ndarray, resolution: int,
               meters_per_unit: float = METERS_PER_UNIT,
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A written textured mesh (.glb or .obj, read back by trimesh), ray-cast at labels
    c [B, 25] (`heads.mesh.render_mesh`, world units = file units / meters_per_unit) and
    textured by the hit point's interpolated UV -> rgb [B, H, W, 3] float64 in [0, 1] over
    black, mask [B, H, W] bool."""
    import trimesh

    from styleavatar_jax import cameras
    from styleavatar_jax.heads.mesh import render_mesh
    from styleavatar_jax.render.rays import pixel_rays

    loaded = trimesh.load(path, force="mesh", process=False)
    tm = trimesh.Trimesh(np.asarray(loaded.vertices) / meters_per_unit, loaded.faces,
                         process=False)  # fmt: skip
    uv = np.asarray(loaded.visual.uv, np.float64).copy()
    uv[:, 1] = 1.0 - uv[:, 1]  # trimesh keeps OBJ's convention (v up); ours is glTF's
    material = loaded.visual.material
    image = getattr(material, "baseColorTexture", None)  # glTF: a PBR material
    if image is None:
        image = getattr(material, "image", None)  # OBJ: a simple material
    if image is None:
        raise ValueError(f"{path}: no texture image in its material")
    texture = np.asarray(image.convert("RGB"))
    out = render_mesh(tm, c, resolution)
    cam2world, k = cameras.split_label(np.asarray(c, np.float32))
    origins, dirs = (np.asarray(a, np.float64) for a in pixel_rays(cam2world, k, resolution))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    b, r = len(c), resolution
    mask = out["mask"].reshape(b, -1)
    face = out["face"].reshape(b, -1)[mask]
    hit = (origins + out["depth"].reshape(b, -1, 1).astype(np.float64) * dirs)[mask]
    bary = trimesh.triangles.points_to_barycentric(tm.triangles[face], hit)
    hit_uv = _interp(uv, np.asarray(tm.faces), face, bary)
    rgb = np.zeros((b, r * r, 3))
    rgb[mask] = sample_texture(texture, hit_uv) / 255.0
    return rgb.reshape(b, r, r, 3), mask.reshape(b, r, r)


@functools.lru_cache(maxsize=8)
def make_raw_renderer(G, resolution: int, mesh: Mesh):
    """-> jitted fn(variables, planes [K, 3, H, W, C], c [K, 25], key) -> (rgb [K, r, r, 3]
    in [0, 1] over black, alpha [K, r, r]): the generator's raw (neural-rendering) image
    before super-resolution, as `synthesis_from_planes`' image_raw, mapped from [−1, 1]."""

    def run(variables, planes, c, key):
        k, r = c.shape[0], resolution
        uniforms = shared_uniforms(key, k, r * r, G.cfg.render)
        out = G.apply(variables, planes, c, neural_res=r, uniforms=uniforms,
                      method=G.render_planes)  # fmt: skip
        rgb = out["features"][..., :3].reshape(k, r, r, 3)
        return (rgb + 1) / 2, out["weights_sum"].reshape(k, r, r)

    repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(run, in_shardings=(repl, rows, rows, repl), out_shardings=rows)


def generator_raw_views(G, variables, planes, c: np.ndarray, resolution: int, mesh: Mesh,
                        key: jax.Array) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One latent's planes [1, 3, H, W, C] at labels c [B, 25] -> the raw RGB image
    [B, r, r, 3] in [0, 1] (composited over black) and alpha [B, r, r] (Σ weights)."""
    b, d = len(c), mesh.size
    k = -(-b // d) * d  # pad the views to a multiple of the devices
    idx = np.minimum(np.arange(k), b - 1)
    planes_k = jnp.broadcast_to(jnp.asarray(planes), (k, *np.shape(planes)[1:]))
    rgb, alpha = make_raw_renderer(G, resolution, mesh)(variables, planes_k, c[idx], key)
    return np.asarray(jax.device_get(rgb), np.float64)[:b], np.asarray(alpha)[:b]


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (peak 1) between images a, b [..., H, W, 3] in [0, 1] over the pixels where
    mask [..., H, W] holds (inf when they agree there, nan when the mask is empty)."""
    m = np.asarray(mask, bool)
    if not m.any():
        return float("nan")
    mse = float(np.mean((np.asarray(a, np.float64)[m] - np.asarray(b, np.float64)[m]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def render_psnr(path: str | os.PathLike, G, variables, planes, camera: dict, mesh: Mesh, *,
                key: jax.Array, resolution: int = MEASURE_RES, yaws: int = MEASURE_YAWS,
                meters_per_unit: float = METERS_PER_UNIT) -> dict:  # fmt: skip
    """The written mesh's render against the generator's raw image at `yaws` cameras round
    the orbit (pitch 0, `measure_cameras`) -> dict of floats (dB) and images:

    - psnr_union: over the pixels the mesh or the generator (alpha > 0.5) covers, both
      over black: counts what the mesh leaves out (e.g. a background the field holds);
    - psnr_mesh: over the pixels the mesh covers: its texture against what the generator
      shows there; psnr_mesh_per_view [yaws];
    - psnr_self: the generator against itself rendered with another key (other stratified
      samples), over the mesh's pixels: the sampling noise, a ceiling for psnr_mesh;
    - iou of the two masks; mesh_rgb, raw_rgb [yaws, r, r, 3], mesh_mask, raw_alpha.
    """
    c = measure_cameras(camera, yaws)
    mesh_rgb, mesh_mask = mesh_views(path, c, resolution, meters_per_unit)
    raw_rgb, alpha = generator_raw_views(G, variables, planes, c, resolution, mesh, key)
    other, _ = generator_raw_views(G, variables, planes, c, resolution, mesh,
                                   jax.random.fold_in(key, 1))  # fmt: skip
    raw_mask = alpha > 0.5
    union = mesh_mask | raw_mask
    per_view = [masked_psnr(mesh_rgb[i], raw_rgb[i], mesh_mask[i]) for i in range(yaws)]
    return dict(
        psnr_union=masked_psnr(mesh_rgb, raw_rgb, union),
        psnr_mesh=masked_psnr(mesh_rgb, raw_rgb, mesh_mask),
        psnr_mesh_per_view=per_view,
        psnr_self=masked_psnr(other, raw_rgb, mesh_mask),
        iou=float((mesh_mask & raw_mask).sum() / max(union.sum(), 1)),
        mesh_rgb=mesh_rgb, raw_rgb=raw_rgb, mesh_mask=mesh_mask, raw_alpha=alpha,
    )  # fmt: skip
