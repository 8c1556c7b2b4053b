"""`video`, `mesh` and `walk` subcommands: what users take away from a trained generator.

    styleavatar-jax video --ckpt DIR --seeds 0-3 --frames 120 --yaw=-180:180 --pitch 10 \
        --out a.mp4 [--kinds rgb,depth,normal] [--batch 8] [--truncation 0.7] [--fps 24]
    styleavatar-jax mesh --ckpt DIR --seed 0 --res 256 --out head.ply [--threshold 10] \
        [--preview head.png]
    styleavatar-jax walk --ckpt DIR --seeds 0,1,2 --space z|w --frames-per-seed 30 \
        --out walk.mp4 [--truncation-sweep 0:1:16] [--orbit 20]

--config FILE instead of --ckpt renders a randomly initialised G (smoke tests). A video
holds all seeds side by side (one row); depth and normal videos go beside the RGB one
(a_depth.mp4, a_normal.mp4). MP4 needs imageio-ffmpeg; without it a GIF is written, and
said so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from styleavatar_jax.checkpoint import load_generator
from styleavatar_jax.cli.args import (
    at_least_one,
    check_output,
    generator_flags,
    nonnegative_int,
    parse_kinds,
    positive_int,
    truncation_psi,
)


def add_parsers(sub) -> None:
    p = sub.add_parser("video", help="turntable video(s): RGB, depth, normals")
    _common(p)
    p.add_argument("--seeds", default="0-3", help="e.g. 0-3 or 1,5,9 (side by side)")
    p.add_argument("--frames", type=positive_int, default=120, help="number of frames")
    p.add_argument("--yaw", default="-180:180",
                   help="A:B degrees (--yaw=-90:90 if A < 0); a full turn omits B")  # fmt: skip
    p.add_argument("--pitch", type=float, default=0.0, help="degrees (> 0: camera above)")
    p.add_argument("--kinds", default="rgb,depth,normal", help="some of rgb,depth,normal")
    p.add_argument("--out", required=True, help="a.mp4 or a.gif (a_depth.mp4 ... beside it)")
    p.set_defaults(fn=cmd_video)

    p = sub.add_parser("mesh", help="marching-cubes mesh of one seed (PLY or OBJ)")
    _common(p, batch=False, fps=False)
    p.add_argument("--seed", type=nonnegative_int, default=0, help="the head to mesh")
    p.add_argument("--res", type=positive_int, default=256, help="grid resolution per axis")
    p.add_argument("--threshold", type=float, default=10.0, help="σ level (EG3D: 10)")
    p.add_argument("--chunk", type=positive_int, default=65536, help="σ queries per compiled call")
    p.add_argument("--out", required=True, help="head.ply or head.obj")
    p.add_argument("--preview", help="also write a PNG: 3 Lambert-shaded views of the mesh")
    p.add_argument("--preview-res", type=positive_int, default=256, help="pixels per preview view")
    p.add_argument("--preview-yaws", default="0,90,180", help="degrees, comma separated")
    p.set_defaults(fn=cmd_mesh)

    p = sub.add_parser("walk", help="latent walk video (z slerp / w lerp) or truncation sweep")
    _common(p)
    p.add_argument("--seeds", default="0,1,2", help="keyframe seeds (a loop through them)")
    p.add_argument("--space", choices=("z", "w"), default="w",
                   help="z: slerp between the seeds' z; w: lerp between their ws")  # fmt: skip
    p.add_argument("--frames-per-seed", type=positive_int, default=30,
                   help="frames from one keyframe seed to the next")  # fmt: skip
    p.add_argument("--truncation-sweep", metavar="A:B:N",
                   help="psi from A to B in N frames at the first seed (not a walk)")  # fmt: skip
    p.add_argument("--yaw", type=float, default=0.0, help="camera yaw, degrees")
    p.add_argument("--pitch", type=float, default=0.0, help="camera pitch, degrees")
    p.add_argument("--orbit", type=float, default=0.0,
                   help="yaw swings ± this many degrees once over the video")  # fmt: skip
    p.add_argument("--kinds", default="rgb", help="some of rgb,depth,normal")
    p.add_argument("--out", required=True, help="walk.mp4 or walk.gif")
    p.set_defaults(fn=cmd_walk)


def _common(p: argparse.ArgumentParser, *, batch: bool = True, fps: bool = True) -> None:
    generator_flags(p)
    if batch:
        p.add_argument("--batch", type=positive_int, default=8,
                       help="frames per compiled call (a multiple of the devices)")  # fmt: skip
    if fps:
        p.add_argument("--fps", type=at_least_one, default=24.0, help="frames per second")


def _latents(cfg, G, variables, seeds, psi):
    """seeds -> truncated ws [S, L, w] (frontal conditioning, as sample)."""
    from styleavatar_jax.export import frames

    return frames.seed_ws(G, variables, seeds, cfg.camera.to_dict(), psi,
                          cfg.sample.truncation_cutoff)  # fmt: skip


def _settings(args, cfg, kinds):
    from styleavatar_jax.export.frames import FrameSettings

    return FrameSettings(neural_res=args.neural_res or int(cfg.model.neural_res),
                         chunk=args.batch, noise_mode=cfg.sample.noise_mode,
                         normals="normal" in kinds)  # fmt: skip


def _write_videos(out_path, pics: dict, fps: float) -> list[Path]:
    from styleavatar_jax.export import video
    from styleavatar_jax.export.grid import to_uint8

    path, note = video.resolve_video_path(out_path, video.ffmpeg_exe() is not None)
    if note:
        print(note)
    written = []
    for kind, frames in pics.items():
        written.append(video.write_video(video.companion_path(path, kind), to_uint8(frames), fps))
    return written


def cmd_video(args, overrides) -> int:
    import jax

    from styleavatar_jax import sampling
    from styleavatar_jax.export import frames, video

    video.resolve_video_path(args.out, True)  # bad suffix: fail before rendering
    check_output(args.out, "--out")
    kinds = parse_kinds(args.kinds)
    cfg, G, variables = load_generator(args.ckpt, args.config, overrides, "video")
    seeds = sampling.parse_seeds(args.seeds)
    yaw = frames.parse_yaw_range(args.yaw, args.frames)
    c_frames = sampling.view_labels(yaw, np.full_like(yaw, np.radians(args.pitch)),
                                    cfg.camera.to_dict())  # fmt: skip
    ws = _latents(cfg, G, variables, seeds, truncation_psi(args, cfg))
    settings = _settings(args, cfg, kinds)
    mesh = sampling.make_mesh(args.devices)
    out = frames.render_orbit(G, variables, ws, c_frames, settings, mesh=mesh,
                              key=jax.random.key(0))  # fmt: skip
    pics = frames.pictures(out, kinds, G.cfg.img_resolution)  # [S, T, H, W, 3]
    row = {k: np.concatenate(list(v), axis=2) for k, v in pics.items()}  # seeds side by side
    for p in _write_videos(args.out, row, args.fps):
        print(f"wrote {p} ({len(seeds)} seeds x {args.frames} frames)")
    return 0


def cmd_walk(args, overrides) -> int:
    import jax

    from styleavatar_jax import sampling
    from styleavatar_jax.export import frames, video, walks

    video.resolve_video_path(args.out, True)
    check_output(args.out, "--out")
    kinds = parse_kinds(args.kinds)
    cfg, G, variables = load_generator(args.ckpt, args.config, overrides, "walk")
    seeds = sampling.parse_seeds(args.seeds)
    psi, cutoff = truncation_psi(args, cfg), cfg.sample.truncation_cutoff
    w_avg = frames.w_avg_of(variables)
    if args.truncation_sweep:
        psis = walks.parse_sweep(args.truncation_sweep)
        ws_one = _latents(cfg, G, variables, seeds[:1], 1.0)
        ws = frames.truncate(np.repeat(ws_one, len(psis), 0), w_avg, psis, cutoff)
        what = f"psi {psis[0]:g} -> {psis[-1]:g} at seed {seeds[0]}"
    elif args.space == "w":
        ws = walks.w_walk(_latents(cfg, G, variables, seeds, psi), args.frames_per_seed)
        what = f"w lerp through seeds {seeds}"
    else:
        z = walks.z_walk(sampling.z_from_seeds(seeds, G.cfg.z_dim), args.frames_per_seed)
        c = sampling.view_labels(np.zeros(len(z)), np.zeros(len(z)), cfg.camera.to_dict())
        ws = frames.truncate(np.asarray(frames.make_mapping_fn(G)(variables, z, c)), w_avg,
                             psi, cutoff)  # fmt: skip
        what = f"z slerp through seeds {seeds}"
    c_frames = walks.orbit_labels(len(ws), cfg.camera.to_dict(), args.yaw, args.pitch, args.orbit)
    settings = _settings(args, cfg, kinds)
    mesh = sampling.make_mesh(args.devices)
    out = frames.render_frames(G, variables, ws, c_frames, settings, mesh=mesh,
                               key=jax.random.key(0))  # fmt: skip
    for p in _write_videos(args.out, frames.pictures(out, kinds, G.cfg.img_resolution), args.fps):
        print(f"wrote {p} ({len(ws)} frames: {what})")
    return 0


def cmd_mesh(args, overrides) -> int:
    import jax

    from styleavatar_jax import sampling
    from styleavatar_jax.export import frames, grid
    from styleavatar_jax.export import mesh as mesh_io

    out = check_output(args.out, "--out", suffixes=(".ply", ".obj"))
    if args.preview:
        check_output(args.preview, "--preview", suffixes=(".png",))
    if args.res < 2 or args.chunk < 1:
        raise ValueError(f"--res={args.res} --chunk={args.chunk}: expected res >= 2, chunk >= 1")
    cfg, G, variables = load_generator(args.ckpt, args.config, overrides, "mesh")
    dev = sampling.make_mesh(args.devices)
    chunk = -(-args.chunk // dev.size) * dev.size  # a multiple of the devices
    ws = _latents(cfg, G, variables, [args.seed], truncation_psi(args, cfg))
    planes_fn = frames.make_planes_fn(G, cfg.sample.noise_mode, dev)
    ws_rep = np.broadcast_to(ws, (dev.size, *ws.shape[1:]))
    planes = jax.device_get(planes_fn(variables, ws_rep, jax.random.key(0)))[:1]
    field = mesh_io.generator_field(G, variables, planes, dev)
    box = G.cfg.render.box_warp
    verts, faces, colors = mesh_io.extract_mesh(field, args.res, box, args.threshold, chunk)
    mesh_io.write_mesh(out, verts, faces, colors)
    print(f"wrote {out} ({len(verts)} vertices, {len(faces)} faces; σ level {args.threshold:g} "
          f"on a {args.res}³ grid over [{-box / 2:g}, {box / 2:g}]³)")  # fmt: skip
    if args.preview:
        yaws = np.radians([float(y) for y in args.preview_yaws.split(",")]).astype(np.float32)
        # The config's orbit, looking at the world origin (the box centre), 10° above.
        camera = dict(cfg.camera.to_dict(), pivot=(0.0, 0.0, 0.0))
        c = sampling.view_labels(yaws, np.full_like(yaws, np.radians(10.0)), camera)
        image = mesh_io.lambert_views(verts, faces, c, args.preview_res)
        grid.write_png(args.preview, image)
        print(f"wrote {args.preview} ({len(yaws)} views)")
    return 0
