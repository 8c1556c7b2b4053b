"""Metric throughput: Inception (FID/KID features) images/s and SWD images/s.

    python bench/eval.py                          # batch 8 and 32, 64² inputs, all devices
    python bench/eval.py --batch 8,32,128 --res 512 --iters 5 --json out.json

Inception: pytorch-fid's FID network with random weights (`inception.init_variables`;
the speed does not depend on the values), inputs resized to 299² inside as in real use.
Each row: compile time, then the median of --iters timed calls of `FeatureExtractor` on
one batch of uint8 images (host -> device -> features on the host, as `eval` runs it).
SWD: `eval/swd.swd` (numpy) of two sets of --swd-images images at --res, timed once.
FID/KID arithmetic on 2048-d features (covariance, eigh, KID subsets) is timed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from styleavatar_jax import sampling  # noqa: E402
from styleavatar_jax.eval import fid, swd  # noqa: E402
from styleavatar_jax.models import inception  # noqa: E402


def bench_inception(batch: int, res: int, iters: int, mesh) -> dict:
    variables = inception.init_variables(jax.random.key(0))
    extract = fid.FeatureExtractor(variables, batch, mesh)
    images = np.random.default_rng(0).integers(0, 256, (batch, res, res, 3), np.uint8)
    t = time.perf_counter()
    extract(images)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        extract(images)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"what": "inception", "batch": batch, "res": res, "devices": mesh.size,
            "compile_s": round(compile_s, 2), "median_s": round(med, 4),
            "images_per_s": round(batch / med, 2)}  # fmt: skip


def bench_swd(n: int, res: int) -> dict:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, res, res, 3), np.uint8)
    b = rng.integers(0, 256, (n, res, res, 3), np.uint8)
    t = time.perf_counter()
    swd.swd(a, b)
    dt = time.perf_counter() - t
    return {"what": "swd", "images": n, "res": res, "seconds": round(dt, 3),
            "images_per_s": round(2 * n / dt, 1)}  # fmt: skip


def bench_stats(n: int) -> dict:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, inception.FEATURES)).astype(np.float32)
    t = time.perf_counter()
    fid.frechet_distance(*fid.feature_stats(a), *fid.feature_stats(b))
    t_fid = time.perf_counter() - t
    t = time.perf_counter()
    fid.kid_from_features(a, b, num_subsets=100, max_subset_size=1000)
    t_kid = time.perf_counter() - t
    return {"what": "fid+kid arithmetic", "images": n, "fid_s": round(t_fid, 2),
            "kid_s": round(t_kid, 2)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", default="8,32")
    p.add_argument("--res", type=int, default=64, help="input resolution (resized to 299²)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--devices", type=int, help="first N local devices (default all)")
    p.add_argument("--swd-images", type=int, default=256)
    p.add_argument("--stats-images", type=int, default=5000)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    mesh = sampling.make_mesh(args.devices)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__} on {jax.devices()[0].platform} × {mesh.size}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows = []
    for b in (int(x) for x in args.batch.split(",")):
        rows.append(bench_inception(b, args.res, args.iters, mesh))
        print(json.dumps(rows[-1]), flush=True)
    rows.append(bench_swd(args.swd_images, args.res))
    print(json.dumps(rows[-1]), flush=True)
    rows.append(bench_stats(args.stats_images))
    print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
