"""`view` subcommand: one avatar as a self-contained web page (open OUT_DIR/index.html).

    styleavatar-jax view OUT_DIR --ckpt DIR --seed 0 [--texture 512] [--res 128] \
        [--frames 48] [--views yaw=-180:180:8] [--screenshot page.png]

OUT_DIR gets avatar.glb (the textured mesh), turntable.mp4 (or .gif), views.png (the
generator's views around the head: RGB over depth), info.json (seed, checkpoint, config
highlights, the run's latest metrics) and index.html, which holds all of them and a 3D
viewer: it opens offline, from a file:// URL, in any current browser. OUT_DIR is created;
an existing one is reused only when it holds nothing but these files (an earlier `view`),
else --force writes them into it anyway (other files are left alone).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from styleavatar_jax.checkpoint import load_generator
from styleavatar_jax.cli.args import (
    at_least_one,
    check_output,
    generator_flags,
    nonnegative_int,
    positive_int,
    threshold_flag,
    truncation_psi,
)

PAGE, GLB, VIEWS, INFO = "index.html", "avatar.glb", "views.png", "info.json"
TURNTABLES = ("turntable.mp4", "turntable.gif")
OUTPUTS = (PAGE, GLB, VIEWS, INFO, *TURNTABLES)  # what `view` writes (and may overwrite)
SCREENSHOT_SIZE = (960, 720)  # CSS pixels of the --screenshot window


def add_parsers(sub) -> None:
    p = sub.add_parser("view", help="one avatar as a web page: 3D viewer, turntable, views, "
                       "metrics (OUT_DIR/index.html, works offline)")  # fmt: skip
    p.add_argument("out", metavar="OUT_DIR", help="folder for index.html and the files it shows")
    generator_flags(p)
    p.add_argument("--seed", type=nonnegative_int, default=0, help="the avatar")
    p.add_argument("--texture", type=positive_int, default=512, help="texture size (pixels)")
    p.add_argument("--res", type=positive_int, default=128,
                   help="marching-cubes grid resolution per axis")  # fmt: skip
    threshold_flag(p)
    p.add_argument("--largest", action="store_true",
                   help="keep only the largest connected part of the surface around the "
                        "box's centre (drops floaters and background fog; a head cut from "
                        "its shoulders loses them)")  # fmt: skip
    p.add_argument("--faces", type=positive_int, default=50000,
                   help="face budget of the mesh (decimated to it; the UV atlas's time grows "
                        "faster than the face count)")  # fmt: skip
    p.add_argument("--frames", type=positive_int, default=48, help="turntable frames (one turn)")
    p.add_argument("--fps", type=at_least_one, default=24.0, help="turntable frames per second")
    p.add_argument("--pitch", type=float, default=0.0, help="turntable pitch, degrees")
    p.add_argument("--views", default="yaw=-180:180:8",
                   help="views.png: yaw=A:B:N or yaw=Y1,Y2;pitch=... (degrees)")  # fmt: skip
    p.add_argument("--turntable", choices=("mp4", "gif"), default="mp4",
                   help="format (mp4 needs imageio-ffmpeg; without it, gif)")  # fmt: skip
    p.add_argument("--batch", type=positive_int, default=8,
                   help="frames per compiled call (a multiple of the devices)")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="write into OUT_DIR even when it holds other files")  # fmt: skip
    p.add_argument("--screenshot", metavar="PNG",
                   help="also open the page in headless Chromium and save what it shows, "
                        "the face in front (needs /usr/bin/chromium)")  # fmt: skip
    p.set_defaults(fn=cmd_view)


def check_out_dir(path: str, force: bool, also: tuple[str, ...] = ()) -> Path:
    """OUT_DIR is new, empty, or holds only `view`'s own files (an earlier run) and the
    names in `also`; with `force`, any folder. Nothing is created here."""
    out = check_output(path, "OUT_DIR", folder=True)
    if out.is_dir() and not force:
        others = sorted(p.name for p in out.iterdir() if not _ours(p.name, also))
        if others:
            listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise FileExistsError(f"OUT_DIR={path}: holds files that `view` did not write "
                                  f"({listed}); choose a new or empty folder, or pass --force "
                                  f"to write {', '.join(OUTPUTS[:4])} and the turntable into "
                                  "it anyway")  # fmt: skip
    return out


def _ours(name: str, also: tuple[str, ...] = ()) -> bool:
    """One of OUTPUTS (or `also`), or a temporary file of an interrupted atomic write of one."""
    names = (*OUTPUTS, *also)
    return name in names or any(name.startswith(f".{o}.") for o in names)


def _make_glb(args, cfg, G, variables, ws: np.ndarray, mesh) -> tuple[bytes, dict]:
    """The seed's textured mesh as .glb bytes (glTF axes: +Y up, the face towards +Z) and
    a dict of figures about it for the page (vertices, faces, texture size, ...).

    ws [1, L, w] (truncated); args.res, args.threshold, args.texture as given.
    """
    import jax

    from styleavatar_jax.export import frames, texture
    from styleavatar_jax.export import mesh as mesh_io

    planes_fn = frames.make_planes_fn(G, cfg.sample.noise_mode, mesh)
    ws_rep = np.broadcast_to(ws, (mesh.size, *ws.shape[1:]))
    planes = jax.device_get(planes_fn(variables, ws_rep, jax.random.key(0)))[:1]
    field = mesh_io.generator_field(G, variables, planes, mesh)
    # Unlit: the baked colours show as the generator renders them (and software WebGL
    # draws it in ~1 s instead of ~10 s for a lit material).
    return texture.textured_glb(field, args.res, G.cfg.render.box_warp, args.threshold,
                                args.texture, faces=args.faces, unlit=True,
                                largest=args.largest,
                                chunk=-(-65536 // mesh.size) * mesh.size)  # fmt: skip


def _metrics(ckpt: str | None) -> tuple[str, dict]:
    """The run's newest metrics-<step>.json (eval's output) -> (title, {metric: {value,
    floor, per view group}}); ("", {}) when there is none."""
    if not ckpt or not Path(ckpt).is_dir():
        return "", {}
    found = {int(m[1]): p for p in Path(ckpt).glob("metrics-*.json")
             if (m := re.fullmatch(r"metrics-(\d+)\.json", p.name))}  # fmt: skip
    if not found:
        return "", {}
    step = max(found)
    try:
        data = json.loads(found[step].read_text())
    except (OSError, ValueError) as e:
        print(f"view: skipping {found[step]} ({e})")
        return "", {}
    out = {}
    for name, m in (data.get("metrics") or {}).items():
        if not isinstance(m, dict) or "value" not in m:
            continue
        row = {"value": m["value"]}
        floor = m.get("floor")
        if isinstance(floor, dict) and "value" in floor:
            row["floor"] = floor["value"]
        for group, g in (m.get("groups") or {}).items():
            value = g.get("value", g.get("error")) if isinstance(g, dict) else None
            if value is not None:
                row[group] = value
        out[name] = row
    return f"metrics at step {step} ({found[step].name})", out


def _checkpoint_name(args) -> str:
    from styleavatar_jax import checkpoint

    if not args.ckpt:
        return f"random init ({args.config})"
    steps = checkpoint.list_steps(args.ckpt)
    return f"{args.ckpt} (step {steps[-1]})" if steps else args.ckpt


def _highlights(cfg, G, psi: float, neural_res: int) -> dict:
    g, r = G.cfg, G.cfg.render
    return {
        "image resolution": f"{g.img_resolution}²",
        "neural rendering": f"{neural_res}²",
        "tri-planes": f"{g.backbone_resolution}² × {g.plane_channels} channels",
        "samples per ray": f"{r.depth_resolution} + {r.depth_resolution_importance}",
        "super-resolution": g.sr_kind,
        "camera": f"radius {cfg.camera.radius:g}, fov {cfg.camera.fov_degrees:g}°",
        "truncation ψ": psi,
    }


def cmd_view(args, overrides) -> int:
    import jax

    from styleavatar_jax import __version__, cameras, sampling
    from styleavatar_jax.export import frames, grid, video, viewer

    shot = Path(args.screenshot) if args.screenshot else None
    inside = shot is not None and shot.absolute().parent == Path(args.out).absolute()
    out = check_out_dir(args.out, args.force, also=(shot.name,) if inside else ())
    if args.res < 2:
        raise ValueError(f"--res={args.res}: expected at least 2")
    from styleavatar_jax.export.texture import check_texture_size

    check_texture_size(args.texture)
    if shot:
        check_output(shot, "--screenshot", suffixes=(".png",))
        from styleavatar_jax.export import browser

        if browser.find_chromium() is None:
            raise FileNotFoundError(f"--screenshot={shot}: needs Chromium ({browser.CHROMIUM}; "
                                    "Debian: apt-get install chromium)")  # fmt: skip
    mesh = sampling.make_mesh(args.devices)
    if args.batch % mesh.size:
        raise ValueError(f"--batch={args.batch}: expected a multiple of the {mesh.size} devices")
    yaw_views, pitch_views = cameras.parse_views(args.views)
    turntable, note = video.resolve_video_path(out / f"turntable.{args.turntable}",
                                               video.ffmpeg_exe() is not None)  # fmt: skip
    if note:
        print(note)
    cfg, G, variables = load_generator(args.ckpt, args.config, overrides, "view")
    if args.threshold is None:
        from styleavatar_jax.export.mesh import surface_threshold

        args.threshold = surface_threshold(cfg)
    psi, camera = truncation_psi(args, cfg), cfg.camera.to_dict()
    neural_res = args.neural_res or int(cfg.model.neural_res)
    ws = frames.seed_ws(G, variables, [args.seed], camera, psi, cfg.sample.truncation_cutoff)

    glb, glb_stats = _make_glb(args, cfg, G, variables, ws, mesh)  # first: it can fail

    # The turntable from the front (yaw 0) round, then the views, in one compiled renderer.
    yaw = frames.parse_yaw_range("0:360", args.frames)
    c_turn = sampling.view_labels(yaw, np.full_like(yaw, np.radians(args.pitch)), camera)
    c_views = sampling.view_labels(yaw_views, pitch_views, camera)
    settings = frames.FrameSettings(neural_res=neural_res, chunk=args.batch,
                                    noise_mode=cfg.sample.noise_mode, normals=False)  # fmt: skip
    rendered = frames.render_orbit(G, variables, ws, np.concatenate([c_turn, c_views]), settings,
                                   mesh=mesh, key=jax.random.key(0))  # fmt: skip
    pics = frames.pictures(rendered, ["rgb", "depth"], G.cfg.img_resolution)
    t = len(c_turn)
    turn_frames = grid.to_uint8(pics["rgb"][0, :t])
    views = grid.to_uint8(np.stack([pics["rgb"][0, t:], pics["depth"][0, t:]]))
    views_png = out / VIEWS

    info = {
        "seed": args.seed,
        "checkpoint": _checkpoint_name(args),
        "styleavatar-jax": __version__,
        "model": _highlights(cfg, G, psi, neural_res),
        "mesh": {"grid": f"{args.res}³", "σ level": args.threshold, "texture": f"{args.texture}²",
                 **glb_stats},
    }  # fmt: skip
    title, metrics = _metrics(args.ckpt)
    if metrics:
        info[title] = metrics

    out.mkdir(parents=True, exist_ok=True)
    for stale in TURNTABLES:  # an earlier run's other format
        if out / stale != turntable:
            (out / stale).unlink(missing_ok=True)
    _write_bytes(out / GLB, glb)
    video.write_video(turntable, turn_frames, args.fps)
    grid.write_png(views_png, grid.image_grid(views))
    _write_bytes(out / INFO, (json.dumps(info, indent=2, default=str) + "\n").encode())
    mime = "video/mp4" if turntable.suffix == ".mp4" else "image/gif"
    page = viewer.write_page(out / PAGE, glb, turntable.read_bytes(), mime,
                             views_png.read_bytes(), info,
                             title=f"avatar: seed {args.seed}")  # fmt: skip
    size = page.stat().st_size / 1e6
    print(f"wrote {out}/{{{PAGE},{GLB},{turntable.name},{VIEWS},{INFO}}} ({size:.1f} MB "
          f"page); open {page.absolute().as_uri()}")  # fmt: skip
    if shot:
        _screenshot(page, shot)
    return 0


def _write_bytes(path: Path, data: bytes) -> None:
    from styleavatar_jax.files import write_atomic

    write_atomic(path, lambda f: f.write(data))


def _screenshot(page: Path, png: Path) -> None:
    """The page in headless Chromium, the model turned to the front and still -> png."""
    from styleavatar_jax.export import browser, viewer
    from styleavatar_jax.files import write_atomic

    report = browser.open_page(str(page), until=viewer.SHOWN, before_screenshot=viewer.STILL,
                               size=SCREENSHOT_SIZE, full_page=True)  # fmt: skip
    if report.value != viewer.LOADED:
        raise ValueError(f"--screenshot: the page's 3D view did not load ({report.value}); "
                         f"console: {report.errors()[:3]}")  # fmt: skip
    for text in report.errors():
        print(f"view: the browser's console says: {text}")
    write_atomic(png, lambda f: f.write(report.screenshot))
    print(f"wrote {png} (headless Chromium, {SCREENSHOT_SIZE[0]} px wide)")
