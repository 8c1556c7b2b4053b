"""W-diffusion evaluation that needs no download, on held-out (w, e) pairs:

- w recovery: mean ‖w_sampled − w_true‖ against ‖w_random − w_true‖ (w_random: the w of
  another held-out pair, i.e. a mapping-net sample); ratio < 1 means the condition is used.
- w-space FD: Fréchet distance between sampled w (one per held-out condition) and the
  held-out mapping-net w, without (λ = 1) and with guidance (each λ asked for).
- references for both, from the training rows (when given): the w-space FD between an
  equal number of training w and the held-out w (two real sets: the floor), and the FD and
  distance of the training mean w repeated (a model that ignores everything).
- CLIP similarity (when an embedder is given): cos(e, embed(front view of sampled w))
  against the random baseline cos(e_i, e_j) of unrelated pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from styleavatar_jax import sampling
from styleavatar_jax.eval.fid import fid_from_features
from styleavatar_jax.wdiff import pairs as pairs_lib
from styleavatar_jax.wdiff.sample import sample_w, ws_from_w


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-8)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-8)
    return np.sum(a * b, axis=-1)


def front_views(
    G, g_vars, w: np.ndarray, camera: dict, neural_res: int, mesh, batch: int = 32
) -> np.ndarray:
    """w [N, w_dim] -> front renders float [N, R, R, 3] in [0, 1] (the pairs' view)."""
    settings = sampling.SampleSettings(
        neural_res=neural_res, truncation_psi=1.0, truncation_cutoff=None
    )
    fn = sampling.make_ws_renderer(G, settings, mesh)
    batch = max(mesh.size, batch - batch % mesh.size)
    ws = ws_from_w(w, num_ws(G, g_vars))
    c = pairs_lib.front_label(camera)
    out = []
    for start in range(0, len(ws), batch):
        chunk = ws[start : start + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
        images, _ = fn(g_vars, padded, c, np.arange(batch, dtype=np.int32))
        out.append(np.asarray(images)[: len(chunk), 0])
    return np.clip((np.concatenate(out) + 1) / 2, 0, 1)


def num_ws(G, g_vars) -> int:
    """How many ws G's synthesis takes (the shape of an abstract mapping call)."""
    z = jnp.zeros((1, G.cfg.z_dim))
    c = jnp.zeros((1, G.cfg.c_dim))
    return jax.eval_shape(lambda v: G.apply(v, z, c, method=G.mapping), g_vars).shape[1]


def evaluate(
    wd,
    pairs: pairs_lib.Pairs,
    heldout: np.ndarray,
    *,
    guidance=(1.0, 3.0),
    steps: int,
    eta: float = 0.0,
    seed: int = 0,
    mesh,
    G=None,
    g_vars=None,
    camera: dict | None = None,
    neural_res: int | None = None,
    embed=None,
    batch: int = 64,
    train_rows: np.ndarray | None = None,
) -> dict:
    """Metrics (module docstring) over the held-out rows -> a JSON-able dict."""
    if len(heldout) < 2:
        raise ValueError(
            f"{len(heldout)} held-out pairs: evaluation needs at least 2 "
            "(raise config.train.heldout or make more pairs)"
        )
    w_true, e = pairs.w[heldout], pairs.e[heldout]
    shift = np.roll(np.arange(len(heldout)), 1)  # a derangement: each row another pair
    random_dist = float(np.linalg.norm(w_true[shift] - w_true, axis=-1).mean())
    result = {
        "num_heldout": int(len(heldout)),
        "steps": steps,
        "eta": eta,
        "seed": seed,
        "w_distance_random": random_dist,
        "clip_similarity_random": float(_cos(e, e[shift]).mean()),
        "guidance": {},
    }
    if train_rows is not None and len(train_rows) >= 2:
        w_train = pairs.w[train_rows]
        mean_w = np.broadcast_to(w_train.mean(0), w_true.shape)
        result["references"] = {
            "w_fd_real": fid_from_features(w_train[: len(w_true)], w_true),
            "num_real": int(min(len(w_train), len(w_true))),
            "w_fd_mean_w": fid_from_features(mean_w, w_true),
            "w_distance_mean_w": float(np.linalg.norm(mean_w - w_true, axis=-1).mean()),
        }
    for lam in guidance:
        w = sample_w(
            wd,
            e,
            num=1,
            steps=steps,
            eta=eta,
            guidance=None if lam == 1.0 else lam,
            seed=seed,
            batch=batch,
            mesh=mesh,
        )[:, 0]
        dist = float(np.linalg.norm(w - w_true, axis=-1).mean())
        row = {
            "w_distance": dist,
            "w_distance_ratio": dist / random_dist,
            "w_fd": fid_from_features(w, w_true),
        }
        if embed is not None and G is not None:
            views = front_views(G, g_vars, w, camera, neural_res, mesh)
            row["clip_similarity"] = float(_cos(e, np.asarray(embed(views))).mean())
        result["guidance"][f"{lam:g}"] = row
    return result
