"""Input pipeline throughput on a synthetic EG3D dataset (PNG decode, flips, batching).

    python bench/input_pipeline.py                       # 128² and 512², batch 32
    python bench/input_pipeline.py --res 512 --threads 16 --steps 50 --step-ms 100

Writes --n smooth random images per resolution with EG3DWriter into a temporary folder
(low-frequency colour fields plus noise: they compress and decode like renders, unlike
pure noise), then times --steps batches after one warm-up batch for three set-ups:
decoding in the consumer's thread, with a --threads decoding pool, and with the pool plus
a prefetch thread. --step-ms sleeps that long per batch in the consumer, standing in for
a train step: with prefetch, time per batch should approach max(step, decode) rather than
their sum.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from styleavatar_jax import cameras  # noqa: E402
from styleavatar_jax.data import eg3d_format  # noqa: E402
from styleavatar_jax.data.pipeline import InputPipeline  # noqa: E402


def synthetic_dataset(root: Path, n: int, res: int, seed: int = 0) -> float:
    """Write n images [res, res, 3] with orbit-camera labels -> seconds taken."""
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-np.pi, np.pi, n)
    pose = cameras.pose_from_angles(yaw, rng.uniform(-0.5, 0.5, n), 2.7, cameras.PIVOT)
    labels = np.asarray(cameras.make_label(pose, cameras.fov_to_intrinsics(18.837)))
    writer = eg3d_format.EG3DWriter(root)
    for i in range(n):
        coarse = PIL.Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((res, res), PIL.Image.BICUBIC), np.float32)
        image = np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)
        writer.write(i, image, labels[i], {"identity": i // 8})
    writer.finish()
    return time.perf_counter() - t


def time_batches(pipe: InputPipeline, steps: int, prefetch: int, step_ms: float) -> float:
    """Seconds per batch over `steps` batches after one warm-up batch."""
    with pipe.iterate(0, prefetch=prefetch) as it:
        next(it)
        t = time.perf_counter()
        for _ in range(steps):
            next(it)
            time.sleep(step_ms / 1000)
        return (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--res", default="128,512", help="comma-separated resolutions")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--n", type=int, default=512, help="images per synthetic dataset")
    p.add_argument("--step-ms", type=float, default=0.0, help="simulated train step per batch")
    args = p.parse_args()
    print(f"cpus {os.cpu_count()}, batch {args.batch}, steps {args.steps}, "
          f"threads {args.threads}, simulated step {args.step_ms:g} ms")  # fmt: skip
    print(f"{'res':>5} {'set-up':<28} {'ms/batch':>9} {'batches/s':>10} {'images/s':>9} {'x':>5}")
    for res in map(int, args.res.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            secs = synthetic_dataset(Path(tmp), args.n, res)
            size = sum(f.stat().st_size for f in Path(tmp).rglob("*.png")) / args.n / 1024
            print(f"{res:>5} wrote {args.n} PNGs in {secs:.1f} s, {size:.0f} KiB each")
            source = eg3d_format.open_eg3d(tmp)
            setups = [
                ("1 thread, no prefetch", 0, 0),
                (f"{args.threads} threads, no prefetch", args.threads, 0),
                (f"{args.threads} threads, prefetch 2", args.threads, 2),
            ]
            base = None
            for name, threads, prefetch in setups:
                with InputPipeline(source, args.batch, seed=0, threads=threads) as pipe:
                    sec = time_batches(pipe, args.steps, prefetch, args.step_ms)
                base = base or sec
                print(f"{res:>5} {name:<28} {sec * 1e3:>9.1f} {1 / sec:>10.2f} "
                      f"{args.batch / sec:>9.0f} {base / sec:>5.2f}")  # fmt: skip
            source.close()


if __name__ == "__main__":
    main()
