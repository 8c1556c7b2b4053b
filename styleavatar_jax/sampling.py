"""JIT batch sampling of avatars: seeds -> ws -> planes -> many views, sharded over devices.

One compiled function per (batch, views) shape renders every view of a batch of seeds
from one backbone pass. The batch is laid out on the `data` axis of a Mesh over the local
devices; parameters are replicated. Renderer uniforms are drawn per seed and per view
(fold_in), so an image depends on its seed and view only, not on how seeds are batched or
sharded (except EG3D's depth clamp, which uses the batch's depth range).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax import cameras
from styleavatar_jax.models.triplane import TriPlaneGenerator
from styleavatar_jax.render.renderer import RenderUniforms, draw_uniforms
from styleavatar_jax.runtime import data_mesh


def parse_seeds(spec: str, flag: str = "--seeds") -> list[int]:
    """'0-63', '1,5,9' or '0-3,10' -> [ints]."""
    seeds: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"{flag}={spec!r}: expected 'A-B' or 'A,B,C' of non-negative integers")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise ValueError(f"{flag}={spec!r}: range {lo}-{hi} is empty")
        seeds.extend(range(lo, hi + 1))
    return seeds


def z_from_seeds(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """EG3D gen_samples.py's latents: RandomState(seed).randn(z_dim), so seeds match EG3D's."""
    return np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]).astype(np.float32)


def view_labels(yaw, pitch, camera: dict) -> np.ndarray:
    """yaw/pitch [V] (radians) -> EG3D labels [V, 25] on the config's orbit."""
    pose = cameras.pose_from_angles(yaw, pitch, camera["radius"], tuple(camera["pivot"]))
    k = cameras.fov_to_intrinsics(jnp.full(np.shape(yaw), camera["fov_degrees"]))
    return np.asarray(cameras.make_label(pose, k), np.float32)


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    neural_res: int
    truncation_psi: float = 1.0
    truncation_cutoff: int | None = 14
    noise_mode: str = "const"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """The first num_devices (default: all) local devices on one 'data' axis."""
    return data_mesh(jax.local_devices()[: num_devices or jax.local_device_count()])


def _per_seed_uniforms(G: TriPlaneGenerator, keys, view, n_rays: int) -> RenderUniforms:
    """Renderer uniforms for one view of each seed: fold_in(seed key, view) -> batch of B."""
    draw = lambda k: draw_uniforms(jax.random.fold_in(k, view), 1, n_rays, G.cfg.render)
    u = jax.vmap(draw)(keys)  # stratified [B, 1, R, S, 1], pdf [B, R, K]
    return RenderUniforms(u.stratified[:, 0], u.pdf.reshape(-1, u.pdf.shape[-1]))


def render_views(G: TriPlaneGenerator, settings: SampleSettings, variables, ws, c_views, seeds):
    """ws [B, L, w], c_views [V, 25], seeds [B] (renderer randomness) -> images
    [B, V, R, R, 3], depth [B, V, r, r, 1]: one backbone pass, then every view (traceable)."""
    s = settings
    keys = jax.vmap(lambda sd: jax.random.fold_in(jax.random.key(0), sd))(seeds)
    noise_rng = {"noise": jax.random.fold_in(keys[0], 1 << 20)}
    planes = G.apply(variables, ws, noise_mode=s.noise_mode, method=G.planes, rngs=noise_rng)

    def one_view(args):
        i, c_view = args
        c = jnp.broadcast_to(c_view, (ws.shape[0], c_view.shape[-1]))
        out = G.apply(
            variables,
            planes,
            ws,
            c,
            neural_res=s.neural_res,
            uniforms=_per_seed_uniforms(G, keys, i, s.neural_res**2),
            method=G.synthesis_from_planes,
        )
        return out["image"], out["image_depth"]

    views = jnp.arange(c_views.shape[0])
    images, depth = jax.lax.map(one_view, (views, c_views))  # [V, B, ...]
    return images.swapaxes(0, 1), depth.swapaxes(0, 1)


@functools.lru_cache(maxsize=32)
def make_sampler(G: TriPlaneGenerator, settings: SampleSettings, mesh: Mesh):
    """-> jitted fn(variables, z [B, z], c_cond [B, 25], c_views [V, 25], seeds [B]) ->
    (images [B, V, R, R, 3], depth [B, V, r, r, 1], ws [B, L, w]); B divisible by mesh size.
    Cached per (G, settings, mesh), so training snapshots reuse one compilation.
    """
    s = settings

    def sample(variables, z, c_cond, c_views, seeds):
        ws = G.apply(
            variables,
            z,
            c_cond,
            truncation_psi=s.truncation_psi,
            truncation_cutoff=s.truncation_cutoff,
            method=G.mapping,
        )
        images, depth = render_views(G, s, variables, ws, c_views, seeds)
        return images, depth, ws

    repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(
        sample, in_shardings=(repl, rows, rows, repl, rows), out_shardings=(rows, rows, rows)
    )


@functools.lru_cache(maxsize=32)
def make_ws_renderer(G: TriPlaneGenerator, settings: SampleSettings, mesh: Mesh):
    """-> jitted fn(variables, ws [B, L, w], c_views [V, 25], seeds [B]) -> (images
    [B, V, R, R, 3], depth [B, V, r, r, 1]): `make_sampler` for given ws (W-diffusion,
    inversion). settings' truncation is not applied: ws are used as given."""
    repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    fn = functools.partial(render_views, G, settings)
    return jax.jit(fn, in_shardings=(repl, rows, repl, rows), out_shardings=(rows, rows))


def sample_batches(
    G,
    variables,
    seeds: Sequence[int],
    c_views: np.ndarray,
    camera: dict,
    settings: SampleSettings,
    *,
    batch: int,
    mesh: Mesh,
):
    """Yield (seeds, images [b, V, R, R, 3], depth [b, V, r, r, 1], ws [b, L, w]) per batch.

    The last batch is padded to `batch` (one compilation) and cropped.
    """
    if batch % mesh.size:
        raise ValueError(f"--batch={batch} is not divisible by the {mesh.size} devices of the mesh")
    fn = make_sampler(G, settings, mesh)
    c_cond_one = view_labels(np.zeros(1), np.zeros(1), camera)[0]  # EG3D: frontal conditioning
    # Inputs placed explicitly: in a multi-process run jit takes no numpy for a sharded
    # argument (a training snapshot samples on process 0's devices alone).
    repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    variables = jax.device_put(variables, repl)
    c_views = jax.device_put(np.asarray(c_views), repl)
    c_cond = jax.device_put(np.broadcast_to(c_cond_one, (batch, c_cond_one.shape[0])), rows)
    for start in range(0, len(seeds), batch):
        chunk = list(seeds[start : start + batch])
        padded = chunk + [chunk[-1]] * (batch - len(chunk))
        z = jax.device_put(z_from_seeds(padded, G.cfg.z_dim), rows)
        seed_rows = jax.device_put(np.asarray(padded, np.int32), rows)
        images, depth, ws = jax.device_get(fn(variables, z, c_cond, c_views, seed_rows))
        n = len(chunk)
        yield chunk, images[:n], depth[:n], ws[:n]
