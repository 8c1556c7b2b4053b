"""GAN train-step throughput: kimg/s of one full G+D iteration, styleavatar-jax vs EG3D.

    python bench/train_step.py                                   # JAX, CPU-sized configs
    python bench/train_step.py --eg3d-src /path/to/eg3d/eg3d     # + EG3D's PyTorch step, ratio
    python bench/train_step.py --configs avatar512 --batch 4,8 --json out.json   # GPU

An iteration is what EG3D's training_loop.py runs per batch: Gmain, Dmain and (lazily,
every 4th / 16th step) Greg and Dreg, each followed by its Adam step, then the G EMA.
Two rows per config: "main" (Gmain + Dmain + EMA: 11 of 16 iterations in EG3D's default
schedule) and "all" (all four phases: an iteration that runs both regularisers). The
amortised figure weights them as EG3D's schedule does. Compile time (first call minus a
steady call, summed over the phases) is reported apart; then the median of --iters timed
iterations (block_until_ready). Peak memory: the device's peak_bytes_in_use on GPU/TPU,
the process's max RSS on CPU (both the process's peak so far: one config and batch per
process for a row's own figure). --dtype sets the backbone, SR and D compute dtype whatever
the config ships with; --accum N splits the batch into N accumulated micro-batches.

EG3D side (--eg3d-src): the official TriPlaneGenerator, DualDiscriminator and
StyleGAN2Loss at the same architecture (bench/eg3d_train_step.py), fp32, random data, the
same phases, on --torch-device (EG3D's custom ops when they build, else its reference ops).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from styleavatar_jax import cameras  # noqa: E402
from styleavatar_jax.runtime import data_mesh  # noqa: E402
from styleavatar_jax.train import step as train_step  # noqa: E402
from styleavatar_jax.train.config import training_configs  # noqa: E402
from styleavatar_jax.train.state import init_state, make_networks  # noqa: E402
from styleavatar_jax.typed_config import load_config_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "tiny": "configs/tiny.py",  # 64², planes 16², neural 16², 6+6 samples (not EG3D-buildable)
    "demo": "configs/demo.py",  # 64², planes 32², neural 32², 8+8 samples
    "eg3d_tiny": "configs/eg3d_ffhq512.py:tiny",  # EG3D's test-fixture architecture, 128²
    "ffhq128": "configs/eg3d_ffhq512.py:128",  # FFHQ-512 channels, neural 64², SR 2X -> 128²
    "ffhq512": "configs/eg3d_ffhq512.py",
    "avatar256": "configs/avatar256.py",
    "avatar512": "configs/avatar512.py",
}
MAIN = ("Gmain", "Dmain")
ALL = ("Gmain", "Greg", "Dmain", "Dreg")


def random_batch(b: int, res: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (b, res, res, 3), dtype=np.uint8)
    return {"image": image, "label": cameras.random_labels(seed, b)}


def peak_memory_mb() -> float:
    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def amortised(main_s: float, all_s: float, g_int: int = 4, d_int: int = 16) -> float:
    """Mean seconds per iteration over EG3D's schedule (Greg every g_int, Dreg every d_int),
    approximating a Greg-only or Dreg-only iteration by splitting the extra cost evenly."""
    extra = all_s - main_s
    return main_s + extra / 2 * (1 / g_int) + extra / 2 * (1 / d_int)


def time_jax(name: str, batch: int, iters: int, dtype: str, accum: int = 1) -> dict:
    cfg = load_config_file(str(ROOT / CONFIGS[name]), [f"--config.train.batch_size={batch}"])
    tc = training_configs(cfg)
    g, d = tc.generator, tc.discriminator
    bf16 = dtype == "bfloat16"  # float32 also for configs that ship with bf16 (avatar*)
    g = dataclasses.replace(g, backbone_bf16=bf16, sr_bf16=bf16)
    d = dataclasses.replace(d, bf16=bf16)
    if batch % accum:
        raise SystemExit(f"--accum {accum}: does not divide --batch {batch}")
    nets = make_networks(g, d, dataclasses.replace(tc.train, accum_steps=accum), tc.pose)
    mesh = data_mesh(jax.devices()[:1]) if batch % jax.device_count() else data_mesh()
    trainer = train_step.Trainer(nets, mesh)
    state = trainer.place(init_state(nets, jax.random.key(0)))
    host = random_batch(batch, d.img_resolution)
    sched, res = train_step.schedule_at(nets.train, 0)
    key = jax.random.key(1)

    def run(state, phases):
        t0 = time.perf_counter()
        state, m = trainer.step(state, host, key, sched, phases=phases, neural_res=res)
        jax.block_until_ready((state, m))
        return state, time.perf_counter() - t0

    compile_s = 0.0
    out = {}
    for label, phases in (("main", MAIN), ("all", ALL)):
        state, first = run(state, phases)
        times = []
        for _ in range(iters):
            state, s = run(state, phases)
            times.append(s)
        med = statistics.median(times)
        compile_s += max(first - med, 0.0)
        out[label] = med
    return dict(config=name, batch=batch, dtype=dtype, neural_res=res, main_s=out["main"],
                all_s=out["all"], amortised_s=amortised(out["main"], out["all"]),
                compile_s=compile_s, peak_mb=peak_memory_mb(), devices=mesh.size,
                accum=accum)  # fmt: skip


def time_eg3d(src: str, name: str, batch: int, iters: int, device: str) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    import os

    import eg3d_train_step as e
    import torch

    torch.set_num_threads(os.cpu_count() or 1)

    cfg = load_config_file(str(ROOT / CONFIGS[name]), [f"--config.train.batch_size={batch}"])
    tc = training_configs(cfg)
    t = tc.train
    # EG3D's D is conditioned on the 25-d camera; a coarse-to-fine label of the same width
    # (or near it) costs the same: only D's small mapping network sees it.
    run = e.build_eg3d_training(src, tc.generator, tc.discriminator,
                                neural_res=t.neural_res_initial, batch=batch, device=device,
                                r1_gamma=t.r1_gamma, density_reg=t.density_reg,
                                blur_sigma=t.blur_init_sigma)  # fmt: skip
    main = e.time_eg3d_step(run, MAIN, iters=iters, warmup=2)  # CPU torch needs 2 warm-ups
    all_ = e.time_eg3d_step(run, ALL, iters=iters, warmup=2)
    return dict(main_s=main, all_s=all_, amortised_s=amortised(main, all_))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configs", default="tiny,demo", help=f"comma list of {sorted(CONFIGS)}")
    p.add_argument("--batch", default="4", help="comma list of global batch sizes")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--eg3d-src", help="EG3D's eg3d/ folder: also time its PyTorch step")
    p.add_argument("--torch-device", default="cpu")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--accum", type=int, default=1, help="JAX: the batch as this many "
                   "accumulated micro-batches (train.accum_steps; no EG3D run then)")  # fmt: skip
    args = p.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
          f"jax {jax.__version__}, {jax.device_count()} device(s)")  # fmt: skip
    head = ("| config | batch | dtype | main s/it | all s/it | amortised s/it | kimg/s "
            "| compile s | peak MB |")  # fmt: skip
    if args.eg3d_src:
        head += " EG3D amortised s/it | JAX / EG3D |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    rows = []
    for name in args.configs.split(","):
        for b in (int(x) for x in args.batch.split(",")):
            r = time_jax(name, b, args.iters, args.dtype, args.accum)
            line = (f"| {name} | {b} | {args.dtype} | {r['main_s']:.3f} | {r['all_s']:.3f} | "
                    f"{r['amortised_s']:.3f} | {b / 1000 / r['amortised_s']:.4f} | "
                    f"{r['compile_s']:.1f} | {r['peak_mb']:.0f} |")  # fmt: skip
            if args.eg3d_src and args.accum > 1:
                line += f" – | – (JAX in {args.accum} micro-batches) |"
            elif args.eg3d_src and name in ("tiny", "demo"):
                line += " – | – (EG3D has no 16²/32²-plane, CPU2X architecture) |"
            elif args.eg3d_src:
                t = time_eg3d(args.eg3d_src, name, b, args.iters, args.torch_device)
                r["eg3d"] = t
                line += (
                    f" {t['amortised_s']:.3f} | **{t['amortised_s'] / r['amortised_s']:.2f}×** |"
                )
            print(line, flush=True)
            rows.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
