"""`eval` subcommand: a run's metrics.

    styleavatar-jax eval --ckpt RUN --metrics fid50k,kid50k,swd,consistency
        --inception pt_inception-2015-12-05-6726825d.pth [--data DIR] [--num N] [--batch B]
        [--truncation PSI] [--cameras dataset|random] [--step K] [--devices N]

    styleavatar-jax train-view-classifier --data TRAIN --heldout HELDOUT --out vc.npz
    styleavatar-jax eval --ckpt RUN --metrics swd,pose_acc,consistency --view-classifier vc.npz
        --data HELDOUT --floor-data TRAIN

`eval` writes RUN/metrics-<step>.json (atomically) and prints it. FID/KID need
pytorch-fid's Inception weights (a user-given file; nothing is downloaded); swd,
consistency and pose_acc (with a view classifier trained here on real images) need none.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from styleavatar_jax.cli.args import check_output, nonnegative_int, positive_int
from styleavatar_jax.files import as_path


def add_parsers(sub) -> None:
    p = sub.add_parser("eval", help="FID/KID (all views and per view group), SWD, multi-view "
                       "consistency of a run's G_ema; writes RUN/metrics-<step>.json")  # fmt: skip
    p.add_argument("--ckpt", required=True, help="run directory (train or convert-eg3d output)")
    p.add_argument("--data", help="real images: EG3D folder/zip or tfds directory "
                   "(default: the run config's data.path)")  # fmt: skip
    p.add_argument("--metrics", default="fid50k", help="comma list of fid50k, fidNk, fid, kid50k, "
                   "kidNk, kid, swd, swdNk, consistency, pose_acc, pose_accNk, clip_view, "
                   "clip_score (default fid50k)")  # fmt: skip
    p.add_argument("--inception", help="pytorch-fid Inception weights (.pth) or convert-inception "
                   ".npz; needed for fid/kid")  # fmt: skip
    p.add_argument("--num", type=positive_int, help="generated images for every metric "
                   "(overrides the N in fidNk; consistency uses min(N, 64) avatars)")  # fmt: skip
    p.add_argument("--batch", type=positive_int, default=32, help="images per compiled call, "
                   "a multiple of the devices (default 32)")  # fmt: skip
    p.add_argument("--truncation", type=float, default=1.0, help="psi (default 1: none)")
    p.add_argument(
        "--cameras",
        choices=("dataset", "random"),
        default="dataset",
        help="fake cameras: drawn from the dataset's labels (EG3D) or random 360°",
    )
    p.add_argument("--clip", help="CLIP folder or hub id: clip_view (pose accuracy), clip_score")
    p.add_argument("--clip-prompt", help="text for clip_score, e.g. 'a 3D cartoon avatar'")
    p.add_argument("--view-classifier", help="pose_acc: a file from train-view-classifier, "
                   "trained at the run's resolution")  # fmt: skip
    p.add_argument("--floor-data", help="swd: a second real set (e.g. the training images when "
                   "--data is held out); its SWD to --data is the floor printed beside "
                   "(default: two halves of --data)")  # fmt: skip
    p.add_argument("--step", type=nonnegative_int, help="checkpoint step (default: the latest)")
    p.add_argument(
        "--devices", type=positive_int, help="use the first N local devices (default: all)"
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="camera draws and subsets")
    p.add_argument("--out", help="result JSON (default RUN/metrics-<step>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_eval)
    add_view_classifier_parser(sub)


def cmd_eval(args, overrides) -> int:
    from styleavatar_jax import checkpoint, sampling, typed_config
    from styleavatar_jax.convert.inception import load_inception, weights_help
    from styleavatar_jax.data.formats import open_dataset
    from styleavatar_jax.eval import evaluate as ev
    from styleavatar_jax.models.triplane import TriPlaneGenerator

    if args.out:
        check_output(args.out, "--out", suffixes=(".json",))

    specs = ev.parse_metrics(args.metrics)
    settings = ev.EvalSettings(metrics=specs, num=args.num, batch=args.batch,
                               truncation_psi=args.truncation, camera_source=args.cameras,
                               seed=args.seed, view_classifier=args.view_classifier)  # fmt: skip
    if any(s.kind == "pose_acc" for s in specs) and not args.view_classifier:
        raise ValueError(f"--metrics={args.metrics} needs --view-classifier FILE (made by "
                         "styleavatar-jax train-view-classifier on real images)")  # fmt: skip
    needs_inception = any(s.kind in ("fid", "kid") for s in specs)
    if needs_inception and not args.inception:
        raise ValueError(f"--metrics={args.metrics} needs --inception FILE. {weights_help()}")
    needs_clip = any(s.kind in ev.CLIP_KINDS for s in specs)
    if needs_clip and not args.clip:
        raise ValueError(f"--metrics={args.metrics} needs --clip PATH_OR_HUB_ID (a transformers "
                         "CLIP folder, e.g. openai/clip-vit-base-patch32)")  # fmt: skip
    if any(s.kind == "clip_score" for s in specs) and not (args.clip_prompt or "").strip():
        raise ValueError("--metrics clip_score needs --clip-prompt TEXT")
    run = checkpoint.check_run_dir(args.ckpt)
    cfg = typed_config.apply_overrides(checkpoint.load_config(run), overrides)
    data = args.data or (cfg.data.path if "data" in cfg else None)
    if not data:
        raise ValueError(f"--data: not given and {run}/config.json has no data.path")
    res = int(cfg.model.generator.img_resolution)
    if args.view_classifier:  # a wrong file fails before the work
        from styleavatar_jax.eval.view_classifier import load_classifier

        load_classifier(args.view_classifier, res, flag="--view-classifier",
                        images=f"--ckpt={args.ckpt} generates")  # fmt: skip
    with contextlib.ExitStack() as opened:  # the datasets first: they are quick to check
        source = opened.enter_context(open_dataset(data))
        floor = opened.enter_context(open_dataset(args.floor_data)) if args.floor_data else None
        for flag, src in (("--data", source), ("--floor-data", floor)):
            if src is not None and src.resolution != res:
                raise ValueError(
                    f"{flag}={src.path}: images are {src.resolution}², but --ckpt={args.ckpt} "
                    f"generates {res}²; give a dataset at {res}² (make-dataset --res {res})"
                )
        inception = load_inception(args.inception) if needs_inception else None
        clip = None
        if needs_clip:
            from styleavatar_jax.convert.clip import load_clip

            clip = load_clip(args.clip)
        step = args.step if args.step is not None else checkpoint.latest_step(run)
        G = TriPlaneGenerator(typed_config.generator_config(cfg.model.generator))
        variables = checkpoint.load_networks(run, ["G_ema"], step=step)["G_ema"]
        mesh = sampling.make_mesh(args.devices)
        result = ev.evaluate(
            G, variables, cfg.camera.to_dict(), source, settings, mesh=mesh,
            neural_res=int(cfg.model.neural_res), truncation_cutoff=cfg.sample.truncation_cutoff,
            inception=inception, clip=clip, clip_prompt=args.clip_prompt,
            floor_source=floor, progress=not args.no_progress,
        )  # fmt: skip
    result = {"run": str(run.absolute()), "step": step} | result
    if inception is not None:
        result["protocol"]["inception"] = ev.inception_record(args.inception)
    if clip is not None:
        result["protocol"]["clip"] = args.clip
    out = ev.write_result(as_path(args.out) if args.out else ev.metrics_path(run, step), result)
    print(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")
    return 0


def add_view_classifier_parser(sub) -> None:
    p = sub.add_parser("train-view-classifier", help="train the yaw-bin classifier that the "
                       "pose_acc metric applies to generated images")  # fmt: skip
    p.add_argument("--data", required=True, help="real images with cameras (EG3D folder/zip, tfds)")
    p.add_argument("--heldout", help="a second real set for the reported accuracy (default: the "
                   "last 10%% of --data, also used to pick the best step)")  # fmt: skip
    p.add_argument("--out", required=True, help="classifier file (.npz)")
    p.add_argument(
        "--bins", type=positive_int, default=8, help="yaw bins centred on the front (default 8)"
    )
    p.add_argument("--steps", type=positive_int, default=2000, help="Adam steps (default 2000)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="initial weights and batches")
    p.set_defaults(fn=cmd_train_view_classifier)


def cmd_train_view_classifier(args, overrides) -> int:
    from styleavatar_jax.eval import view_classifier as vc

    if args.bins < 2 or args.steps < 1:
        raise ValueError(f"--bins={args.bins} --steps={args.steps}: expected bins ≥ 2, steps ≥ 1")
    check_output(args.out, "--out", suffixes=(".npz",))
    parent = Path(args.out).absolute().parent
    if not parent.is_dir():
        raise ValueError(f"--out={args.out}: the folder {parent} does not exist")
    meta = vc.main_train(args.data, args.heldout, args.out, args.bins, args.steps, args.seed)
    print(json.dumps(meta, indent=2, default=str))
    return 0
