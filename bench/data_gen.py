"""data_gen pipeline throughput (images/s): tiny random SD + ControlNet(s) on this machine.

    python bench/data_gen.py [--steps 2 20] [--res 64] [--batch 4] [--threads 1] [--repeats 2]

Times `data_gen.pipelines.generate` (text encoding, `steps` UNet + ControlNet evaluations
with classifier-free guidance, VAE decode) for pose, depth and hybrid guidance, on models
built by `data_gen.tiny_models` and loaded through `load_pipeline` as users' models are.
The tiny models measure the pipeline's overhead, not SD 1.5's cost (data_gen/README.md).
CPU ms/img (process time) is the figure to compare on a shared machine: wall time grows
with the load, CPU time at 1 thread barely does.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data_gen.pipelines import check_model, generate, load_pipeline, torch_device  # noqa: E402
from data_gen.tiny_models import save_tiny_models  # noqa: E402

GUIDANCE = {"pose": ("pose",), "depth": ("depth",), "hybrid": ("pose", "depth")}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 20])
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch_device(args.device)
    print(
        f"{device} {dtype}, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.res}²"
    )
    rng = np.random.default_rng(0)
    guide = rng.integers(0, 256, (args.batch, args.res, args.res, 3), dtype=np.uint8)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = save_tiny_models(tmp)
        base = check_model(str(paths["base"]), "--base-model", "pipeline")
        for name, kinds in GUIDANCE.items():
            nets = {k: check_model(str(paths[k]), "--controlnet", "model") for k in kinds}
            pipe = load_pipeline(base, nets, scheduler="UniPCMultistepScheduler",
                                 device=device, dtype=dtype)  # fmt: skip
            for steps in args.steps:
                run = lambda steps=steps, kinds=kinds, pipe=pipe: generate(
                    pipe, ["a figure, front view"] * args.batch, ["blurry"] * args.batch,
                    {k: guide for k in kinds}, list(range(args.batch)), steps=steps,
                    guidance_scale=7.5, controlnet_scale=(1.0,) * len(kinds),
                )  # fmt: skip
                run()  # warm-up
                start, cpu = time.perf_counter(), time.process_time()
                for _ in range(args.repeats):
                    run()
                sec = (time.perf_counter() - start) / args.repeats
                cpu_sec = (time.process_time() - cpu) / args.repeats
                row = dict(guidance=name, steps=steps, res=args.res, batch=args.batch,
                           images_per_s=round(args.batch / sec, 2),
                           ms_per_image=round(1000 * sec / args.batch, 1),
                           cpu_ms_per_image=round(1000 * cpu_sec / args.batch, 1))  # fmt: skip
                results.append(row)
                print(f"{name:6s} {steps:3d} steps: {row['images_per_s']:7.2f} img/s "
                      f"({row['ms_per_image']} ms/img wall, "
                      f"{row['cpu_ms_per_image']} ms/img CPU)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
