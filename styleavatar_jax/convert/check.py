"""Compare converted networks with outputs of the official EG3D code (an `_io.npz` file).

The npz format is tests/fixtures/README.md's: inputs z, c and the renderer's two uniform
draws; outputs ws, planes (subsampled), feature/raw/depth/final images (NCHW), D logits.
G_ema runs with noise_mode='const', ψ = 1 and the recorded uniforms; D runs on the
recorded images. Tolerances are the issue's: 1e-4 · max|ref| for ws and planes, 1e-3
absolute for images, depth and logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from styleavatar_jax.render.renderer import RenderUniforms

RELATIVE = ("ws", "planes_raw_sub16", "planes_sub16", "planes_crop0", "planes_stats")
ABSOLUTE = ("feature_image", "image_raw", "image_depth", "image", "logits")


def _planes_views(planes: np.ndarray) -> dict[str, np.ndarray]:
    """Our planes [B, 3, H, W, C] -> the fixture's views (all NCHW-based)."""
    p = planes.transpose(0, 1, 4, 2, 3)  # [B, 3, C, H, W]
    raw = p.reshape(p.shape[0], -1, *p.shape[-2:])  # [B, 96, H, W], EG3D's backbone image
    flat = raw.reshape(*raw.shape[:2], -1)
    return {
        "planes_raw_sub16": raw[:, :, 5::16, 5::16],
        "planes_sub16": p[:, :, :, 5::16, 5::16],
        "planes_crop0": raw[0, :, 124:132, 124:132],
        "planes_stats": np.stack([flat.mean(-1), flat.std(-1, ddof=1), np.abs(flat).max(-1)], -1),
    }


def run_reference_inputs(
    G, g_vars, D, d_vars, io: Mapping[str, np.ndarray], neural_res: int
) -> dict[str, np.ndarray]:
    """Our outputs on the npz's inputs, in the npz's layouts."""
    uniforms = RenderUniforms(
        jnp.asarray(io["rng/00_stratified_jitter"]), jnp.asarray(io["rng/01_pdf_u"])
    )
    g = jax.jit(
        lambda v, z, c, u: G.apply(v, z, c, neural_res=neural_res, noise_mode="const", uniforms=u)
    )
    out = jax.device_get(g(g_vars, jnp.asarray(io["z"]), jnp.asarray(io["c"]), uniforms))
    nchw = lambda x: np.asarray(x).transpose(0, 3, 1, 2)
    result = {
        "ws": np.asarray(out["ws"]),
        "feature_image": nchw(out["feature_image"]),
        "image_raw": nchw(out["image_raw"]),
        "image_depth": nchw(out["image_depth"]),
        "image": nchw(out["image"]),
    }
    result.update(_planes_views(np.asarray(out["planes"])))
    if D is not None and "logits" in io:
        nhwc = lambda x: jnp.asarray(x).transpose(0, 2, 3, 1)
        d = jax.jit(lambda v, a, b, c: D.apply(v, a, b, c))
        result["logits"] = np.asarray(
            d(d_vars, nhwc(io["image"]), nhwc(io["image_raw"]), jnp.asarray(io["c"]))
        )
    return result


def compare(
    ours: Mapping[str, np.ndarray], io: Mapping[str, Any]
) -> list[tuple[str, float, float]]:
    """[(name, max abs error, tolerance)] for every output present in both."""
    rows = []
    for name in RELATIVE + ABSOLUTE:
        if name not in ours or name not in io:
            continue
        ref = np.asarray(io[name], np.float64)
        if ours[name].shape != ref.shape:
            raise ValueError(
                f"{name}: our output has shape {ours[name].shape}, the reference {ref.shape}"
            )
        err = float(np.max(np.abs(ours[name] - ref)))
        tol = 1e-4 * float(np.max(np.abs(ref))) if name in RELATIVE else 1e-3
        rows.append((name, err, tol))
    return rows
