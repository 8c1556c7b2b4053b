"""`sample` subcommand: JIT batch sampling of multi-view grids and the ws.

styleavatar-jax sample --ckpt DIR --seeds 0-63 --batch 32 --views yaw=-180:180:8 --out DIR
"""

from __future__ import annotations

import numpy as np

from styleavatar_jax.checkpoint import load_generator
from styleavatar_jax.cli.args import check_output, generator_flags, positive_int


def add_parsers(sub) -> None:
    p = sub.add_parser("sample", help="JIT batch sampling: multi-view PNG grids and the ws")
    generator_flags(p)
    p.add_argument("--seeds", default="0-7", help="e.g. 0-63 or 1,5,9")
    p.add_argument(
        "--batch",
        type=positive_int,
        default=8,
        help="seeds per compiled batch (multiple of devices)",
    )
    p.add_argument(
        "--views", default="yaw=-180:180:8", help="yaw=A:B:N or yaw=Y1,Y2;pitch=... (degrees)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--noise-mode", choices=("const", "random", "none"), help="backbone noise")
    p.set_defaults(fn=cmd_sample)


def cmd_sample(args, overrides) -> int:
    from styleavatar_jax import cameras, files, sampling
    from styleavatar_jax.export import grid

    out = check_output(args.out, "--out", folder=True)
    seeds = sampling.parse_seeds(args.seeds)
    yaw, pitch = cameras.parse_views(args.views)
    cfg, G, variables = load_generator(args.ckpt, args.config, overrides, "sample")
    camera = cfg.camera.to_dict()
    c_views = sampling.view_labels(yaw, pitch, camera)
    settings = sampling.SampleSettings(
        neural_res=args.neural_res or int(cfg.model.neural_res),
        truncation_psi=args.truncation
        if args.truncation is not None
        else float(cfg.sample.truncation_psi),
        truncation_cutoff=cfg.sample.truncation_cutoff,
        noise_mode=args.noise_mode or cfg.sample.noise_mode,
    )
    mesh = sampling.make_mesh(args.devices)
    all_ws, all_seeds = [], []
    for chunk, images, depth, ws in sampling.sample_batches(
        G, variables, seeds, c_views, camera, settings, batch=args.batch, mesh=mesh
    ):
        name = f"seeds{chunk[0]:05d}-{chunk[-1]:05d}.png"
        grid.write_png(out / f"grid_{name}", grid.image_grid(grid.to_uint8(images)))
        near, far = float(depth.min()), float(depth.max())
        shade = (far - depth) / max(far - near, 1e-8) * 2 - 1  # near = bright
        grid.write_png(out / f"depth_{name}", grid.image_grid(grid.to_uint8(shade)))
        print(f"wrote {out}/{{grid,depth}}_{name} ({len(chunk)} seeds x {len(yaw)} views)")
        all_ws.append(ws)
        all_seeds.extend(chunk)
    files.write_npz(
        out / "ws.npz",
        seeds=np.asarray(all_seeds),
        ws=np.concatenate(all_ws),
        yaw=yaw.astype(np.float32),
        pitch=pitch.astype(np.float32),
    )
    print(f"wrote {out / 'ws.npz'} on {mesh.size} device(s)")
    return 0
