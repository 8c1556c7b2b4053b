"""(w, e) pairs for W-diffusion: z -> w with G_ema's mapping net, the front view rendered,
e = an image embedding of it (CLIP). Written once to an .npz and reused by training and
evaluation.

    PAIRS.npz:  w [N, w_dim] float32     the mapping net's w (no truncation)
                e [N, cond_dim] float32  L2-normalised image embedding of the front view
                seeds [N] int64          z = RandomState(seed).randn(z_dim) (as EG3D)
                meta                     JSON: gan run, checkpoint step, embedder, camera, ...

The denoiser sees `condition(e)` = e / |e| · √cond_dim (unit variance per dimension), so a
text embedding, normalised the same way, conditions it too (CLIP's shared space).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from styleavatar_jax import sampling
from styleavatar_jax.files import load_npz, write_npz

# images [B, H, W, 3] float in [0, 1] -> embeddings [B, D]
Embedder = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Pairs:
    w: np.ndarray  # [N, w_dim]
    e: np.ndarray  # [N, cond_dim]
    seeds: np.ndarray  # [N]
    meta: dict

    def __len__(self) -> int:
        return len(self.w)


def condition(e) -> jax.Array:
    """Embeddings [B, D] -> the denoiser's condition: unit direction scaled to norm √D."""
    e = jnp.asarray(e, jnp.float32)
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True).clip(1e-8) * math.sqrt(e.shape[-1])


def load_pairs(path: str | os.PathLike) -> Pairs:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such pairs file (make one with `wdiff-data`)")
    f = load_npz(p)
    missing = sorted({"w", "e", "seeds", "meta"} - set(f))
    if missing:
        raise ValueError(f"{p}: not a W-diffusion pairs file (no {missing})")
    w, e, seeds = f["w"], f["e"], f["seeds"]
    try:
        meta = json.loads(str(f["meta"]))
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}: not a W-diffusion pairs file (meta is not JSON: {err})") from err
    if w.ndim != 2 or e.ndim != 2 or len(w) != len(e) or len(seeds) != len(w):
        raise ValueError(
            f"{p}: expected w [N, w_dim], e [N, D], seeds [N]; got {w.shape}, "
            f"{e.shape}, {seeds.shape}"
        )
    return Pairs(w.astype(np.float32), e.astype(np.float32), seeds, meta)


def split(n: int, heldout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out) of n pairs: a seeded permutation, the last ⌈heldout·n⌉ out."""
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n)
    k = math.ceil(heldout * n) if heldout > 0 else 0
    if n - k < 1:
        raise ValueError(f"{n} pairs leave none for training with train.heldout={heldout}")
    return np.sort(perm[: n - k]), np.sort(perm[n - k :])


def front_label(camera: dict) -> np.ndarray:
    """The front view (yaw 0, pitch 0) on the config's orbit -> [1, 25]."""
    return sampling.view_labels(np.zeros(1), np.zeros(1), camera)


def make_pairs(
    G,
    g_vars,
    camera: dict,
    neural_res: int,
    embed: Embedder,
    *,
    num: int,
    batch: int,
    seed: int = 0,
    mesh=None,
    progress: bool = True,
    meta: dict | None = None,
) -> Pairs:
    """Sample `num` avatars (seeds seed..seed+num−1), render their front views and embed them.

    The renders use the sampler `sample` uses (noise 'const', no truncation), so the pairs
    match what from-image later shows for the same w."""
    mesh = mesh or sampling.make_mesh()
    settings = sampling.SampleSettings(
        neural_res=neural_res, truncation_psi=1.0, truncation_cutoff=None
    )
    seeds = list(range(seed, seed + num))
    ws, es = [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num, unit="pair", desc="pairs")
    for _, images, _, w in sampling.sample_batches(
        G, g_vars, seeds, front_label(camera), camera, settings, batch=batch, mesh=mesh
    ):
        rgb = np.clip((images[:, 0] + 1) / 2, 0, 1)  # [b, R, R, 3] in [0, 1]
        e = np.asarray(embed(rgb), np.float32)
        es.append(e / np.linalg.norm(e, axis=-1, keepdims=True).clip(1e-8))
        ws.append(np.asarray(w[:, 0], np.float32))
        if bar is not None:
            bar.update(len(e))
    if bar is not None:
        bar.close()
    info = {
        "camera": dict(camera),
        "view": "front (yaw 0, pitch 0)",
        "neural_res": neural_res,
        "truncation_psi": 1.0,
        "noise_mode": "const",
        **(meta or {}),
    }
    return Pairs(np.concatenate(ws), np.concatenate(es), np.asarray(seeds, np.int64), info)


def save_pairs(path: str | os.PathLike, pairs: Pairs) -> Path:
    """Atomic write (temp file, then rename)."""
    return write_npz(
        path,
        w=pairs.w,
        e=pairs.e,
        seeds=pairs.seeds,
        meta=np.asarray(json.dumps(pairs.meta, sort_keys=True)),
    )
