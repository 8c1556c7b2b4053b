"""data_gen on Ray: images/s with 1 and 2 actors against the single-process run, on the tiny
random models, on this machine.

    python bench/data_gen_ray.py [--images 32] [--batch 4] [--steps 8] [--res 64] [--json FILE]

The same work three ways, each into a fresh folder: `data_gen.run.make_dataset` in this
process (the baseline), then `data_gen.cluster.make_dataset` on a local `ray.init(num_cpus=2)`
with 1 and with 2 actors (one CPU each). Models from `data_gen.tiny_models` (as
bench/data_gen.py), pose guidance from the procedural mannequin (the default head), no view
filter. torch runs 1 thread in every process (OMP_NUM_THREADS=1, checked in a Ray worker),
so 2 actors on 2 cores is a fair scaling test.

Per run: images/s over the whole call (wall: model loading, the mannequin renderer's
compilation and, on Ray, actor start-up included); the time to the first finished chunk
(start-up + one chunk); images/s after start-up (from the k-th finished chunk to the last,
k = the number of actors: each actor's first chunk carries its start-up); and CPU seconds
per image of every process involved (this one and, on Ray, all of its processes: raylet,
GCS, workers), sampled with psutil, the figure to read on a shared machine.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch loads, here and in Ray's processes

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from data_gen import cluster  # noqa: E402
from data_gen import run as R  # noqa: E402
from data_gen.tiny_models import save_tiny_models  # noqa: E402


class CpuMeter:
    """CPU seconds used by this process and its descendants while open (a thread samples
    them every `every` s; a process that ends between samples loses its last interval)."""

    def __init__(self, every: float = 0.25):
        self.every, self.start, self.last = every, {}, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[int, float]:
        me = psutil.Process()
        seen = {}
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            seen[p.pid] = t.user + t.system
        return seen

    def _run(self):
        while not self.stop.wait(self.every):
            self.last.update(self._sample())

    def __enter__(self) -> CpuMeter:
        self.start = self._sample()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.last.update(self._sample())

    @property
    def seconds(self) -> float:
        return sum(t - self.start.get(pid, 0.0) for pid, t in self.last.items())


class Stamps:
    """Stands in for data_gen's progress bar: the time of each finished chunk."""

    def __init__(self):
        self.t0, self.done = time.perf_counter(), []  # [(s since t0, images so far)]

    def __call__(self, total: int, done: int, enabled: bool) -> Stamps:
        return self

    def __enter__(self) -> Stamps:
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        so_far = (self.done[-1][1] if self.done else 0) + n
        self.done.append((time.perf_counter() - self.t0, so_far))


def timed(name: str, module, make, images: int, first_chunks: int) -> dict:
    """Run `make()` with `module.progress_bar` stamped -> the run's figures."""
    stamps, bar = Stamps(), module.progress_bar
    module.progress_bar = stamps
    try:
        with CpuMeter() as cpu:
            summary = make()
        wall = time.perf_counter() - stamps.t0
    finally:
        module.progress_bar = bar
    if summary.generated != images:
        raise RuntimeError(f"{name}: wrote {summary.generated} of {images} images")
    (t_first, _), (t_k, n_k), (t_last, _) = stamps.done[0], stamps.done[first_chunks - 1], \
        stamps.done[-1]  # fmt: skip
    return dict(run=name, images=images, wall_s=round(wall, 2),
                images_per_s=round(images / wall, 3), first_chunk_s=round(t_first, 2),
                images_per_s_after_start=round((images - n_k) / max(t_last - t_k, 1e-9), 3),
                cpu_s=round(cpu.seconds, 1), cpu_s_per_image=round(cpu.seconds / images, 3),
                load_average=round(os.getloadavg()[0], 2))  # fmt: skip


@ray.remote(num_cpus=1)
def worker_threads() -> int:
    import torch

    return torch.get_num_threads()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    # SIGTERM (`timeout`) as an exception: Ray's processes are shut down on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"ray {ray.__version__}; {args.images} images, batch {args.batch}, {args.steps} "
          f"steps, {args.res}²", flush=True)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = save_tiny_models(tmp / "models")
        argv = ["--out", str(tmp / "unused"), "--base-model", str(models["base"]),
                "--controlnet", f"pose={models['pose']}", "--num-images", str(args.images),
                "--res", str(args.res), "--steps", str(args.steps), "--batch",
                str(args.batch), "--device", "cpu"]  # fmt: skip
        job, opts = R.job_from_args(R.build_parser().parse_args(argv))
        rows.append(timed("single process", R, lambda: R.make_dataset(
            job, tmp / "single", args.images, progress=False, **opts), args.images, 1))  # fmt: skip
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_init_s = time.perf_counter() - start
        threads = ray.get(worker_threads.remote())
        print(f"ray.init {ray_init_s:.1f} s; torch threads in a Ray worker: {threads}", flush=True)
        try:
            for actors in (1, 2):
                rows.append(timed(f"ray, {actors} actor{'s' * (actors > 1)}", cluster,
                                  lambda actors=actors: cluster.make_dataset(
                                      job, tmp / f"ray{actors}", args.images, actors=actors,
                                      progress=False, **opts),
                                  args.images, actors))  # fmt: skip
        finally:
            ray.shutdown()
    for r in rows:
        print(f"{r['run']:15s} {r['images_per_s']:6.2f} img/s wall ({r['wall_s']:.1f} s), first "
              f"chunk after {r['first_chunk_s']:.1f} s, {r['images_per_s_after_start']:6.2f} "
              f"img/s after start-up; {r['cpu_s_per_image']:.2f} CPU s/img; load average "
              f"{r['load_average']:.2f}")  # fmt: skip
    single, one, two = rows
    print(f"2 vs 1 actors: {two['images_per_s'] / one['images_per_s']:.2f}× wall img/s, "
          f"{two['images_per_s_after_start'] / one['images_per_s_after_start']:.2f}× after "
          f"start-up; 1 actor vs single process: "
          f"{one['images_per_s'] / single['images_per_s']:.2f}× wall img/s")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(dict(ray_init_s=round(ray_init_s, 2),
                                                   worker_torch_threads=threads, runs=rows),
                                              indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
