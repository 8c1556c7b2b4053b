"""`splats` subcommand: 3D Gaussian splats of one seed, for splat viewers.

    styleavatar-jax splats --ckpt DIR --seed 0 --out head.ply [--num 100000] [--res 48] \
        [--threshold 0] [--convention 3dgs|world] [--sh-degree 0|3] [--check]

Writes the 3D Gaussian Splatting PLY layout (export/splats.py says how the Gaussians are
found, and the layout); `--check` renders the splats at 8 yaws around the orbit and prints
their PSNR against the generator's own volume render of the same (cropped) field.
"""

from __future__ import annotations

import time

import numpy as np

from styleavatar_jax.checkpoint import load_generator
from styleavatar_jax.cli.args import (
    check_output,
    generator_flags,
    nonnegative_int,
    positive_float,
    positive_int,
    truncation_psi,
)

CHECK_YAWS = 8


def add_parsers(sub) -> None:
    p = sub.add_parser("splats", help="3D Gaussian splats of one seed (3DGS PLY)")
    generator_flags(p)
    p.add_argument("--seed", type=nonnegative_int, default=0, help="the head to export")
    p.add_argument("--out", required=True, help="head.ply")
    p.add_argument("--num", type=positive_int, default=100_000,
                   help="at most this many Gaussians (a coarser grid if needed)")  # fmt: skip
    p.add_argument("--res", type=positive_int, default=48,
                   help="grid points per axis over the box: one Gaussian per voxel")  # fmt: skip
    p.add_argument("--threshold", type=float, default=0.0,
                   help="raw σ below which a voxel makes no Gaussian (default 0)")  # fmt: skip
    p.add_argument("--radius", type=positive_float,
                   help="keep the ball of this radius about the orbit centre (default: the "
                        "part every orbit camera renders, camera radius − ray_start)")  # fmt: skip
    p.add_argument("--scale", type=positive_float, default=0.5,
                   help="Gaussian standard deviation in voxels")  # fmt: skip
    p.add_argument("--min-weight", type=positive_float, default=0.5 / 255,
                   help="drop voxels that add less than this to every pixel of the orbit's "
                        "cameras (default: half an 8-bit level)")  # fmt: skip
    p.add_argument("--yaws", type=positive_int, default=24,
                   help="visibility cameras: yaws over the full turn")  # fmt: skip
    p.add_argument("--pitches", default="-30,0,30",
                   help="visibility cameras: pitches in degrees (the training range)")  # fmt: skip
    p.add_argument("--convention", choices=("3dgs", "world"), default="3dgs",
                   help="3dgs: (x, −y, −z), y down as 3DGS/COLMAP scenes and splat viewers; "
                        "world: ours, x right, y up, z towards the face")  # fmt: skip
    p.add_argument("--sh-degree", type=int, choices=(0, 3), default=0,
                   help="0: no f_rest (default); 3: 45 zero f_rest, for SIBR")  # fmt: skip
    p.add_argument("--check", action="store_true",
                   help=f"also render the splats at {CHECK_YAWS} yaws and print their PSNR "
                        "against the generator's volume render (~30 s more on a CPU)")  # fmt: skip
    p.add_argument("--check-res", type=positive_int, default=64, help="pixels per check view")
    p.add_argument("--chunk", type=positive_int, default=65536, help="σ queries per compiled call")
    p.set_defaults(fn=cmd_splats)


def _pitches(spec: str) -> list[float]:
    try:
        out = [float(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        out = []
    if not out or any(not -90 <= p <= 90 for p in out):
        raise ValueError(f"--pitches={spec!r}: expected comma-separated degrees in [-90, 90]")
    return out


def cmd_splats(args, overrides) -> int:
    import jax

    from styleavatar_jax import sampling
    from styleavatar_jax.export import frames
    from styleavatar_jax.export import mesh as mesh_io
    from styleavatar_jax.export import splats as sp

    out = check_output(args.out, "--out", suffixes=(".ply",))
    if args.num > sp.MAX_SPLATS:
        raise ValueError(f"--num={args.num}: expected at most {sp.MAX_SPLATS:,} (a 3DGS PLY "
                         "takes 68 bytes per Gaussian)")  # fmt: skip
    if args.res < 2:
        raise ValueError(f"--res={args.res}: expected at least 2")
    pitches = _pitches(args.pitches)
    start = time.perf_counter()
    cfg, G, variables = load_generator(args.ckpt, args.config, overrides, "splats")
    dev = sampling.make_mesh(args.devices)
    chunk = -(-args.chunk // dev.size) * dev.size  # a multiple of the devices
    ws = frames.seed_ws(G, variables, [args.seed], cfg.camera.to_dict(),
                        truncation_psi(args, cfg), cfg.sample.truncation_cutoff)  # fmt: skip
    planes_fn = frames.make_planes_fn(G, cfg.sample.noise_mode, dev)
    ws_rep = np.broadcast_to(ws, (dev.size, *ws.shape[1:]))
    planes = jax.device_get(planes_fn(variables, ws_rep, jax.random.key(0)))[:1]
    field = mesh_io.generator_field(G, variables, planes, dev)
    render, camera = G.cfg.render, cfg.camera.to_dict()
    near, far = render.ray_start, render.ray_end
    if near is None:  # the renderer's 'auto' limits: the box, seen from the orbit radius
        near, far = camera["radius"] - render.box_warp, camera["radius"] + render.box_warp
    radius = args.radius or sp.crop_radius(camera["radius"], render.ray_start, render.ray_end)
    c_vis = sp.orbit_labels(camera, args.yaws, pitches)
    splats, info = sp.extract_splats(field, c_vis, box=render.box_warp, near=near, far=far,
                                     radius=radius, res=args.res, threshold=args.threshold,
                                     num=args.num, min_weight=args.min_weight,
                                     scale=args.scale, chunk=chunk)  # fmt: skip
    sp.write_ply(out, sp.to_convention(splats, args.convention), args.sh_degree)
    seconds = time.perf_counter() - start
    count = len(splats.means)
    cut = f", the most visible of {info['visible']}" if info["visible"] > count else ""
    grid = f"{info['res']}³ grid"
    if info["res"] != args.res:
        grid += f" (coarsened from {args.res}³ to fit --num={args.num})"
    crop = f"ball of radius {radius:g}" if radius is not None else "the whole box"
    print(f"wrote {out} ({count} Gaussians{cut}, {out.stat().st_size / 1e6:.2f} MB, "
          f"{args.convention} coordinates; {grid}, voxel {info['voxel']:.4f}, {crop}; "
          f"{seconds:.1f} s)")  # fmt: skip
    if args.check:
        yaws = np.radians(np.arange(CHECK_YAWS) * 360.0 / CHECK_YAWS).astype(np.float32)
        c = sampling.view_labels(yaws, np.zeros_like(yaws), camera)
        ref, ref_alpha = sp.render_field(field, c, resolution=args.check_res, near=near,
                                         far=far, radius=radius, edge=info["voxel"],
                                         chunk=chunk)  # fmt: skip
        back = (1.0, 1.0, 1.0) if render.white_back else (0.0, 0.0, 0.0)
        img, _ = sp.render_splats(splats, c, args.check_res, background=back)
        if render.white_back:  # render_field composites over black, as the renderer
            ref = ref + (1 - ref_alpha)[..., None]
        p = sp.psnr(img, ref)
        deg = np.round(np.degrees(yaws)).astype(int)
        per = ", ".join(f"{d}°: {v:.1f}" for d, v in zip(deg, p, strict=True))
        print(f"check: PSNR {p.mean():.2f} dB (min {p.min():.2f}) of the splats against the "
              f"generator's volume render of the same crop at {CHECK_YAWS} yaws, "
              f"{args.check_res}² ({per})")  # fmt: skip
        # The generator's images as it makes them: its sampler, nothing cropped.
        own = sp.render_generator(G, variables, planes, c, args.check_res, jax.random.key(0))
        white, _ = sp.render_splats(splats, c, args.check_res, background=(1.0, 1.0, 1.0))
        black = img if not render.white_back else sp.render_splats(splats, c, args.check_res)[0]
        again = sp.render_generator(G, variables, planes, c, args.check_res, jax.random.key(1))
        print(f"check: against the generator's own raw images (its {render.depth_resolution} + "
              f"{render.depth_resolution_importance} samples per ray, uncropped): "
              f"{sp.psnr(black, own).mean():.2f} dB over black, "
              f"{sp.psnr(white, own).mean():.2f} dB over white; two draws of its renderer "
              f"agree to {sp.psnr(again, own).mean():.2f} dB")  # fmt: skip
    return 0
