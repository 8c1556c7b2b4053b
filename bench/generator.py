"""G_ema forward throughput: styleavatar-jax vs the official EG3D PyTorch code.

    python bench/generator.py                                  # JAX only, CPU-sized set
    python bench/generator.py --eg3d-src /path/to/eg3d/eg3d    # + official PyTorch G, ratio
    python bench/generator.py --configs ffhq512 --batch 1,8,32,64 --dtype bfloat16 --json out.json

Configs (all EG3D architectures; depth 48+48 unless said):
  tiny      the test fixture's (z 64, cbase 2048, cmax 16, SR2X -> 128, depth 12+12, neural 32)
  ffhq128   FFHQ-512 channels (cbase 32768, cmax 512), neural 64 -> SR2X -> 128 output
  ffhq512n64  FFHQ-512 (SR8X-DC -> 512), neural 64 (SR resizes to 128 first): CPU-sized
  ffhq512   FFHQ-512 exactly as trained: neural 128 -> SR8X-DC -> 512
Each row: compile time (jit lower+compile), then the median of --iters timed calls
(block_until_ready), a fresh render key per call, noise_mode='const'. Both sides compute
the same function: the PyTorch G's random weights are converted into ours. FLOPs are XLA's
cost analysis of the compiled program (the work it does, counted, not assumed); "of peak"
divides the achieved rate by the device's dense peak for --dtype (PEAK_TFLOPS by device
kind, or --peak-tflops): the roofline fraction.

Importing EG3D's training/triplane.py needs torch (pin torch==2.13.0 on CPU) plus numpy,
scipy, requests and click-free modules of its dnnlib; on CUDA its custom ops compile with
ninja + nvcc, and when that fails this script falls back to EG3D's reference ops and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from styleavatar_jax import cameras, typed_config  # noqa: E402
from styleavatar_jax.convert import eg3d  # noqa: E402
from styleavatar_jax.models.superres import SR_SPECS  # noqa: E402
from styleavatar_jax.models.triplane import GeneratorConfig, TriPlaneGenerator, init_variables  # noqa: E402
from styleavatar_jax.typed_config import load_config_file  # noqa: E402

FFHQ = GeneratorConfig()
_ROOT = Path(__file__).resolve().parent.parent
_TINY = load_config_file(f"{_ROOT}/configs/eg3d_ffhq512.py:tiny")
CONFIGS = {
    "tiny": (typed_config.generator_config(_TINY.model.generator), _TINY.model.neural_res),
    "ffhq128": (
        dataclasses.replace(FFHQ, img_resolution=128, sr_kind="SuperresolutionHybrid2X"),
        64,
    ),
    "ffhq512n64": (FFHQ, 64),
    "ffhq512": (FFHQ, 128),
}


def eg3d_kwargs(cfg: GeneratorConfig, sr_fp16: bool) -> dict:
    """Our config -> EG3D TriPlaneGenerator kwargs (train.py's layout)."""
    r = cfg.render
    rendering = dict(
        image_resolution=cfg.img_resolution,
        disparity_space_sampling=r.disparity_space_sampling,
        clamp_mode="softplus",
        superresolution_module=f"training.superresolution.{cfg.sr_kind}",
        c_gen_conditioning_zero=cfg.c_gen_conditioning_zero,
        gpc_reg_prob=0.5,
        c_scale=cfg.c_scale,
        superresolution_noise_mode=cfg.sr_noise_mode,
        density_reg=0.25,
        density_reg_p_dist=0.004,
        reg_type="l1",
        decoder_lr_mul=cfg.decoder_lr_multiplier,
        sr_antialias=cfg.sr_antialias,
        depth_resolution=r.depth_resolution,
        depth_resolution_importance=r.depth_resolution_importance,
        ray_start=r.ray_start,
        ray_end=r.ray_end,
        box_warp=r.box_warp,
        avg_camera_radius=2.7,
        avg_camera_pivot=[0, 0, 0.2],
    )
    mapping = dict(num_layers=cfg.mapping_layers)
    if cfg.embed_features:
        mapping.update(embed_features=cfg.embed_features, layer_features=cfg.layer_features)
    return dict(
        z_dim=cfg.z_dim,
        c_dim=cfg.c_dim,
        w_dim=cfg.w_dim,
        img_resolution=cfg.img_resolution,
        img_channels=3,
        sr_num_fp16_res=4 if sr_fp16 else 0,
        mapping_kwargs=mapping,
        rendering_kwargs=rendering,
        sr_kwargs=dict(
            channel_base=cfg.channel_base,
            channel_max=cfg.channel_max,
            fused_modconv_default="inference_only",
        ),
        channel_base=cfg.channel_base,
        channel_max=cfg.channel_max,
        fused_modconv_default="inference_only",
        num_fp16_res=0,
        conv_clamp=None,
    )


def inputs(cfg: GeneratorConfig, batch: int):
    z = np.random.RandomState(0).randn(batch, cfg.z_dim).astype(np.float32)
    yaw = np.linspace(-0.5, 0.5, batch)
    pose = cameras.pose_from_angles(yaw, np.zeros(batch))
    c = np.asarray(
        cameras.make_label(pose, cameras.fov_to_intrinsics(np.full(batch, 18.837))), np.float32
    )
    return z, c


def time_calls(fn, iters: int) -> float:
    fn(0)  # warm-up (first call after compile, allocations)
    times = []
    for i in range(iters):
        t = time.perf_counter()
        fn(i + 1)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_jax(cfg, neural_res, batch, iters, variables):
    G = TriPlaneGenerator(cfg)
    z, c = map(jnp.asarray, inputs(cfg, batch))
    f = jax.jit(
        lambda v, z, c, k: G.apply(
            v, z, c, neural_res=neural_res, noise_mode="const", rngs={"render": k}
        )["image"]
    )
    t = time.perf_counter()
    compiled = f.lower(variables, z, c, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t
    run = lambda i: compiled(variables, z, c, jax.random.key(i)).block_until_ready()
    return compile_s, time_calls(run, iters), program_flops(compiled)


def program_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled program, from XLA's cost analysis (None if absent)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per program
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


# Dense (no sparsity) peak TFLOP/s by device kind, from the vendors' data sheets.
PEAK_TFLOPS = {  # device_kind substring -> {dtype: TFLOP/s}
    "H200": {"bfloat16": 989.4, "float32": 66.9},  # SXM
    "H100 PCIe": {"bfloat16": 756.0, "float32": 51.2},
    "H100": {"bfloat16": 989.4, "float32": 66.9},  # SXM (HBM3)
    "A100": {"bfloat16": 312.0, "float32": 19.5},
}


def peak_tflops(dtype: str, override: float | None = None) -> float | None:
    """The device's dense peak for `dtype` (float32: without TF32), or `override`."""
    if override:
        return override
    kind = jax.devices()[0].device_kind
    return next((v[dtype] for k, v in PEAK_TFLOPS.items() if k in kind), None)


def load_eg3d(src: str, device: str):
    """Import EG3D's TriPlaneGenerator from a source checkout; compile or disable its ops."""
    sys.path.insert(0, str(Path(src).resolve()))
    import torch
    from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d
    from training.triplane import TriPlaneGenerator as EG3DGenerator

    ops = "reference ops (CPU)"
    if device == "cuda":
        try:
            bias_act._init() and upfirdn2d._init()
            ops = "custom CUDA ops"
        except Exception as e:  # no nvcc/ninja: EG3D's own reference implementations
            for mod in (bias_act, upfirdn2d, filtered_lrelu):
                mod._init = lambda: False
            ops = f"reference ops (custom ops failed to build: {type(e).__name__})"
    return torch, EG3DGenerator, ops


def make_torch(torch, EG3DGenerator, cfg, device, sr_fp16, seed=0):
    torch.manual_seed(seed)
    G = EG3DGenerator(**eg3d_kwargs(cfg, sr_fp16)).eval().requires_grad_(False).to(device)
    return G, {k: v.detach().cpu().numpy() for k, v in G.state_dict().items()}


def bench_torch(torch, G, cfg, neural_res, batch, iters, device):
    z, c = (torch.from_numpy(x).to(device) for x in inputs(cfg, batch))

    def run(_):
        with torch.no_grad():
            G(z, c, neural_rendering_resolution=neural_res, noise_mode="const")["image"]
        if device == "cuda":
            torch.cuda.synchronize()

    return time_calls(run, iters)


def machine() -> str:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo")
                if "model name" in line
            ),
            "?",
        )
        if os.path.exists("/proc/cpuinfo")
        else platform.processor()
    )
    dev = jax.devices()[0]
    backend = f"jax {jax.__version__} on {dev.platform} ({dev.device_kind})"
    return f"{cpu}, {os.cpu_count()} cores; {backend}"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--configs", default="tiny,ffhq128,ffhq512n64", help=f"comma list of {list(CONFIGS)}"
    )
    p.add_argument("--batch", default="1,8", help="comma list of batch sizes")
    p.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32", help="JAX compute dtype"
    )
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--eg3d-src", help="EG3D's eg3d/ folder: also time the official PyTorch G")
    p.add_argument("--torch-device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--eg3d-sr-fp16", action="store_true", help="EG3D SR in fp16 (its FFHQ default on GPU)"
    )
    p.add_argument("--skip", default="", help="config:batch pairs to skip, e.g. ffhq512:8")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--peak-tflops", type=float, help="the device's dense peak for --dtype "
                   "(default: from PEAK_TFLOPS by device kind; none on CPU)")  # fmt: skip
    args = p.parse_args()
    peak = peak_tflops(args.dtype, args.peak_tflops)

    torch_mod = None
    if args.eg3d_src:
        torch_mod, EG3DGenerator, ops = load_eg3d(args.eg3d_src, args.torch_device)
        if args.torch_device == "cpu":
            torch_mod.set_num_threads(os.cpu_count())
        threads = torch_mod.get_num_threads()
        device = f"{args.torch_device}, {threads} threads"
        print(f"EG3D: torch {torch_mod.__version__} ({device}), {ops}")
    print(f"machine: {machine()}")
    skip = set(filter(None, args.skip.split(",")))
    rows = []
    header = (
        f"{'config':11s} {'batch':>5s} {'neural':>6s} {'out':>4s} {'dtype':9s} {'compile s':>9s} "
        f"{'JAX s':>8s} {'img/s':>8s} {'EG3D s':>8s} {'JAX/EG3D':>9s} {'GFLOP/img':>9s} "
        f"{'TFLOP/s':>8s} {'of peak':>7s}"
    )
    print(f"peak: {peak} TFLOP/s ({args.dtype}, dense)" if peak else "peak: unknown")
    print(header)
    for name in args.configs.split(","):
        cfg, neural_res = CONFIGS[name]
        if args.dtype == "bfloat16":
            cfg = dataclasses.replace(cfg, backbone_bf16=True, sr_bf16=True)
        for batch in (int(b) for b in args.batch.split(",")):
            if f"{name}:{batch}" in skip:
                continue
            G = TriPlaneGenerator(cfg)
            torch_s = G_torch = None
            if torch_mod is not None:  # same weights on both sides
                G_torch, sd = make_torch(
                    torch_mod, EG3DGenerator, cfg, args.torch_device, args.eg3d_sr_fp16
                )
                _, tmpl, _, _ = eg3d.build_networks(cfg, None, neural_res)
                variables, _ = eg3d.load_variables(sd, tmpl, source="EG3D random init")
            else:
                variables = init_variables(G, jax.random.key(0))
            variables = jax.device_put(variables)
            # JAX first: torch's OpenMP workers keep spinning for a while after a call.
            compile_s, jax_s, flops = bench_jax(cfg, neural_res, batch, args.iters, variables)
            tflops = flops / jax_s / 1e12 if flops else None
            if G_torch is not None:
                torch_s = bench_torch(
                    torch_mod, G_torch, cfg, neural_res, batch, args.iters, args.torch_device
                )
            row = dict(
                config=name,
                batch=batch,
                neural_res=neural_res,
                out=SR_SPECS[cfg.sr_kind].img_resolution,
                dtype=args.dtype,
                compile_s=compile_s,
                jax_s=jax_s,
                images_per_s=batch / jax_s,
                eg3d_s=torch_s,
                speedup=(torch_s / jax_s) if torch_s else None,
                gflop_per_image=flops / batch / 1e9 if flops else None,
                tflops=tflops,
                peak_tflops=peak,
                of_peak=tflops / peak if tflops and peak else None,
            )
            rows.append(row)
            eg = f"{torch_s:8.3f} {torch_s / jax_s:8.2f}x" if torch_s else f"{'-':>8s} {'-':>9s}"
            lead = f"{name:11s} {batch:5d} {neural_res:6d} {row['out']:4d} {args.dtype:9s}"
            fl = (
                f" {row['gflop_per_image']:9.1f} {tflops:8.2f}"
                if flops
                else f" {'-':>9s} {'-':>8s}"
            )
            fl += f" {row['of_peak']:7.1%}" if row["of_peak"] else f" {'-':>7s}"
            print(f"{lead} {compile_s:9.1f} {jax_s:8.3f} {batch / jax_s:8.2f} {eg}{fl}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=machine(), rows=rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
