"""`video`, `mesh` and `walk` subcommands: what users take away from a trained generator.

    styleavatar-jax video --ckpt DIR --seeds 0-3 --frames 120 --yaw=-180:180 --pitch 10 \
        --out a.mp4 [--kinds rgb,depth,normal] [--batch 8] [--truncation 0.7] [--fps 24]
    styleavatar-jax mesh --ckpt DIR --seed 0 --res 256 --out head.ply [--threshold 10] \
        [--preview head.png]
    styleavatar-jax mesh --ckpt DIR --seed 0 --out head.glb [--texture 1024] [--faces N] \
        [--unlit] [--meters-per-unit 0.6] [--measure]     (or head.obj: + head.mtl, head.png)
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
    threshold_flag,
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

    p = sub.add_parser("mesh", help="marching-cubes mesh of one seed: PLY with vertex "
                       "colours, or textured GLB / OBJ + MTL + PNG")  # fmt: skip
    _common(p, batch=False, fps=False)
    p.add_argument("--seed", type=nonnegative_int, default=0, help="the head to mesh")
    p.add_argument("--res", type=positive_int, default=256, help="grid resolution per axis")
    threshold_flag(p)
    p.add_argument("--chunk", type=positive_int, default=65536, help="σ queries per compiled call")
    p.add_argument("--out", required=True,
                   help="head.ply (vertex colours), head.glb (textured, one file) or head.obj "
                   "(textured: head.mtl and head.png are written beside it)")  # fmt: skip
    p.add_argument("--format", choices=("glb", "obj", "ply"),
                   help="implied by --out's suffix; if given, it must agree with it")  # fmt: skip
    p.add_argument("--largest", action="store_true",
                   help="keep only the largest connected part of the surface around the "
                        "box's centre (the head: drops floaters and background fog)")  # fmt: skip
    p.add_argument("--faces", type=int,
                   help="decimate to about this many faces first (default: keep all; the UV "
                   "atlas's time grows faster than the face count)")  # fmt: skip
    p.add_argument("--texture", type=int,
                   help="texture size in texels, a power of two from 64 to 8192 (.glb/.obj "
                   "only; default 1024)")  # fmt: skip
    p.add_argument("--unlit", action="store_true",
                   help="GLB material KHR_materials_unlit: the baked colour shows as it is "
                   "(default: PBR base colour, metallic 0, roughness 1)")  # fmt: skip
    p.add_argument("--meters-per-unit", type=float,
                   help="metres per world unit in .glb/.obj (default 0.6: the renderer's box "
                   "[-0.5, 0.5]^3 becomes 60 cm and the shipped model's head ~24 cm; glTF "
                   "axes: +Y up, the face looking along +Z)")  # fmt: skip
    p.add_argument("--bake-offset", type=float,
                   help="bake colours this far inside the surface, in world units (default "
                   "0.03, measured on the shipped model: export/texture.py)")  # fmt: skip
    p.add_argument("--measure", action="store_true",
                   help="also print the texture's error against the field at 1,000 surface "
                   "points and the written file's PSNR against the generator's raw images at "
                   "8 yaws (.glb/.obj)")  # fmt: skip
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


def _mesh_format(args) -> tuple[str, int | None]:
    """Check the mesh flags against each other before any work -> (format, texture size or
    None for .ply)."""
    from styleavatar_jax.export import gltf, texture
    from styleavatar_jax.export import mesh as mesh_io

    out = check_output(args.out, "--out", suffixes=(".ply", ".obj", ".glb"))
    fmt = out.suffix.lower()[1:]
    if args.format and args.format != fmt:
        other = out.with_suffix("." + args.format)
        raise ValueError(f"--format={args.format} disagrees with --out={args.out} (a .{fmt} "
                         f"file); drop --format or write --out {other}")  # fmt: skip
    if args.res < 2 or args.chunk < 1:
        raise ValueError(f"--res={args.res} --chunk={args.chunk}: expected res >= 2, chunk >= 1")
    if args.faces is not None and args.faces < mesh_io.MIN_FACES_PER_PART:
        raise ValueError(f"--faces={args.faces}: expected at least "
                         f"{mesh_io.MIN_FACES_PER_PART} (a closed surface needs 4 triangles); "
                         "leave it out to keep every face")  # fmt: skip
    if fmt == "ply":
        given = [flag for flag, value in (("--texture", args.texture), ("--unlit", args.unlit),
                 ("--meters-per-unit", args.meters_per_unit), ("--bake-offset", args.bake_offset),
                 ("--measure", args.measure)) if value not in (None, False)]  # fmt: skip
        if given:
            raise ValueError(f"{', '.join(given)}: for textured meshes (--out ending in .glb or "
                             f".obj); --out={args.out} writes vertex colours")  # fmt: skip
        return fmt, None
    size = texture.check_texture_size(
        texture.DEFAULT_TEXTURE if args.texture is None else args.texture
    )
    if args.unlit and fmt == "obj":
        raise ValueError("--unlit: a GLB material setting (KHR_materials_unlit); an .obj's "
                         "material has none, write --out ending in .glb")  # fmt: skip
    mpu = args.meters_per_unit
    if mpu is not None and not (np.isfinite(mpu) and mpu > 0):
        raise ValueError(f"--meters-per-unit={mpu}: expected a positive number, e.g. 0.6")
    if args.bake_offset is not None and not np.isfinite(args.bake_offset):
        raise ValueError(f"--bake-offset={args.bake_offset}: expected a finite number")
    if fmt == "obj":
        _, mtl, png = gltf.obj_paths(out)
        check_output(mtl, "--out (its .mtl)")
        check_output(png, "--out (its .png)")
        if args.preview and Path(args.preview).absolute() == png.absolute():
            raise ValueError(f"--preview={args.preview}: is the texture {png.name} that "
                             f"--out={args.out} writes; choose another name")  # fmt: skip
    return fmt, size


def cmd_mesh(args, overrides) -> int:
    import jax

    from styleavatar_jax import sampling
    from styleavatar_jax.export import frames, grid, texture
    from styleavatar_jax.export import mesh as mesh_io

    fmt, size = _mesh_format(args)
    out = Path(args.out)
    if args.preview:
        check_output(args.preview, "--preview", suffixes=(".png",))
    cfg, G, variables = load_generator(args.ckpt, args.config, overrides, "mesh")
    if args.threshold is None:
        args.threshold = mesh_io.surface_threshold(cfg)
    dev = sampling.make_mesh(args.devices)
    chunk = -(-args.chunk // dev.size) * dev.size  # a multiple of the devices
    ws = _latents(cfg, G, variables, [args.seed], truncation_psi(args, cfg))
    planes_fn = frames.make_planes_fn(G, cfg.sample.noise_mode, dev)
    ws_rep = np.broadcast_to(ws, (dev.size, *ws.shape[1:]))
    planes = jax.device_get(planes_fn(variables, ws_rep, jax.random.key(0)))[:1]
    field = mesh_io.generator_field(G, variables, planes, dev)
    box = G.cfg.render.box_warp
    where = f"σ level {args.threshold:g} on a {args.res}³ grid over [{-box / 2:g}, {box / 2:g}]³"
    if fmt == "ply":
        sigma = mesh_io.density_grid(field, args.res, box, chunk)
        verts, faces = mesh_io.marching_cubes(sigma, args.threshold, box)
        if args.largest:
            verts, faces = mesh_io.largest_part(verts, faces)
        if args.faces is not None:
            verts, faces = mesh_io.decimate(verts, faces, args.faces)
        colors = mesh_io.colors_uint8(mesh_io.query_chunked(field, verts, chunk)[0])
        mesh_io.write_mesh(out, verts, faces, colors)
        print(f"wrote {out} ({len(verts)} vertices, {len(faces)} faces; {where})")
    else:
        mpu = texture.METERS_PER_UNIT if args.meters_per_unit is None else args.meters_per_unit
        tm, stats = texture.textured_mesh(field, args.res, box, args.threshold, size,
                                          faces=args.faces, offset=args.bake_offset,
                                          chunk=chunk, largest=args.largest)  # fmt: skip
        paths = texture.write_textured(out, tm, unlit=args.unlit, meters_per_unit=mpu)
        verts, faces = tm.verts, tm.faces
        decimated = stats["faces"] < stats["surface_faces"]
        kept = f"decimated from {stats['surface_faces']}" if decimated else "all of the surface"
        times = ", ".join(f"{k} {v:.1f} s" for k, v in stats["seconds"].items())
        size_mb = sum(p.stat().st_size for p in paths) / 2**20
        print(f"wrote {', '.join(str(p) for p in paths)} ({size_mb:.1f} MB; {stats['faces']} "
              f"faces, {kept}; {stats['vertices']} vertices; {stats['charts']} charts on a "
              f"{size}² texture, {stats['coverage']:.0%} of it covered; {where}; "
              f"{mpu:g} m per world unit, +Y up, facing +Z; {times})")  # fmt: skip
        if args.measure:
            mae = texture.texture_mae(tm, field, offset=stats["offset"], chunk=chunk)
            r = texture.render_psnr(paths[0], G, variables, planes, cfg.camera.to_dict(), dev,
                                    key=jax.random.key(0), meters_per_unit=mpu)  # fmt: skip
            print(f"measure: texture vs field at {texture.MEASURE_POINTS} surface points: MAE "
                  f"{mae:.2f} (uint8 levels); {paths[0].name} ray-cast vs the generator's raw "
                  f"RGB, {texture.MEASURE_YAWS} yaws at {texture.MEASURE_RES}²: PSNR "
                  f"{r['psnr_mesh']:.2f} dB over the mesh's pixels (the generator against "
                  f"itself, other samples: {r['psnr_self']:.2f} dB), {r['psnr_union']:.2f} dB "
                  f"over the pixels either covers (mask IoU {r['iou']:.2f})")  # fmt: skip
    if args.preview:
        yaws = np.radians([float(y) for y in args.preview_yaws.split(",")]).astype(np.float32)
        # The config's orbit, looking at the world origin (the box centre), 10° above.
        camera = dict(cfg.camera.to_dict(), pivot=(0.0, 0.0, 0.0))
        c = sampling.view_labels(yaws, np.full_like(yaws, np.radians(10.0)), camera)
        image = mesh_io.lambert_views(verts, faces, c, args.preview_res)
        grid.write_png(args.preview, image)
        print(f"wrote {args.preview} ({len(yaws)} views)")
    return 0
