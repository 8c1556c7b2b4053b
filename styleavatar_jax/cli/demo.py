"""The demo: train a small 3D avatar GAN from scratch on 2 CPU cores and show it learned.

1. Render a 360° mannequin dataset at 64² (train ids) and a held-out set (other ids).
2. Train configs/demo.py (tri-plane G, coarse-to-fine D, EG3D's losses) for at most
   `minutes` (or its total_kimg), checkpoints and TensorBoard logs in OUT/run.
3. Measure the sliced Wasserstein distance (PGGAN's SWD on Laplacian-pyramid patches, no
   download) between G_ema's images and the held-out real images, at the start and the
   end, next to the floor: the SWD between the training images and the held-out ones.
4. Write a multi-view grid (seeds × 8 yaws around the head) and a 360° turntable GIF.

The datasets are kept and reused by the next demo (they are deterministic); the run starts
from scratch every time (`--fresh` also deletes the datasets).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from styleavatar_jax import sampling
from styleavatar_jax.data.formats import open_dataset
from styleavatar_jax.eval.swd import swd
from styleavatar_jax.export.grid import image_grid, to_uint8, write_png
from styleavatar_jax.export.video import write_gif
from styleavatar_jax.heads.make_mannequin import MannequinDatasetConfig, make_mannequin_dataset
from styleavatar_jax.render.renderer import draw_uniforms
from styleavatar_jax.runtime import data_mesh
from styleavatar_jax.train import loop
from styleavatar_jax.train.config import training_configs
from styleavatar_jax.train.state import make_networks
from styleavatar_jax.typed_config import load_config_file

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.py"  # the repository's configs/


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    out: Path = Path("out/demo")
    minutes: float = 10.0  # training time budget (the config's total_kimg may end it sooner)
    train_ids: int = 120
    heldout_ids: int = 32
    views_per_id: int = 8
    metric_images: int = 256
    seed: int = 0


def make_data(s: DemoSettings, resolution: int) -> tuple[Path, Path]:
    """Train and held-out mannequin sets (different identity seeds) -> their folders."""
    common = dict(views_per_id=s.views_per_id, resolution=resolution, guidance=(), batch=16)
    train = MannequinDatasetConfig(num_ids=s.train_ids, seed=s.seed, **common)
    heldout = MannequinDatasetConfig(num_ids=s.heldout_ids, seed=s.seed + 1000, **common)
    paths = []
    for name, cfg in (("train", train), ("heldout", heldout)):
        print(f"[data] {name}: {cfg.num_images} mannequin images at {resolution}² "
              f"({cfg.num_ids} ids × {cfg.views_per_id} views, 360° yaw)")  # fmt: skip
        paths.append(make_mannequin_dataset(cfg, s.out / "data" / name).parent)
    return paths[0], paths[1]


@functools.lru_cache(maxsize=8)
def _render_fn(G, neural_res: int):
    """Jitted (variables, z [B, z], c [B, 25], key) -> images, compiled once per G."""

    def run(g_vars, z, c, key):
        u = draw_uniforms(key, z.shape[0], neural_res**2, G.cfg.render)
        return G.apply(g_vars, z, c, neural_res=neural_res, noise_mode="const", uniforms=u)["image"]

    return jax.jit(run)


def fake_images(G, g_vars, labels: np.ndarray, neural_res: int, seed: int, batch: int = 32):
    """G_ema images [N, R, R, 3] in [−1, 1], one per camera label [N, 25] (conditioned on
    that camera, as EG3D's metrics), z from `seed`; noise const, no truncation."""
    render = _render_fn(G, neural_res)

    out = []
    n = len(labels)
    for start in range(0, n, batch):
        c = labels[start : start + batch]
        pad = batch - len(c)
        c = np.concatenate([c, np.repeat(c[-1:], pad, 0)]) if pad else c
        key = jax.random.fold_in(jax.random.key(seed), start)
        z = jax.random.normal(jax.random.fold_in(key, 1), (batch, G.cfg.z_dim))
        out.append(np.asarray(render(g_vars, z, jnp.asarray(c), key))[: batch - pad])
    return np.concatenate(out)


def real_images(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images of a dataset (a seeded subset) -> uint8 [n, R, R, 3], labels [n, 25]."""
    with open_dataset(path) as src:
        idx = np.random.default_rng(seed).permutation(len(src))[:n]
        items = [src[int(i)] for i in idx]
    return np.stack([it["image"] for it in items]), np.stack([it["label"] for it in items])


def turntable(G, g_vars, cfg, neural_res: int, seeds, frames: int = 36) -> np.ndarray:
    """[frames, R, len(seeds)·R, 3] uint8: each seed turning 360° about the head."""
    yaw = np.linspace(0, 2 * np.pi, frames, endpoint=False).astype(np.float32)
    views = sampling.view_labels(yaw, np.zeros_like(yaw), cfg.camera)
    settings = sampling.SampleSettings(neural_res=neural_res, truncation_psi=0.8,
                                       truncation_cutoff=None)  # fmt: skip
    mesh = sampling.make_mesh(1)
    batches = sampling.sample_batches(G, g_vars, seeds, views, cfg.camera, settings,
                                      batch=len(seeds), mesh=mesh)  # fmt: skip
    images = np.concatenate([im for _, im, _, _ in batches])  # [S, V, R, R, 3]
    return to_uint8(np.concatenate(list(images), axis=2))  # seeds side by side


def run_demo(s: DemoSettings, *, fresh: bool = False, overrides: list[str] | None = None) -> dict:
    t0 = time.perf_counter()
    if fresh and s.out.exists():
        shutil.rmtree(s.out)
    cfg = load_config_file(str(CONFIG), overrides or [])
    tc = training_configs(cfg)
    res = tc.discriminator.img_resolution
    train_dir, heldout_dir = make_data(s, res)
    cfg.data.path = str(train_dir)
    nets = make_networks(tc.generator, tc.discriminator, tc.train, tc.pose)
    neural_res = int(cfg.model.neural_res)

    real, labels = real_images(heldout_dir, s.metric_images, s.seed)
    train_real, _ = real_images(train_dir, s.metric_images, s.seed)
    floor = swd(train_real, real, seed=s.seed)["mean"]
    metric = {}

    def measure(tag, g_vars):
        fakes = fake_images(nets.G, g_vars, labels, neural_res, seed=s.seed + 7)
        metric[tag] = swd(fakes, real, seed=s.seed)["mean"]
        print(f"[metric] SWD(G_ema {tag}, held-out real) = {metric[tag]:.1f}  "
              f"(floor, train vs held-out real: {floor:.1f})", flush=True)  # fmt: skip

    def at_start(step, state, metrics):
        if not metrics and "start" not in metric:
            measure("start" if step == 0 else f"at step {step}", jax.device_get(state.g_ema))

    run_dir = s.out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    print(f"[train] configs/demo.py -> {run_dir} (at most {s.minutes:g} min; TensorBoard: "
          f"tensorboard --logdir {run_dir / 'tb'})", flush=True)  # fmt: skip
    result = loop.train(cfg, run_dir, max_seconds=s.minutes * 60,
                        mesh=data_mesh(jax.devices()[:1]), callbacks=[at_start])  # fmt: skip
    g_ema = jax.device_get(result.state.g_ema)
    measure("end", g_ema)

    seeds = list(range(8))
    yaw = np.radians(np.arange(0, 360, 45, dtype=np.float32))
    views = sampling.view_labels(yaw, np.zeros_like(yaw), cfg.camera)
    settings = sampling.SampleSettings(neural_res=neural_res, truncation_psi=0.8,
                                       truncation_cutoff=None)  # fmt: skip
    grid = np.concatenate([im for _, im, _, _ in sampling.sample_batches(
        nets.G, g_ema, seeds, views, cfg.camera, settings, batch=8,
        mesh=sampling.make_mesh(1))])  # fmt: skip
    grid_path = write_png(s.out / "grid.png", image_grid(to_uint8(grid)))
    frames = turntable(nets.G, g_ema, cfg, neural_res, seeds[:4])
    gif_path = write_gif(s.out / "turntable.gif", frames, fps=12)
    reals = to_uint8(real[:8].astype(np.float32) / 127.5 - 1)
    write_png(s.out / "heldout_real.png", image_grid(reals[None]))

    start = metric.get("start")
    print(f"\n[demo] {result.step} steps, {result.kimg:.2f} kimg in "
          f"{(time.perf_counter() - t0) / 60:.1f} min ({result.status})")  # fmt: skip
    if start is not None:
        print(
            f"[demo] SWD ×1e3 vs held-out real images: start {start:.1f} -> end "
            f"{metric['end']:.1f} ({start / metric['end']:.1f}× lower); floor {floor:.1f}"
        )
    print(f"[demo] wrote {grid_path} (8 seeds × 8 yaws), {gif_path} (360° turntable), "
          f"{s.out / 'heldout_real.png'}; run directory {run_dir}")  # fmt: skip
    return {"start": start, "end": metric["end"], "floor": floor, "result": result}
