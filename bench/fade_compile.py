"""Compilation over the neural-resolution fade: programs compiled, compile time, and the time
training stood still waiting for them, with and without compiling ahead, and on a resume
with the persistent compilation cache.

    python bench/fade_compile.py [--resolutions 4] [--steps-per-res 6] [--out fade.json]

A compressed EG3D schedule on configs/tiny.py: the neural resolution fades 16 → 16 + R − 1
so that each of R resolutions lasts about --steps-per-res steps (EG3D's own fade, 64 → 128 over
1000 kimg, visits 65 resolutions, one per ~15 kimg). Each mode runs in its own process:

    on_demand   config.run.compile_ahead=false: each resolution compiled on first use
    ahead       the next resolution's programs compiled in a background thread
    cache_cold  ahead + `train --compile-cache DIR` (empty): fills the cache
    cache_warm  the same run again from scratch with the filled cache (a restart)

Prints one line per mode and the ratios; the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def random_dataset(path: Path) -> Path:
    """32 random smooth 64² images with valid 360° cameras -> the dataset folder."""
    import numpy as np

    from styleavatar_jax import cameras
    from styleavatar_jax.data.eg3d_format import EG3DWriter

    rng = np.random.default_rng(0)
    labels = cameras.random_labels(0, 32)
    w = EG3DWriter(path)
    for i in range(32):
        img = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
        w.write(i, img, labels[i], {})
    return w.finish().parent


def run_one(args) -> dict:
    """One training run in this process -> its figures."""
    import jax
    from jax import monitoring

    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
    events = {"cache_hits": 0, "cache_misses": 0}

    def on_event(name, **kw):
        key = name.rsplit("/", 1)[-1]
        if key in events:
            events[key] += 1

    monitoring.register_event_listener(on_event)

    from styleavatar_jax.train import loop
    from styleavatar_jax.typed_config import load_config_file

    r, batch = args.resolutions, 4
    steps = r * args.steps_per_res
    # res = rint(16 + (R−1)·α), α = nimg / fade: each value lasts ~steps_per_res steps.
    fade_nimg = (r - 1) * args.steps_per_res * batch
    overrides = [
        f"--config.data.path={args.data}", f"--config.train.batch_size={batch}",
        f"--config.train.total_kimg={steps * batch / 1000}",
        "--config.train.neural_res_initial=16",
        f"--config.train.neural_res_final={16 + r - 1}",
        f"--config.train.neural_res_fade_kimg={fade_nimg / 1000}",
        "--config.run.checkpoint_kimg=1000", "--config.run.snapshot_kimg=0",
        f"--config.run.compile_ahead={'false' if args.mode == 'on_demand' else 'true'}",
    ]  # fmt: skip
    cfg = load_config_file(str(ROOT / "configs/tiny.py"), overrides)
    t0 = time.perf_counter()
    res = loop.train(cfg, args.workdir, progress=False, log=lambda s: None)
    wall = time.perf_counter() - t0
    return dict(mode=args.mode, steps=res.step, resolutions=r, wall_s=wall,
                **res.compile_stats, **events)  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolutions", type=int, default=4)
    p.add_argument("--steps-per-res", type=int, default=6)
    p.add_argument("--out", help="also write the figures as JSON")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:  # a child: one run, JSON on the last line
        print(json.dumps(run_one(args)))
        return 0

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = random_dataset(tmp / "data" / "ds")
        cache = tmp / "xla_cache"
        plan = [("on_demand", None), ("ahead", None), ("cache_cold", cache), ("cache_warm", cache)]
        for i, (mode, cache_dir) in enumerate(plan):
            cmd = [sys.executable, __file__, "--mode", mode, "--data", str(data),
                   "--workdir", str(tmp / f"run{i}"), "--resolutions", str(args.resolutions),
                   "--steps-per-res", str(args.steps_per_res)]  # fmt: skip
            if cache_dir:
                cmd += ["--cache", str(cache_dir)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{mode:11s} {row['steps']} steps over {row['resolutions']} resolutions: "
                  f"{row['compiled']} programs compiled ({row['compile_s']:.1f} s), steps waited "
                  f"{row['wait_s']:.1f} s, run {row['wall_s']:.1f} s; persistent cache "
                  f"{row['cache_hits']} hits / {row['cache_misses']} misses",
                  flush=True)  # fmt: skip
    by = {r["mode"]: r for r in rows}
    print(
        f"waiting for compilation, ahead vs on demand: {by['ahead']['wait_s']:.1f} s vs "
        f"{by['on_demand']['wait_s']:.1f} s "
        f"({by['on_demand']['wait_s'] / max(by['ahead']['wait_s'], 1e-9):.2f}× less)"
    )
    print(
        f"restart with the cache: waited {by['cache_warm']['wait_s']:.1f} s vs "
        f"{by['cache_cold']['wait_s']:.1f} s cold"
    )
    eg3d = 128 - 64 + 1
    print(
        f"EG3D's schedule (64 → 128 over 1000 kimg) visits {eg3d} resolutions: {eg3d * 5} "
        f"programs when compiled per (phase, resolution) with the EMA among them, "
        f"{eg3d * 4 + 1} here"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
