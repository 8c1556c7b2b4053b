"""W-diffusion subcommands: pairs, training, evaluation, and image/text -> 3D avatar.

    styleavatar-jax wdiff-data --gan RUN --clip PATH_OR_ID --num 20000 --out pairs.npz
    styleavatar-jax wdiff-train --config configs/wdiff.py --data pairs.npz --workdir WD
    styleavatar-jax wdiff-eval --gan RUN --wdiff WD [--guidance 1,3]
    styleavatar-jax from-image PORTRAIT.png [...] --gan RUN --wdiff WD --out DIR
    styleavatar-jax from-text "a pixar girl with red hair" [...] --gan RUN --wdiff WD --out DIR

CLIP (image and text towers) runs in JAX (styleavatar_jax/models/clip.py), loaded from a
transformers CLIP directory or hub id; the pairs file records which one, and from-image /
from-text use the same one unless --clip says otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from styleavatar_jax.checkpoint import load_generator
from styleavatar_jax.cli.args import check_output, nonnegative_int, positive_float, positive_int
from styleavatar_jax.typed_config import load_config_file


def add_parsers(sub) -> None:
    p = sub.add_parser("wdiff-data", help="(w, CLIP embedding) pairs from a trained GAN")
    p.add_argument("--gan", required=True, help="GAN run directory (train / convert-eg3d)")
    p.add_argument("--clip", required=True, help="CLIP: transformers directory or hub id")
    p.add_argument("--num", type=positive_int, required=True, help="number of pairs")
    p.add_argument("--out", required=True, help="pairs file to write (.npz)")
    p.add_argument("--batch", type=positive_int, default=32, help="avatars per compiled batch")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="first z seed")
    p.add_argument(
        "--neural-res", type=positive_int, help="neural rendering res (default: GAN config)"
    )
    p.add_argument(
        "--devices", type=positive_int, help="use the first N local devices (default: all)"
    )
    p.set_defaults(fn=cmd_data)

    p = sub.add_parser("wdiff-train", help="train the W-diffusion denoiser on a pairs file")
    p.add_argument("--config", default="configs/wdiff.py", help="configs/wdiff.py[:demo|tiny]")
    p.add_argument("--data", help="pairs file (default: config.data.path)")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, logs)")
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    p.add_argument("--max-minutes", type=positive_float, help="stop (and save) after this long")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("wdiff-eval", help="w recovery, w-space FD, CLIP similarity (held out)")
    _common(p)
    p.add_argument("--data", help="pairs file (default: the one the model was trained on)")
    p.add_argument("--guidance", default="1,3", help="comma-separated λ values (default 1,3)")
    p.add_argument("--out", help="result JSON (default: WDIFF/eval-<step>.json)")
    p.add_argument("--no-clip", action="store_true", help="skip the CLIP similarity")
    p.add_argument(
        "--portraits",
        metavar="DATASET",
        help="also image -> avatar on this dataset's front views: from-image vs a random w "
        "vs inversion (LPIPS, PSNR at each portrait's camera)",
    )
    p.add_argument("--portrait-num", type=positive_int, default=64, help="portraits to use")
    p.add_argument("--portrait-guidance", type=float, default=3.0, help="λ of from-image")
    p.add_argument("--inversion-steps", type=positive_int, default=100,
                   help="Adam steps of the inversion baseline (its w stage)")  # fmt: skip
    p.set_defaults(fn=cmd_eval)

    for name, what in (("from-image", "portrait image(s)"), ("from-text", "sentence(s)")):
        p = sub.add_parser(name, help=f"{what} -> w -> 3D avatar (views grid, turntable, w)")
        p.add_argument("conditions", nargs="+", help=what)
        _common(p)
        p.add_argument("--guidance", type=float, help="λ (default: config sample.guidance)")
        p.add_argument("--num", type=positive_int, default=4, help="avatars per condition")
        p.add_argument("--truncation", type=float, default=1.0, help="psi towards G's w_avg")
        p.add_argument("--views", default="yaw=-180:135:8", help="grid views (as `sample`)")
        p.add_argument(
            "--frames", type=nonnegative_int, default=36, help="turntable frames (0: none)"
        )
        p.add_argument("--out", required=True, help="output folder")
        p.set_defaults(fn=cmd_generate, kind=name.split("-")[1])


def _common(p) -> None:
    p.add_argument("--gan", required=True, help="GAN run directory")
    p.add_argument("--wdiff", required=True, help="wdiff-train run directory")
    p.add_argument("--clip", help="CLIP directory or hub id (default: the pairs file's)")
    p.add_argument("--steps", type=positive_int, help="DDIM steps (default: config sample.steps)")
    p.add_argument("--eta", type=float, help="DDIM η (default: config sample.eta)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="sampling seed")
    p.add_argument("--batch", type=positive_int, default=64, help="rows per compiled batch")
    p.add_argument(
        "--devices", type=positive_int, help="use the first N local devices (default: all)"
    )


def cmd_data(args, overrides) -> int:
    from styleavatar_jax import sampling
    from styleavatar_jax.convert.clip import load_clip
    from styleavatar_jax.wdiff import pairs

    if args.num < 1:
        raise ValueError(f"--num={args.num}: expected ≥ 1")
    out = check_output(args.out, "--out", suffixes=(".npz",))
    clip = load_clip(args.clip)  # fails before the GAN loads if the path is wrong
    cfg, G, g_vars = load_generator(args.gan, None, [], "--gan", flag="--gan")
    mesh = sampling.make_mesh(args.devices)
    neural_res = args.neural_res or int(cfg.model.neural_res)
    t0 = time.perf_counter()
    p = pairs.make_pairs(
        G,
        g_vars,
        cfg.camera.to_dict(),
        neural_res,
        lambda x: np.asarray(clip.embed_images(x)),
        num=args.num,
        batch=args.batch,
        seed=args.seed,
        mesh=mesh,
        meta={
            "gan": str(Path(args.gan).absolute()),
            "clip": _clip_ref(args.clip),
            "first_seed": args.seed,
        },
    )
    pairs.save_pairs(out, p)
    dt = time.perf_counter() - t0
    print(
        f"wrote {out}: {len(p)} pairs, w {p.w.shape[1]}-d, e {p.e.shape[1]}-d "
        f"({len(p) / dt:.1f} pairs/s on {mesh.size} device(s))"
    )
    return 0


def _clip_ref(path_or_id: str) -> str:
    """A local CLIP folder as an absolute path (the pairs file is read from anywhere), a hub
    id as given."""
    p = Path(path_or_id)
    return str(p.absolute()) if p.exists() else path_or_id


def cmd_train(args, overrides) -> int:
    from styleavatar_jax.runtime import exit_code
    from styleavatar_jax.wdiff import train

    cfg = load_config_file(args.config, overrides)
    if args.data:
        cfg.data.path = args.data
    check_output(args.workdir, "--workdir", folder=True)
    max_seconds = None if args.max_minutes is None else args.max_minutes * 60
    state, status = train.train(
        cfg,
        args.workdir,
        resume=args.resume,
        max_seconds=max_seconds,
        progress=not args.no_progress,
    )
    print(f"{status} at step {int(state.step)}: {Path(args.workdir).absolute()}")
    return exit_code(status)  # 130 / 143 after SIGINT / SIGTERM (runtime.StopOnSignal)


def _setup(args):
    """-> (wd, G config, G, g_vars, mesh, clip or None) with the w_dim check."""
    from styleavatar_jax import sampling
    from styleavatar_jax.wdiff import train

    wd = train.load_wdiff(args.wdiff)
    cfg, G, g_vars = load_generator(args.gan, None, [], "--gan", flag="--gan")
    if G.cfg.w_dim != wd.cfg.w_dim:
        raise ValueError(
            f"--gan {args.gan} has w_dim={G.cfg.w_dim} but --wdiff {args.wdiff} "
            f"was trained on w_dim={wd.cfg.w_dim} (a pairs file of another GAN)"
        )
    return wd, cfg, G, g_vars, sampling.make_mesh(args.devices)


def _clip(args, wd, required: bool):
    from styleavatar_jax.convert.clip import load_clip

    path = args.clip or wd.meta.get("pairs", {}).get("clip")
    if not path:
        if required:
            raise ValueError(f"--clip: {args.wdiff}'s pairs file names no CLIP model; pass one")
        return None
    clip = load_clip(path)
    if clip.config.projection_dim != wd.cfg.cond_dim:
        raise ValueError(
            f"--clip {path}: embeddings are {clip.config.projection_dim}-d but the "
            f"denoiser was trained on {wd.cfg.cond_dim}-d conditions"
        )
    return clip


def _read_portraits(args, source, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`wdiff-eval --portraits`: the dataset's first front views, checked against the GAN
    before any work -> (uint8 images, labels, dataset indices)."""
    from styleavatar_jax.wdiff.portraits import front_portraits

    res = int(cfg.model.generator.img_resolution)
    with source:
        if source.resolution != res:
            raise ValueError(f"--portraits={args.portraits}: images are {source.resolution}², "
                             f"but --gan={args.gan} generates {res}²")  # fmt: skip
        return front_portraits(source, args.portrait_num)


def _portraits(args, portraits, wd, cfg, G, g_vars, pairs, clip, mesh) -> dict:
    """wdiff/portraits.py on the portraits; a picture (rows: portrait, from-image, random w,
    inversion) beside the JSON."""
    from styleavatar_jax.export import grid
    from styleavatar_jax.wdiff import portraits as pt

    images, labels, idx = portraits
    settings = pt.PortraitSettings(
        num=len(images),
        guidance=args.portrait_guidance,
        steps=args.steps or wd.sample.steps,
        inversion_steps=args.inversion_steps,
        seed=args.seed,
    )
    neural_res = int(pairs.meta.get("neural_res", cfg.model.neural_res))
    result, renders = pt.compare(wd, G, g_vars, clip, images, labels, cfg.camera.to_dict(),
                                 neural_res, settings, mesh=mesh, log=print)  # fmt: skip
    rows = np.concatenate([images[None, :8], grid.to_uint8(renders[:, :8])])
    out = Path(args.out).with_suffix("") if args.out else Path(args.wdiff) / "portraits"
    picture = grid.write_png(out.parent / f"{out.name}_portraits.png", grid.image_grid(rows))
    result.update(dataset=str(args.portraits), indices=idx.tolist(), picture=str(picture))
    for m in pt.METHODS:
        print(f"portraits, {m}: LPIPS {result[m]['lpips']:.4f}, PSNR {result[m]['psnr']:.2f} dB")
    return result


def conditions(kind: str, items: list[str], clip) -> np.ndarray:
    """Image paths or sentences -> CLIP embeddings [N, D]."""
    from styleavatar_jax.invert.images import load_image

    if kind == "text":
        empty = [i for i, s in enumerate(items) if not s.strip()]
        if empty:
            raise ValueError(f"from-text: prompt {empty[0] + 1} is empty; give a sentence")
        return np.asarray(clip.embed_texts(items))
    size = clip.preprocess.size if clip.preprocess is not None else 224
    images = np.stack([(load_image(p, size) + 1) / 2 for p in items])  # [N, S, S, 3]
    return np.asarray(clip.embed_images(images))


def cmd_generate(args, overrides) -> int:
    from styleavatar_jax import cameras, files, sampling
    from styleavatar_jax.export import frames, grid, video
    from styleavatar_jax.wdiff.evaluate import num_ws
    from styleavatar_jax.wdiff.sample import sample_w, ws_from_w

    check_output(args.out, "--out", folder=True)
    wd, cfg, G, g_vars, mesh = _setup(args)
    clip = _clip(args, wd, required=True)
    s = wd.sample
    steps = args.steps or s.steps
    guidance = s.guidance if args.guidance is None else args.guidance
    e = conditions(args.kind, args.conditions, clip)
    w = sample_w(
        wd,
        e,
        num=args.num,
        steps=steps,
        eta=s.eta if args.eta is None else args.eta,
        guidance=None if guidance == 1.0 else guidance,
        seed=args.seed,
        batch=args.batch,
        mesh=mesh,
    )  # [N, num, w_dim]
    w_avg = frames.w_avg_of(g_vars) if args.truncation != 1 else None
    ws = ws_from_w(w, num_ws(G, g_vars), w_avg, args.truncation)
    settings = sampling.SampleSettings(neural_res=int(cfg.model.neural_res))
    render = sampling.make_ws_renderer(G, settings, sampling.make_mesh(1))
    camera = cfg.camera.to_dict()
    yaw, pitch = cameras.parse_views(args.views)
    c_views = sampling.view_labels(yaw, pitch, camera)
    turn = np.linspace(-np.pi, np.pi, args.frames, endpoint=False, dtype=np.float32)
    c_turn = sampling.view_labels(turn, np.zeros_like(turn), camera) if args.frames else None
    out = Path(args.out)
    seeds = np.arange(args.num, dtype=np.int32)
    for i, cond in enumerate(args.conditions):
        images, _ = render(g_vars, ws[i], c_views, seeds)  # [num, V, R, R, 3]
        grid.write_png(
            out / f"{i:02d}_views.png", grid.image_grid(grid.to_uint8(np.asarray(images)))
        )
        if c_turn is not None:
            turn_images, _ = render(g_vars, ws[i], c_turn, seeds)
            turn_images = grid.to_uint8(np.asarray(turn_images))  # [num, T, R, R, 3]
            row = np.concatenate(list(turn_images), axis=2)  # [T, R, num·R, 3]
            video.write_gif(out / f"{i:02d}_turntable.gif", row)
        print(
            f"{cond!r}: wrote {out}/{i:02d}_views.png"
            + (" and _turntable.gif" if args.frames else "")
        )
    files.write_npz(
        out / "ws.npz",
        w=w,
        embeddings=e,
        conditions=np.asarray(args.conditions),
        guidance=np.float32(guidance),
        truncation=np.float32(args.truncation),
    )
    info = {
        "kind": args.kind,
        "conditions": args.conditions,
        "guidance": guidance,
        "steps": steps,
        "num": args.num,
        "seed": args.seed,
        "truncation": args.truncation,
        "gan": args.gan,
        "wdiff": args.wdiff,
    }
    text = json.dumps(info, indent=2).encode()
    files.write_atomic(out / "conditions.json", lambda f: f.write(text))
    print(f"wrote {out / 'ws.npz'} (w [{len(w)}, {args.num}, {w.shape[-1]}])")
    return 0


def cmd_eval(args, overrides) -> int:
    from styleavatar_jax.files import write_atomic
    from styleavatar_jax.wdiff import evaluate, pairs
    from styleavatar_jax.wdiff.config import wdiff_configs

    if args.out:
        check_output(args.out, "--out", suffixes=(".json",))
    portraits = None
    if args.portraits:
        from styleavatar_jax.data.formats import open_dataset

        if args.no_clip:
            raise ValueError("--portraits embeds the portraits with CLIP: drop --no-clip")
        portraits = open_dataset(args.portraits)  # a bad dataset fails before the work
    wd, cfg, G, g_vars, mesh = _setup(args)
    if portraits is not None:
        portraits = _read_portraits(args, portraits, cfg)
    tc = wdiff_configs(wd.config)
    data = args.data or tc.data_path
    p = pairs.load_pairs(data)
    train_rows, held = pairs.split(len(p), tc.train.heldout, tc.seed)
    try:
        guidance = [float(x) for x in args.guidance.split(",")]
    except ValueError as e:
        raise ValueError(f"--guidance {args.guidance!r}: expected numbers like 1,3") from e
    clip = None if args.no_clip else _clip(args, wd, required=portraits is not None)
    embed = None if clip is None else (lambda x: np.asarray(clip.embed_images(x)))
    s = wd.sample
    result = evaluate.evaluate(
        wd,
        p,
        held,
        guidance=guidance,
        steps=args.steps or s.steps,
        eta=s.eta if args.eta is None else args.eta,
        seed=args.seed,
        mesh=mesh,
        G=G,
        g_vars=g_vars,
        camera=cfg.camera.to_dict(),
        neural_res=int(p.meta.get("neural_res", cfg.model.neural_res)),
        embed=embed,
        batch=args.batch,
        train_rows=train_rows,
    )
    result.update(pairs=str(data), gan=args.gan, wdiff=args.wdiff)
    if portraits is not None:
        result["portraits"] = _portraits(args, portraits, wd, cfg, G, g_vars, p, clip, mesh)
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(args.out) if args.out else Path(args.wdiff) / "eval.json"
    write_atomic(out, lambda f: f.write(text.encode()))
    print(f"wrote {out}")
    return 0
