"""Many frames of a generator: planes once per latent, cameras rendered in jitted chunks.

A turntable computes each seed's planes once (`TriPlaneGenerator.planes`) and renders its
cameras `chunk` at a time; a latent walk computes the planes of each frame in the same
chunks. Chunks have a fixed size (the last is padded and cropped), so each function
compiles once, and are sharded over the `data` axis of the mesh (chunk divisible by it).

Every frame uses the same renderer uniforms (drawn from `key` for one view and shared), so
a frame depends on its latent and camera only, not on its chunk, and the stratified
sampling does not flicker from frame to frame.

Besides RGB (after super-resolution) a frame has, at the neural resolution:
- depth: the expected ray distance (EG3D's depth image) and alpha = Σ weights;
- normal: −∇σ/|∇σ| (σ the decoder's raw density, gradient by `jax.vjp`) at the expected
  surface point o + depth·d of each ray. The gradient of the field is exact where a depth
  map's finite differences are not (edges, low resolution) and costs one decoder pass.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax import sampling
from styleavatar_jax.models.triplane import TriPlaneGenerator
from styleavatar_jax.render.rays import pixel_rays
from styleavatar_jax.render.renderer import RenderUniforms, draw_uniforms

KINDS = ("rgb", "depth", "normal")
_YAW = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*:\s*(-?\d+(?:\.\d+)?)\s*")


@dataclasses.dataclass(frozen=True)
class FrameSettings:
    neural_res: int
    chunk: int = 8  # frames per compiled call (a multiple of the mesh size)
    noise_mode: str = "const"  # backbone noise
    normals: bool = True  # also compute the normal image


def surface_normals(sigma_fn, points: jax.Array) -> jax.Array:
    """Unit outward normals −∇σ/|∇σ| of a density field at points [..., 3] -> [..., 3].

    sigma_fn maps points [..., 3] to σ [..., 1] (σ grows inwards); zero where ∇σ = 0.
    """
    sigma, vjp = jax.vjp(sigma_fn, points)
    (grad,) = vjp(jnp.ones_like(sigma))
    norm = jnp.linalg.norm(grad, axis=-1, keepdims=True)
    return -grad / jnp.maximum(norm, 1e-12)


def camera_normals(normals: jax.Array, cam2world: jax.Array) -> jax.Array:
    """World normals [B, ..., 3] -> camera space as normal maps show them [B, ..., 3]:
    x right, y up, z towards the viewer (OpenCV's x, −y, −z), so a surface facing the
    camera is (0, 0, 1), drawn (128, 128, 255)."""
    rot = cam2world[:, :3, :3]
    cam = jnp.einsum("b...i,bij->b...j", normals, rot, precision="highest")  # Rᵀ n
    return cam * jnp.array([1.0, -1.0, -1.0], cam.dtype)


def shared_uniforms(key: jax.Array, batch: int, num_rays: int, cfg) -> RenderUniforms:
    """One view's renderer uniforms, repeated for `batch` views."""
    u = draw_uniforms(key, 1, num_rays, cfg)
    stratified = jnp.broadcast_to(u.stratified, (batch, *u.stratified.shape[1:]))
    return RenderUniforms(stratified, jnp.tile(u.pdf, (batch, 1)))


def _render_views(G: TriPlaneGenerator, planes, ws, c, *, neural_res: int, uniforms):
    """(bound G) planes [K, 3, H, W, C], ws [K, L, w], c [K, 25] -> image [K, R, R, 3],
    depth/alpha [K, r, r, 1], the synthesis_from_planes path plus Σ weights."""
    out = G.render_planes(planes, c, neural_res=neural_res, uniforms=uniforms)
    k, r = c.shape[0], neural_res
    feats = out["features"].reshape(k, r, r, -1)
    image = G.superresolution(feats[..., :3], feats, ws, noise_mode=G.cfg.sr_noise_mode)
    return {
        "image": image,
        "depth": out["depth"].reshape(k, r, r, 1),
        "alpha": out["weights_sum"].reshape(k, r, r, 1),
    }


@functools.lru_cache(maxsize=16)
def make_view_renderer(G: TriPlaneGenerator, settings: FrameSettings, mesh: Mesh):
    """-> jitted fn(variables, planes [K, ...], ws [K, L, w], c [K, 25], key) -> dict:
    image [K, R, R, 3] in [−1, 1], depth/alpha [K, r, r, 1], normal [K, r, r, 3] (camera
    space, see `camera_normals`; only with settings.normals). K = settings.chunk."""
    s = settings

    def run(variables, planes, ws, c, key):
        k = c.shape[0]
        uniforms = shared_uniforms(key, k, s.neural_res**2, G.cfg.render)
        out = G.apply(variables, planes, ws, c, neural_res=s.neural_res, uniforms=uniforms,
                      method=_render_views)  # fmt: skip
        if s.normals:
            cam2world = c[:, :16].reshape(-1, 4, 4)
            origins, dirs = pixel_rays(cam2world, c[:, 16:25].reshape(-1, 3, 3), s.neural_res)
            points = origins + out["depth"].reshape(k, -1, 1) * dirs  # [K, r², 3]
            sigma = lambda p: G.apply(variables, planes, p, method=G.sample_density)[1]
            n = camera_normals(surface_normals(sigma, points), cam2world)
            out["normal"] = n.reshape(k, s.neural_res, s.neural_res, 3)
        return out

    repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(run, in_shardings=(repl, rows, rows, rows, repl), out_shardings=rows)


@functools.lru_cache(maxsize=16)
def make_planes_fn(G: TriPlaneGenerator, noise_mode: str, mesh: Mesh):
    """-> jitted fn(variables, ws [B, L, w], key) -> planes [B, 3, H, W, C], B sharded."""

    def run(variables, ws, key):
        return G.apply(variables, ws, noise_mode=noise_mode, method=G.planes, rngs={"noise": key})

    repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(run, in_shardings=(repl, rows, repl), out_shardings=rows)


@functools.lru_cache(maxsize=16)
def make_mapping_fn(G: TriPlaneGenerator):
    """-> jitted fn(variables, z [B, z], c [B, 25]) -> ws [B, L, w] (untruncated)."""
    return jax.jit(lambda variables, z, c: G.apply(variables, z, c, method=G.mapping))


def truncate(ws: np.ndarray, w_avg: np.ndarray, psi, cutoff: int | None) -> np.ndarray:
    """EG3D truncation: w_avg + psi·(w − w_avg) on the first `cutoff` ws (all when None).

    ws [..., L, w], w_avg [w], psi a float or [...] (one per leading index) -> [..., L, w].
    """
    ws = np.asarray(ws, np.float32)
    psi = np.asarray(psi, np.float32).reshape(np.shape(psi) + (1, 1))
    cut = ws.shape[-2] if cutoff is None else cutoff
    head = w_avg + psi * (ws[..., :cut, :] - w_avg)
    return np.concatenate([head, ws[..., cut:, :]], axis=-2).astype(np.float32)


def seed_ws(G: TriPlaneGenerator, variables, seeds, camera: dict, psi: float,
            cutoff: int | None) -> np.ndarray:  # fmt: skip
    """seeds -> truncated ws [S, L, w] (frontal conditioning, as `sample`)."""
    z = sampling.z_from_seeds(seeds, G.cfg.z_dim)
    c = sampling.view_labels(np.zeros(len(seeds)), np.zeros(len(seeds)), camera)
    ws = np.asarray(make_mapping_fn(G)(variables, z, c))
    return truncate(ws, w_avg_of(variables), psi, cutoff)


def parse_yaw_range(spec: str, frames: int, flag: str = "--yaw") -> np.ndarray:
    """'A:B' degrees, frames -> yaw [frames] radians; B is left out for a whole number of
    turns (so the video loops), included otherwise."""
    m = _YAW.fullmatch(spec)
    if not m:
        raise ValueError(f"{flag}={spec!r}: expected A:B in degrees, e.g. -180:180")
    if frames < 1:
        raise ValueError(f"--frames={frames}: expected at least 1")
    a, b = float(m[1]), float(m[2])
    closed = a == b or abs(b - a) % 360 != 0
    return np.radians(np.linspace(a, b, frames, endpoint=closed)).astype(np.float32)


def w_avg_of(variables) -> np.ndarray:
    """G's tracked mean w [w_dim] (the truncation centre)."""
    return np.asarray(variables["buffers"]["backbone"]["mapping"]["w_avg"], np.float32)


def _chunks(n: int, size: int):
    """(start, stop, padded index array of `size`) covering range(n)."""
    for start in range(0, n, size):
        stop = min(start + size, n)
        idx = np.arange(start, start + size)
        yield start, stop, np.minimum(idx, n - 1)


def _to_host(out: dict, n: int) -> dict:
    return {k: np.asarray(jax.device_get(v))[:n] for k, v in out.items()}


def render_orbit(G, variables, ws: np.ndarray, c_frames: np.ndarray, settings: FrameSettings,
                 *, mesh: Mesh, key: jax.Array) -> dict[str, np.ndarray]:  # fmt: skip
    """Each latent's planes once, every camera of c_frames [T, 25] for each.

    ws [S, L, w] -> dict of [S, T, ...] arrays (image, depth, alpha[, normal]).
    """
    _check_chunk(settings, mesh)
    planes_fn = make_planes_fn(G, settings.noise_mode, mesh)
    render = make_view_renderer(G, settings, mesh)
    rows = NamedSharding(mesh, P("data"))
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    k, per_seed = settings.chunk, []
    for s in range(len(ws)):
        ws_rep = np.broadcast_to(ws[s], (mesh.size, *ws.shape[1:]))
        planes = planes_fn(variables, ws_rep, key)[:1]  # one backbone pass (per device)
        planes_k = jax.device_put(jnp.broadcast_to(planes, (k, *planes.shape[1:])), rows)
        ws_k = np.broadcast_to(ws[s], (k, *ws.shape[1:]))
        parts = []
        for start, stop, idx in _chunks(len(c_frames), k):
            parts.append(_to_host(render(variables, planes_k, ws_k, c_frames[idx], key),
                                  stop - start))  # fmt: skip
        per_seed.append({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})
    return {name: np.stack([d[name] for d in per_seed]) for name in per_seed[0]}


def render_frames(G, variables, ws: np.ndarray, c_frames: np.ndarray, settings: FrameSettings,
                  *, mesh: Mesh, key: jax.Array) -> dict[str, np.ndarray]:  # fmt: skip
    """One latent and one camera per frame (latent walks): ws [T, L, w], c_frames [T, 25] ->
    dict of [T, ...] arrays; the planes of each chunk of frames in one backbone pass."""
    _check_chunk(settings, mesh)
    if len(ws) != len(c_frames):
        raise ValueError(f"ws {ws.shape} and c_frames {c_frames.shape}: expected one per frame")
    planes_fn = make_planes_fn(G, settings.noise_mode, mesh)
    render = make_view_renderer(G, settings, mesh)
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    parts = []
    for start, stop, idx in _chunks(len(ws), settings.chunk):
        planes = planes_fn(variables, ws[idx], key)
        parts.append(_to_host(render(variables, planes, ws[idx], c_frames[idx], key),
                              stop - start))  # fmt: skip
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _check_chunk(settings: FrameSettings, mesh: Mesh):
    if settings.chunk < 1 or settings.chunk % mesh.size:
        raise ValueError(f"--batch={settings.chunk}: expected a positive multiple of the "
                         f"{mesh.size} devices of the mesh")  # fmt: skip


# --- frames to pictures -------------------------------------------------------------------


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    """[..., r, r, C] -> [..., size, size, C], nearest neighbour: output pixel i shows input
    pixel ⌊(i + ½)·r / size⌋ (pixel repetition when size is a multiple of r; e.g. a 48²
    neural render beside a 256² SR image)."""
    r = images.shape[-2]
    idx = ((np.arange(size) + 0.5) * r / size).astype(np.int64)
    return images[..., idx, :, :][..., idx, :]


def depth_pictures(depth: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """depth/alpha [..., 1] -> grey in [−1, 1] [..., 3]: near bright, far dark, over black.

    Near and far are the 1st/99th percentiles of the depth where alpha > 0.5 over *all*
    frames, so the shading does not flicker."""
    fg = depth[alpha > 0.5]
    near, far = np.percentile(fg, [1, 99]) if fg.size else (depth.min(), depth.max())
    shade = np.clip((far - depth) / max(far - near, 1e-8), 0, 1)
    grey = np.clip(alpha, 0, 1) * (0.15 + 0.85 * shade)
    return np.repeat(grey * 2 - 1, 3, axis=-1)


def normal_pictures(normal: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Camera-space normals [..., 3], alpha [..., 1] -> colours in [−1, 1] over black."""
    a = np.clip(alpha, 0, 1)
    return a * normal + (1 - a) * -1.0


def pictures(out: dict[str, np.ndarray], kinds, size: int) -> dict[str, np.ndarray]:
    """Renderer outputs -> {kind: images in [−1, 1] [..., size, size, 3]} for kinds."""
    pics = {}
    for kind in kinds:
        if kind == "rgb":
            pics[kind] = out["image"]
        elif kind == "depth":
            pics[kind] = upsample(depth_pictures(out["depth"], out["alpha"]), size)
        elif kind == "normal":
            pics[kind] = upsample(normal_pictures(out["normal"], out["alpha"]), size)
        else:
            raise ValueError(f"--kinds: unknown kind {kind!r}; expected some of {KINDS}")
    return pics
