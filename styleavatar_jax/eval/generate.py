"""Images and depth of G for metrics: one camera per image, sharded over a data mesh.

EG3D's metrics condition the mapping on the camera they render from (c_cond = c_render,
labels drawn from the dataset); multi-view consistency renders one avatar from two
cameras, so the conditioning is a separate input. One compiled program per
(G, settings, mesh) and batch shape serves both. z for seed s is EG3D's
`RandomState(s).randn` (`sampling.z_from_seeds`); renderer uniforms are drawn from the
seed, so an image depends on (seed, c_cond, c_render) only, not on its batch (except
EG3D's depth clamp, which uses the batch's sample range).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax import cameras
from styleavatar_jax.models.triplane import TriPlaneGenerator
from styleavatar_jax.render.renderer import draw_uniforms
from styleavatar_jax.sampling import SampleSettings, z_from_seeds


@functools.lru_cache(maxsize=16)
def make_renderer(G: TriPlaneGenerator, settings: SampleSettings, mesh: Mesh):
    """-> jitted fn(variables, z [B, z], c_cond [B, 25], c_render [B, 25], seeds [B] int32)
    -> (image [B, R, R, 3] in [−1, 1], depth [B, r, r, 1] ray distances); B divisible by
    the mesh size."""
    s = settings

    def render(variables, z, c_cond, c_render, seeds):
        ws = G.apply(variables, z, c_cond, truncation_psi=s.truncation_psi,
                     truncation_cutoff=s.truncation_cutoff, method=G.mapping)  # fmt: skip
        draw = lambda sd: draw_uniforms(jax.random.fold_in(jax.random.key(0), sd), 1,
                                        s.neural_res**2, G.cfg.render)  # fmt: skip
        u = jax.vmap(draw)(seeds)  # stratified [B, 1, R, S, 1], pdf [B, R, K]
        u = type(u)(u.stratified[:, 0], u.pdf.reshape(-1, u.pdf.shape[-1]))
        noise = {"noise": jax.random.key(1)}  # unused unless noise_mode == "random"
        out = G.apply(variables, ws, c_render, neural_res=s.neural_res, noise_mode=s.noise_mode,
                      uniforms=u, method=G.synthesis, rngs=noise)  # fmt: skip
        return out["image"], out["image_depth"]

    repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(render, in_shardings=(repl, rows, rows, rows, rows), out_shardings=(rows, rows))


def render_batches(
    G: TriPlaneGenerator,
    variables,
    seeds: Sequence[int],
    c_cond: np.ndarray,
    c_render: np.ndarray,
    settings: SampleSettings,
    *,
    batch: int,
    mesh: Mesh,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (images [b, R, R, 3], depth [b, r, r, 1]) for seeds [N] with labels c_cond,
    c_render [N, 25], `batch` at a time (the last batch padded to one compiled shape)."""
    if batch < 1 or batch % mesh.size:
        raise ValueError(f"--batch={batch}: must be a positive multiple of the {mesh.size} "
                         f"devices of the mesh")  # fmt: skip
    n = len(seeds)
    if c_cond.shape != (n, 25) or c_render.shape != (n, 25):
        raise ValueError(f"labels: expected [{n}, 25], got {c_cond.shape}, {c_render.shape}")
    fn = make_renderer(G, settings, mesh)
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    for start in range(0, n, batch):
        idx = np.arange(start, min(start + batch, n))
        idx = np.concatenate([idx, np.full(batch - len(idx), idx[-1])])
        seed_rows = np.asarray(seeds, np.int64)[idx]
        z = z_from_seeds(seed_rows.tolist(), G.cfg.z_dim)
        images, depth = jax.device_get(fn(variables, z, c_cond[idx], c_render[idx],
                                          seed_rows.astype(np.int32)))  # fmt: skip
        k = min(batch, n - start)
        yield images[:k], depth[:k]


def random_labels(key: jax.Array, n: int, camera: dict) -> np.ndarray:
    """n cameras [n, 25] on the config's orbit (`camera`: radius, fov_degrees, pivot), yaw
    uniform over 360°, pitch uniform in ±30° (`cameras.sample_uniform_views`)."""
    pose, _, _ = cameras.sample_uniform_views(key, n, radius=camera["radius"],
                                              pivot=tuple(camera["pivot"]))  # fmt: skip
    k = jnp.broadcast_to(cameras.fov_to_intrinsics(camera["fov_degrees"]), (n, 3, 3))
    return np.asarray(cameras.make_label(pose, k), np.float32)
