"""3D Gaussian splats from the radiance field, in the 3D Gaussian Splatting PLY layout.

How the Gaussians are found (`extract_splats`):

1. σ and RGB on a res³ grid over the renderer's box (`export.mesh`: σ is the decoder's raw
   density, RGB its first 3 feature channels, the raw colour the super-resolution starts
   from); density = softplus(σ − 1), as the renderer composites.
2. Crop: only points that every camera of the orbit renders. The renderer marches rays
   from ray_start to ray_end (2.25 … 3.3 at radius 2.7), so a point farther than
   radius − ray_start (0.45) from the orbit centre is cut off by the near limit from the
   cameras on its side and seen from the others. GANs use that: `pretrained/mannequin64`
   paints its light background with a shell of dense white fog from ~0.45 out, behind the
   head from every camera and never in front of it. No static scene can do that (from
   outside, the shell hides the head), so density is weighted by `crop_window`: 1 inside
   the ball of `radius`, 0 outside, a one-voxel linear ramp across its surface (a
   staircase of whole voxels left bright patches where the ball cuts the fog).
3. Visibility at the generator's cameras: rays through every pixel of `c_vis` (the orbit:
   all yaws, the training pitches) sampled every half voxel from ray_start to ray_end
   through the cropped density grid (trilinear); a voxel's weight is the most it adds to
   any pixel, max over rays of T·(1 − exp(−density·h)) (T the transmittance where the ray
   sample rounds to the voxel, h the voxel size). Voxels with weight < `min_weight` (half
   an 8-bit level by default) are never seen: the inside of the head, the parts the crop
   and the frames leave out.
4. One Gaussian per kept voxel with σ ≥ `threshold`: at the voxel centre, isotropic with
   standard deviation `scale`·h (0.5: the footprints of a lattice sum to a flat sheet, ±3 %),
   the decoder's RGB there, and the opacity of `splat_opacity`, which makes a lattice of
   such Gaussians absorb like the volume it replaces: a splat of opacity o and deviation s
   acts on a ray like a density o/(√(2π)·s)·exp(−r²/2s²) (its line integral), summed over
   a lattice of spacing h o·2πs²/h³; so o = 1 − exp(−density·h/(2πs²)) (exact for thin
   density, saturating for dense), plus 1/255, which is exactly what the rasterisers'
   alpha < 1/255 cut takes off a thin splat. More voxels than `num`: the grid is coarsened
   until they fit (`extract_splats`).

So the splats are the surface seen from the cameras plus the voxels just behind it until
the transmittance is gone, not a fit: no optimisation, one grid and one visibility pass.
Why this: it renders like the generator's volume from every direction by construction
(the test and BENCHMARKS.md measure it). Taking points along the rays where T·α is large
gives view-dependent points (each view's depth) that duplicate where views overlap and
cannot tell the fog backdrop from the head; a σ level set (the mesh's) loses the soft
edges and the semi-transparent parts.

Viewing resolution: every 3DGS rasteriser adds 0.3 px² to each splat's 2D covariance
without lowering its opacity, so splats about a pixel wide cover more than they should:
at the generator's 64², the default 48³ grid (2 px voxels) renders 28 dB against the
volume, 36.6 dB at 128², and a 64³ grid 23 dB at 64² but 34 dB at 128² (BENCHMARKS.md).

Files (`ply_bytes`, `write_ply`, `read_ply`): binary little-endian PLY with one `vertex`
element of float32 properties in the order the reference code (graphdeco-inria
gaussian-splatting, GaussianModel.save_ply) writes them: x y z nx ny nz f_dc_0..2
[f_rest_0..44] opacity scale_0..2 rot_0..3. Opacity is stored as its logit, scales as
logs, rot_0 is the quaternion's w, colour as degree-0 spherical harmonics
f_dc = (rgb − 0.5)/C0, C0 = 0.28209479177387814; normals are zeros (as the reference).
sh_degree=0 writes no f_rest (68 bytes per splat): SuperSplat, antimatter15/splat,
mkkellogg's GaussianSplats3D, gsplat and the reference's own load_ply at degree 0 read it;
the reference's SIBR viewer hard-codes degree 3, so sh_degree=3 pads 45 zero f_rest
(the reference's f_rest order, 248 bytes per splat).

Coordinates: `convention="world"` is ours (x right, y up, z towards the face: the cameras'
frame, as `export.mesh`); `"3dgs"` is the frame 3DGS/COLMAP scenes come in and splat
viewers expect, y down and z away from the viewer of the face: (x, −y, −z), a 180°
rotation about x (quaternions turned with it). Each is the other's inverse.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from styleavatar_jax import sampling
from styleavatar_jax.export import mesh as mesh_io
from styleavatar_jax.files import write_atomic
from styleavatar_jax.render.composite import composite
from styleavatar_jax.render.rays import pixel_rays
from styleavatar_jax.render.splats import ALPHA_MAX, ALPHA_MIN, rasterize

SH_C0 = 0.28209479177387814  # degree-0 real spherical harmonic, 1 / (2√π)
CONVENTIONS = ("world", "3dgs")
MAX_SPLATS = 10_000_000  # --num above this is a typo (a 68 MB file per million splats)
_FLIP = np.array([1.0, -1.0, -1.0], np.float32)  # world <-> 3dgs: 180° about x


class Splats(NamedTuple):
    """3D Gaussians, activated values (the file stores logit / log / SH)."""

    means: np.ndarray  # [N, 3] float32
    scales: np.ndarray  # [N, 3] float32, standard deviations along the rotated axes
    quats: np.ndarray  # [N, 4] float32, unit (w, x, y, z)
    opacities: np.ndarray  # [N] float32 in (0, 1)
    colors: np.ndarray  # [N, 3] float32 RGB (the SH's DC term evaluated: C0·f_dc + 0.5)


# --- from the field -----------------------------------------------------------------------


def density_of(sigma):
    """Raw σ [...] -> the density the renderer composites, softplus(σ − 1) [...]."""
    return np.logaddexp(0.0, np.asarray(sigma, np.float64) - 1.0).astype(np.float32)


def crop_radius(camera_radius: float, ray_start: float | None, ray_end: float | None):
    """The ball every camera of an orbit of `camera_radius` renders whole: radius
    min(R − ray_start, ray_end − R), or None (no crop) when the renderer uses the box's own
    limits (ray_start None)."""
    if ray_start is None or ray_end is None:
        return None
    return max(0.0, min(camera_radius - ray_start, ray_end - camera_radius))


def orbit_labels(camera: dict, num_yaws: int = 24, pitches_deg=(-30.0, 0.0, 30.0)):
    """The cameras a 360° orbit generator renders from: num_yaws yaws over the full turn ×
    the pitches (degrees) -> labels [num_yaws·P, 25]."""
    yaw = np.radians(np.arange(num_yaws) * 360.0 / num_yaws)
    yaw, pitch = np.meshgrid(yaw, np.radians(np.asarray(pitches_deg, np.float64)))
    return sampling.view_labels(yaw.ravel().astype(np.float32),
                                pitch.ravel().astype(np.float32), camera)  # fmt: skip


def _ray_samples(c, resolution: int, near: float, far: float, samples: int):
    """Labels c [V, 25] -> sample points [V, r², S, 3] and depths [S] (uniform, ends
    included)."""
    c = jnp.asarray(c, jnp.float32)
    origins, dirs = pixel_rays(c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3),
                               resolution)  # fmt: skip
    t = jnp.linspace(near, far, samples, dtype=jnp.float32)
    return origins[:, :, None] + t[:, None] * dirs[:, :, None], t


def visibility(density, c, *, box: float, near: float, far: float, resolution: int = 64,
               samples: int | None = None) -> np.ndarray:  # fmt: skip
    """Per voxel, the most it adds to any pixel of the cameras c.

    density [R, R, R] on `mesh.grid_points(R, box)` (x, y, z order), c [V, 25] ->
    weight [R, R, R] float32 in [0, 1]: max over the pixel rays at resolution² of T·α,
    α = 1 − exp(−density·h) (h = box/(R − 1)), T the transmittance where the ray meets the
    voxel; rays run from `near` to `far` with `samples` points (default: every h/2),
    density trilinear between voxels, 0 outside the box.
    """
    density = jnp.asarray(density, jnp.float32)
    res = density.shape[0]
    h = box / (res - 1)
    samples = samples or max(2, math.ceil(2 * (far - near) / h) + 1)
    delta = (far - near) / (samples - 1)
    alpha_voxel = 1 - jnp.exp(-density * h).ravel()
    return np.asarray(_visibility(density, alpha_voxel, jnp.asarray(c, jnp.float32), box,
                                  near, far, resolution, samples, delta))  # fmt: skip


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8))
def _visibility(density, alpha_voxel, c, box, near, far, resolution, samples, delta):
    res = density.shape[0]
    h = box / (res - 1)

    def one(label):
        pts, _ = _ray_samples(label[None], resolution, near, far, samples)
        g = (pts[0] + box / 2) / h  # [r², S, 3] in voxel units
        dens = jax.scipy.ndimage.map_coordinates(density, tuple(jnp.moveaxis(g, -1, 0)),
                                                 order=1, mode="constant", cval=0.0)  # fmt: skip
        alpha = 1 - jnp.exp(-dens * delta)
        trans = jnp.cumprod(jnp.concatenate([jnp.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]],
                                            axis=1), axis=1)  # fmt: skip
        idx = jnp.round(g).astype(jnp.int32)
        inside = jnp.all((idx >= 0) & (idx < res), axis=-1)
        flat = jnp.where(inside, (idx[..., 0] * res + idx[..., 1]) * res + idx[..., 2], 0)
        seen = jnp.where(inside, trans * alpha_voxel[flat], 0.0)
        return jnp.zeros(res**3, jnp.float32).at[flat.ravel()].max(seen.ravel())

    def body(best, label):
        return jnp.maximum(best, one(label)), None

    best, _ = jax.lax.scan(body, jnp.zeros(res**3, jnp.float32), c)
    return best.reshape(res, res, res)


def field_grid(field: mesh_io.FieldFn, res: int, box: float, chunk: int = 65536):
    """A field on the res³ grid of `mesh.grid_points` -> sigma [R, R, R], rgb [R, R, R, 3]."""
    pts = mesh_io.grid_points(res, box).reshape(-1, 3)
    rgb, sigma = mesh_io.query_chunked(field, pts, chunk)
    return sigma.reshape(res, res, res), rgb.reshape(res, res, res, 3)


def _no_splats(what: str, sigma_in: np.ndarray, threshold: float) -> ValueError:
    if sigma_in.size:
        lo, hi = float(sigma_in.min()), float(sigma_in.max())
        p50, p90, p99 = np.percentile(sigma_in, [50, 90, 99])
        hint = (f"σ in the crop ranges over [{lo:.3g}, {hi:.3g}] (percentiles 50/90/99: "
                f"{p50:.3g} / {p90:.3g} / {p99:.3g}); try --threshold {p90:.3g}")  # fmt: skip
    else:
        hint = "no grid point lies in the crop ball; use a larger --radius"
    return ValueError(f"--threshold={threshold:g}: {what}; {hint}")


def crop_window(points, radius: float | None, edge: float, center=(0.0, 0.0, 0.0)):
    """The crop as a weight on density: points [..., 3] -> [...] float32 in [0, 1],
    clip((radius − |p − center|)/edge + ½, 0, 1): 1 inside the ball, 0 outside, a linear
    ramp `edge` wide across its surface (a voxel's share of the ball when edge is the voxel
    size, so the edge is antialiased rather than a staircase). Ones when radius is None."""
    points = np.asarray(points, np.float32)
    if radius is None:
        return np.ones(points.shape[:-1], np.float32)
    dist = np.linalg.norm(points - np.asarray(center, np.float32), axis=-1)
    return np.clip((radius - dist) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def splat_opacity(density, h: float, scale: float) -> np.ndarray:
    """The opacity that makes a lattice of spacing h of Gaussians with deviation scale·h
    absorb like the density it stands for: density [...] -> [...] float32,
    1 − exp(−density·h/(2π·scale²)) + 1/255 (every rasteriser drops alphas below 1/255,
    which takes exactly 1/255 off a thin splat's integrated opacity), at most 0.99."""
    tau = np.asarray(density, np.float64) * h / (2 * np.pi * scale**2)
    return np.minimum(1 - np.exp(-tau) + ALPHA_MIN, ALPHA_MAX).astype(np.float32)


def splats_from_grid(density, rgb, weight, *, box: float, num: int, min_weight: float,
                     scale: float) -> Splats:  # fmt: skip
    """Grid values -> Gaussians (step 4 of the module docstring): one per voxel with
    density > 0 and weight ≥ min_weight, the `num` largest weights if more.

    density [R, R, R] (softplus(σ − 1), cropped and thresholded), rgb [R, R, R, 3], weight
    [R, R, R] (`visibility`) -> Splats [N ≤ num], the most visible first. Empty when no
    voxel qualifies.
    """
    if num < 1 or num > MAX_SPLATS:
        raise ValueError(f"--num={num}: expected 1 … {MAX_SPLATS}")
    res = density.shape[0]
    idx = np.flatnonzero((density > 0) & (weight >= min_weight))
    idx = idx[np.argsort(-weight.ravel()[idx], kind="stable")][:num]
    h = box / (res - 1)
    opacity = splat_opacity(density.ravel()[idx], h, scale)
    n = len(idx)
    return Splats(
        means=mesh_io.grid_points(res, box).reshape(-1, 3)[idx].astype(np.float32),
        scales=np.full((n, 3), scale * h, np.float32),
        quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
        opacities=opacity,
        colors=np.clip(rgb.reshape(-1, 3)[idx], 0, 1).astype(np.float32),
    )


def _grid_pass(field, c_vis, *, res, box, near, far, radius, threshold, min_weight, vis_res,
               chunk, center):  # fmt: skip
    """Steps 1-3 at one grid resolution -> (density, rgb, weight, visible count, σ in crop)."""
    sigma, rgb = field_grid(field, res, box, chunk)
    inside = crop_window(mesh_io.grid_points(res, box), radius, box / (res - 1), center)
    sigma_in = sigma[inside > 0]
    dens = np.where(sigma >= threshold, density_of(sigma) * inside, 0.0).astype(np.float32)
    if not np.any(dens > 0):
        raise _no_splats("no grid point in the crop has σ at or above it", sigma_in, threshold)
    weight = visibility(dens, c_vis, box=box, near=near, far=far, resolution=vis_res)
    visible = int(np.sum((dens > 0) & (weight >= min_weight)))
    if not visible:
        raise _no_splats(f"no point at or above it is visible from the cameras (weight ≥ "
                         f"{min_weight:.3g})", sigma_in, threshold)  # fmt: skip
    return dens, rgb, weight, visible, sigma_in


def extract_splats(field: mesh_io.FieldFn, c_vis, *, box: float, near: float, far: float,
                   radius: float | None, res: int = 48, threshold: float = 0.0,
                   num: int = 100_000, min_weight: float = 0.5 / 255, scale: float = 0.5,
                   vis_res: int = 64, chunk: int = 65536, center=(0.0, 0.0, 0.0)):  # fmt: skip
    """A radiance field -> (Splats in world coordinates, info dict), steps 1-4 of the
    module docstring.

    field: points [N, 3] -> (rgb [N, 3], sigma [N]) (`mesh.generator_field`); c_vis [V, 25]
    the cameras that decide visibility (`orbit_labels`); near/far the renderer's ray range;
    radius the crop ball about `center` (`crop_radius`; None: the whole box).

    At most `num` Gaussians: when more voxels qualify, the grid is coarsened (the count
    grows as res³: the fog is a volume) until they fit, so the budget buys bigger
    Gaussians over the same parts rather than losing the least visible voxels, which thins
    the translucent ones; after 4 tries the most visible `num` are kept. info: res (the
    grid used), voxel (h), visible (voxels that qualified at that res), sigma_range (raw σ
    in the crop). No qualifying voxel is a ValueError that suggests a --threshold.
    """
    if res < 2:
        raise ValueError(f"--res={res}: expected at least 2")
    if num < 1 or num > MAX_SPLATS:
        raise ValueError(f"--num={num}: expected 1 … {MAX_SPLATS}")
    kw = dict(box=box, near=near, far=far, radius=radius, threshold=threshold,
              min_weight=min_weight, vis_res=vis_res, chunk=chunk, center=center)  # fmt: skip
    for attempt in range(4):
        dens, rgb, weight, visible, sigma_in = _grid_pass(field, c_vis, res=res, **kw)
        if visible <= num or res <= 2 or attempt == 3:
            break
        res = max(2, min(res - 1, 1 + int((res - 1) * (num / visible) ** (1 / 3))))
    splats = splats_from_grid(dens, rgb, weight, box=box, num=num, min_weight=min_weight,
                              scale=scale)  # fmt: skip
    info = {"res": res, "voxel": box / (res - 1), "visible": visible,
            "sigma_range": (float(sigma_in.min()), float(sigma_in.max()))}  # fmt: skip
    return splats, info


# --- coordinates --------------------------------------------------------------------------


def to_convention(splats: Splats, convention: str) -> Splats:
    """World-frame splats -> `convention` ("world": unchanged; "3dgs": (x, −y, −z), y down,
    quaternions rotated 180° about x). Its own inverse: 3dgs -> world is the same call."""
    if convention not in CONVENTIONS:
        raise ValueError(f"--convention={convention}: expected one of {', '.join(CONVENTIONS)}")
    if convention == "world":
        return splats
    w, x, y, z = np.moveaxis(np.asarray(splats.quats, np.float32), -1, 0)
    quats = np.stack([-x, w, -z, y], -1)  # (0, 1, 0, 0) ⊗ q
    return splats._replace(means=np.asarray(splats.means, np.float32) * _FLIP, quats=quats)


# --- files --------------------------------------------------------------------------------


def ply_properties(sh_degree: int = 0) -> list[str]:
    """The reference code's vertex properties, in its order."""
    if sh_degree not in (0, 3):
        raise ValueError(f"--sh-degree={sh_degree}: expected 0 or 3")
    rest = [f"f_rest_{i}" for i in range(45)] if sh_degree == 3 else []
    return ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest, "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip


def _check(s: Splats) -> Splats:
    n = len(s.means)
    want = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,),
            "colors": (n, 3)}  # fmt: skip
    for name, shape in want.items():
        arr = np.asarray(getattr(s, name))
        if arr.shape != shape or not np.all(np.isfinite(arr)):
            raise ValueError(f"splats: {name} must be finite {shape}, got {arr.shape}")
    if np.any(np.asarray(s.scales) <= 0):
        raise ValueError("splats: scales must be > 0 (the file stores their logs)")
    return Splats(*(np.asarray(a, np.float32) for a in s))


def ply_bytes(splats: Splats, sh_degree: int = 0) -> bytes:
    """Splats -> the bytes of a 3DGS PLY (binary little-endian, float32 properties)."""
    s = _check(splats)
    names = ply_properties(sh_degree)
    n = len(s.means)
    o = np.clip(s.opacities.astype(np.float64), 1e-7, 1 - 1e-7)
    cols = {"opacity": np.log(o / (1 - o))}
    for i in range(4):
        cols[f"rot_{i}"] = s.quats[:, i]
    for i, axis in enumerate("xyz"):
        cols[axis] = s.means[:, i]
        cols[f"f_dc_{i}"] = (s.colors[:, i] - 0.5) / SH_C0
        cols[f"scale_{i}"] = np.log(s.scales[:, i])
    table = np.zeros((n, len(names)), "<f4")
    for j, name in enumerate(names):
        if name in cols:
            table[:, j] = cols[name]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}",
              *(f"property float {p}" for p in names), "end_header"]  # fmt: skip
    return ("\n".join(header) + "\n").encode("ascii") + table.tobytes()


def write_ply(path: str | os.PathLike, splats: Splats, sh_degree: int = 0) -> Path:
    """Write a 3DGS PLY atomically (nothing half-written on an error)."""
    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise ValueError(f"--out={path}: expected a file ending in .ply")
    data = ply_bytes(splats, sh_degree)
    return write_atomic(path, lambda f: f.write(data))


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2",
              "int16": "i2", "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4",
              "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4", "double": "f8",
              "float64": "f8"}  # fmt: skip


def read_ply(source: str | os.PathLike | bytes) -> tuple[Splats, dict[str, np.ndarray]]:
    """A 3DGS PLY (path or bytes) -> (Splats, all vertex properties by name, as stored).

    Reads binary little-endian files with a `vertex` element of scalar properties in any
    order (extra ones, such as f_rest, are returned but not used): what the reference code
    and most splat tools write.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    where = "splat PLY" if isinstance(source, bytes) else str(source)
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{where}: not a PLY file (no 'ply' ... 'end_header' header)")
    body = end + len(b"end_header")
    body += 2 if data[body : body + 2] == b"\r\n" else 1
    lines = data[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in [ln.strip() for ln in lines]:
        raise ValueError(f"{where}: expected 'format binary_little_endian 1.0'")
    count, fields, element = None, [], None
    for ln in lines:
        parts = ln.split()
        if parts[:1] == ["element"]:
            if element == "vertex" and parts[1] != "vertex":
                break  # what follows the vertices is not read
            element = parts[1]
            if element == "vertex":
                count = int(parts[2])
            elif count is None:
                raise ValueError(f"{where}: element {element!r} before the vertices")
        elif parts[:1] == ["property"] and element == "vertex":
            if parts[1] == "list" or parts[1] not in _PLY_TYPES:
                raise ValueError(f"{where}: vertex property {' '.join(parts[1:])!r} is not a "
                                 "scalar type")  # fmt: skip
            fields.append((parts[2], "<" + _PLY_TYPES[parts[1]]))
    if count is None:
        raise ValueError(f"{where}: no vertex element")
    dtype = np.dtype(fields)
    if len(data) - body < count * dtype.itemsize:
        raise ValueError(f"{where}: truncated ({len(data) - body} bytes of vertex data, "
                         f"{count} × {dtype.itemsize} expected)")  # fmt: skip
    v = np.frombuffer(data, dtype, count, body)
    props = {name: np.array(v[name]) for name in dtype.names}
    need = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
            "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    missing = [p for p in need if p not in props]
    if missing:
        raise ValueError(f"{where}: not a Gaussian splat PLY (missing {', '.join(missing)})")
    col = lambda *names: np.stack([props[p].astype(np.float32) for p in names], -1)
    quats = col("rot_0", "rot_1", "rot_2", "rot_3")
    quats /= np.maximum(np.linalg.norm(quats, axis=-1, keepdims=True), 1e-30)
    splats = Splats(
        means=col("x", "y", "z"),
        scales=np.exp(col("scale_0", "scale_1", "scale_2")),
        quats=quats,
        opacities=(1 / (1 + np.exp(-props["opacity"].astype(np.float64)))).astype(np.float32),
        colors=col("f_dc_0", "f_dc_1", "f_dc_2") * np.float32(SH_C0) + np.float32(0.5),
    )
    return splats, props


# --- checks: splats vs the generator ------------------------------------------------------


def render_splats(splats: Splats, c, resolution: int, background=(0.0, 0.0, 0.0)):
    """World-frame splats at labels c [V, 25] -> image [V, res, res, 3] in [0, 1] (the
    colours' range), alpha [V, res, res] (`render.splats.rasterize`)."""
    s = _check(splats)
    img, alpha = rasterize(s.means, s.scales, s.quats, s.opacities, s.colors,
                           jnp.asarray(c, jnp.float32), jnp.asarray(background, jnp.float32),
                           resolution=resolution)  # fmt: skip
    return np.asarray(img), np.asarray(alpha)


def render_field(field: mesh_io.FieldFn, c, *, resolution: int, near: float, far: float,
                 samples: int = 192, radius: float | None = None, edge: float = 0.02,
                 center=(0.0, 0.0, 0.0), chunk: int = 65536):  # fmt: skip
    """The generator's raw-RGB volume render of a field, densely sampled and cropped.

    field (`mesh.generator_field`), c [V, 25] -> image [V, res, res, 3] in [0, 1] over
    black (white_back off), alpha [V, res, res]: `samples` uniform depths per pixel ray
    from near to far, EG3D's midpoint compositing (`render.composite`), density weighted by
    `crop_window(radius, edge)` (the export's crop when edge is its voxel size; radius None:
    not cropped). With enough samples this is the image the
    generator's stratified + importance render estimates (at 12 + 12 samples, two draws of
    it differ by ~22 dB PSNR on `pretrained/mannequin64`).
    """
    images, alphas = [], []
    for label in np.asarray(c, np.float32):
        pts, t = _ray_samples(label[None], resolution, near, far, samples)
        pts = np.asarray(pts).reshape(-1, 3)
        rgb, sigma = mesh_io.query_chunked(field, pts, chunk)
        if radius is not None:  # density · window, back in raw σ for the compositing
            dens = density_of(sigma).astype(np.float64) * crop_window(pts, radius, edge, center)
            soft_inv = np.log(np.expm1(np.clip(dens, 1e-30, 30.0)))  # softplus⁻¹, exact < 30
            sigma = np.where(dens > 0, np.where(dens < 30, soft_inv, dens) + 1, -1e4)
        r2 = resolution * resolution
        depths = jnp.broadcast_to(t[None, None, :, None], (1, r2, samples, 1))
        rgb, sigma = rgb.reshape(1, r2, samples, 3), sigma.reshape(1, r2, samples, 1)
        feats, _, weights = composite(jnp.asarray(rgb), jnp.asarray(sigma), depths)
        images.append(np.asarray((feats + 1) / 2).reshape(resolution, resolution, 3))
        alphas.append(np.asarray(weights.sum(axis=2)).reshape(resolution, resolution))
    return np.stack(images), np.stack(alphas)


@functools.lru_cache(maxsize=4)
def _generator_renderer(G, views: int, resolution: int):
    from styleavatar_jax.export.frames import shared_uniforms

    def run(variables, planes, c, key):
        uniforms = shared_uniforms(key, views, resolution * resolution, G.cfg.render)
        planes_v = jnp.broadcast_to(planes, (views, *planes.shape[1:]))
        out = G.apply(variables, planes_v, c, neural_res=resolution, uniforms=uniforms,
                      method=G.render_planes)  # fmt: skip
        return out["features"][..., :3].reshape(views, resolution, resolution, 3)

    return jax.jit(run)


def render_generator(G, variables, planes, c, resolution: int, key: jax.Array) -> np.ndarray:
    """The generator's own raw-RGB render, its renderer as configured (stratified +
    importance samples, its background): planes [1, 3, H, W, C], c [V, 25] -> image
    [V, res, res, 3] in [0, 1]. One set of renderer uniforms from `key`, shared by the
    views (as `export.frames`)."""
    c = jnp.asarray(c, jnp.float32)
    run = _generator_renderer(G, c.shape[0], resolution)
    return np.asarray(run(variables, jnp.asarray(planes), c, key) + 1) / 2


def psnr(a, b, peak: float = 1.0) -> np.ndarray:
    """Images a, b [V, H, W, C] -> PSNR [V] in dB (per image)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(peak**2 / np.maximum(mse, 1e-20))
