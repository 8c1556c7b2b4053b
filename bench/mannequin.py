"""Mannequin render throughput (images/s) at given resolutions, and the guidance cost.

    python bench/mannequin.py [--res 128 512] [--batch 8] [--repeats 2]

Prints compile time separately; the steady-state figure is the mean of `repeats` calls on
one batch of views of different identities all around the head.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from styleavatar_jax import cameras  # noqa: E402
from styleavatar_jax.heads import head_render, keypoints, mannequin, openpose  # noqa: E402


def timed(fn, repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        out = jax.block_until_ready(fn())
    return first, (time.perf_counter() - start) / repeats, out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    b = args.batch
    ident = mannequin.sample_identities(0, np.arange(b))
    yaw = np.linspace(-np.pi, np.pi, b, endpoint=False)
    c = cameras.make_label(cameras.pose_from_angles(yaw, np.full(b, 0.1), 2.7, (0, 0, 0)),
                           cameras.fov_to_intrinsics(18.837))  # fmt: skip
    print(f"{jax.devices()[0].device_kind} ({jax.device_count()} devices), "
          f"{platform.processor() or platform.machine()}, batch {b}")  # fmt: skip
    results = []
    for res in args.res:
        compile_s, step_s, out = timed(
            lambda res=res: head_render.render(ident, c, resolution=res), args.repeats
        )
        kp_first, kp_s, vis = timed(
            lambda out=out: keypoints.visible_keypoints(
                *keypoints.mannequin_keypoints(ident).values(), c, out["depth"]
            ),
            args.repeats,
        )
        start = time.perf_counter()
        openpose.draw_poses(*jax.device_get(vis), height=res, width=res)
        draw_s = time.perf_counter() - start
        row = dict(res=res, batch=b, compile_s=round(compile_s - step_s, 2),
                   ms_per_image=round(1000 * step_s / b, 1), images_per_s=round(b / step_s, 2),
                   mrays_per_s=round(b * res * res / step_s / 1e6, 3),
                   keypoints_ms_per_image=round(1000 * kp_s / b, 2),
                   pose_draw_ms_per_image=round(1000 * draw_s / b, 2))  # fmt: skip
        results.append(row)
        print(f"{res}²: {row['images_per_s']} img/s ({row['ms_per_image']} ms/img, "
              f"{row['mrays_per_s']} Mrays/s), compile {row['compile_s']} s; keypoints "
              f"{row['keypoints_ms_per_image']} ms/img, pose drawing "
              f"{row['pose_draw_ms_per_image']} ms/img")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
