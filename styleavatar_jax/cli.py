"""`styleavatar-jax`: one entry point with subcommands.

    styleavatar-jax convert-eg3d SNAPSHOT.pkl OUT_DIR [--check IO.npz]
    styleavatar-jax sample --ckpt DIR --seeds 0-63 --batch 32 --views yaw=-180:180:8 --out DIR
    styleavatar-jax make-dataset mannequin --num-ids 500 --views-per-id 16 --res 128 --out DIR
    styleavatar-jax dataset-info DIR [--plot cameras.png]
    styleavatar-jax preview DIR --out grid.png [--guidance]
    styleavatar-jax convert-dataset SRC DEST --to tfds|eg3d
    styleavatar-jax mirror-dataset SRC [DEST]
    styleavatar-jax train --config configs/NAME.py --workdir DIR [--resume] [--init-from PKL]
    styleavatar-jax demo [--out out/demo] [--minutes 10]
    styleavatar-jax video --ckpt DIR --seeds 0-3 --frames 120 --yaw=-180:180 --pitch 10 --out a.mp4
    styleavatar-jax mesh --ckpt DIR --seed 0 --res 256 --out head.ply [--preview head.png]
    styleavatar-jax walk --ckpt DIR --seeds 0,1,2 --space z|w --frames-per-seed 30 --out walk.mp4
    styleavatar-jax invert PORTRAIT.png --ckpt DIR [--camera yaw=30,pitch=5|estimate] --out DIR
    styleavatar-jax eval --ckpt RUN --metrics fid50k,kid50k,swd,consistency --inception FILE
    styleavatar-jax convert-inception pt_inception-2015-12-05-6726825d.pth inception.npz
    styleavatar-jax wdiff-data --gan RUN --clip PATH_OR_ID --num N --out pairs.npz
    styleavatar-jax wdiff-train --config configs/wdiff.py --data pairs.npz --workdir WD
    styleavatar-jax wdiff-eval --gan RUN --wdiff WD
    styleavatar-jax from-image PORTRAIT.png --gan RUN --wdiff WD --out DIR
    styleavatar-jax from-text "a pixar girl with red hair" --gan RUN --wdiff WD --out DIR

ConfigDicts stop here: commands turn them into the typed dataclasses the library takes.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from styleavatar_jax import (
    cli_dataset,
    cli_eval,
    cli_invert,
    cli_outputs,
    cli_train,
    cli_wdiff,
)


def load_config_file(spec: str, overrides: list[str] | None = None):
    """'configs/NAME.py[:arg]' -> ConfigDict (get_config(arg)), with --config.* overrides."""
    from styleavatar_jax import typed_config

    path, _, arg = spec.partition(":")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config={spec}: no such file {file}")
    module_spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config={spec}: {file} defines no get_config()")
    cfg = module.get_config(arg) if arg else module.get_config()
    return typed_config.apply_overrides(cfg, overrides or [])


def load_generator(ckpt: str | None, config: str | None, overrides, command: str):
    """--ckpt RUN_DIR (its G_ema) or --config FILE (random init) -> (cfg, G, variables)."""
    from styleavatar_jax import checkpoint, typed_config
    from styleavatar_jax.models.triplane import TriPlaneGenerator

    if bool(ckpt) == bool(config):
        raise ValueError(f"{command}: give exactly one of --ckpt DIR or --config FILE "
                         "(random init)")  # fmt: skip
    if ckpt:
        cfg = typed_config.apply_overrides(checkpoint.load_config(ckpt), overrides or [])
    else:
        cfg = load_config_file(config, overrides)
    G = TriPlaneGenerator(typed_config.generator_config(cfg.model.generator))
    if ckpt:
        variables = checkpoint.load_networks(ckpt, ["G_ema"])["G_ema"]
    else:
        variables = _random_init(G, int(cfg.seed))
    return cfg, G, variables


@functools.lru_cache(maxsize=2)
def _random_init(G, seed: int):
    """init_variables, once per (G, seed) in a process: tracing a G's init costs more than a
    smoke-test render (~20 s for configs/tiny.py on 2 cores)."""
    import jax

    from styleavatar_jax.models.triplane import init_variables

    return init_variables(G, jax.random.key(seed))


def cmd_convert(args, overrides) -> int:
    from styleavatar_jax import checkpoint
    from styleavatar_jax.convert import check, snapshot

    src = Path(args.snapshot)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such snapshot file")
    if src.suffix == ".pkl":
        if args.config:
            raise ValueError(
                "--config is for state dicts (.pt/.pth/.npz); a .pkl carries its architecture"
            )
        cfg, networks, (G, D) = snapshot.convert_pickle(src)
    elif src.suffix in (".pt", ".pth", ".npz"):
        if not args.config:
            raise ValueError(
                f"{src}: a state dict needs --config=configs/NAME.py[:arg] for its architecture"
            )
        cfg, networks, (G, D) = snapshot.convert_state_dict(
            src, load_config_file(args.config, overrides)
        )
    else:
        raise ValueError(f"{src}: expected an EG3D .pkl snapshot or a .pt/.pth/.npz state dict")
    print(f"read {src}: {', '.join(f'{k} ({_count(v)} params)' for k, v in networks.items())}")

    if args.check:
        io = _load_npz(args.check)
        neural_res = (
            int(
                json.loads(str(io["init_kwargs"])).get(
                    "G_neural_rendering_resolution", cfg.model.neural_res
                )
            )
            if "init_kwargs" in io
            else int(cfg.model.neural_res)
        )
        ours = check.run_reference_inputs(
            G, networks["G_ema"], D, networks.get("D"), io, neural_res
        )
        rows = check.compare(ours, io)
        print(f"check against {args.check} (neural res {neural_res}):")
        for name, err, tol in rows:
            verdict = "ok" if err <= tol else "FAIL"
            print(f"  {name:18s} max abs err {err:.3e}  tol {tol:.3e}  {verdict}")
        if not rows or any(err > tol for _, err, tol in rows):
            print("check FAILED: nothing written", file=sys.stderr)
            return 1
    out = checkpoint.write_new_run_dir(
        args.out_dir, cfg, networks, step=0, overwrite=args.overwrite
    )
    print(f"wrote {out}")
    return 0


def cmd_sample(args, overrides) -> int:
    from styleavatar_jax import cameras, files, sampling
    from styleavatar_jax.export import grid

    cfg, G, variables = load_generator(args.ckpt, args.config, overrides, "sample")
    seeds = sampling.parse_seeds(args.seeds)
    yaw, pitch = cameras.parse_views(args.views)
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
    out = Path(args.out)
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


def _count(variables) -> int:
    import jax

    return sum(int(np.size(x)) for x in jax.tree.leaves(variables.get("params", {})))


def _load_npz(path: str):
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--check {p}: no such file")
    try:
        return dict(np.load(p, allow_pickle=False))
    except Exception as e:
        raise ValueError(f"--check {p}: not a readable .npz ({e})") from e


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styleavatar-jax",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "convert-eg3d",
        help="EG3D snapshot -> orbax checkpoint + config (no code from the pickle runs)",
    )
    p.add_argument(
        "snapshot", help="network-snapshot-*.pkl, or a .pt/.pth/.npz state dict (with --config)"
    )
    p.add_argument("out_dir", help="run directory to create")
    p.add_argument(
        "--check", metavar="IO.npz", help="compare G_ema and D with official EG3D outputs"
    )
    p.add_argument("--config", help="architecture for a state dict: configs/NAME.py[:arg]")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("sample", help="JIT batch sampling: multi-view PNG grids and the ws")
    p.add_argument("--ckpt", help="run directory (convert-eg3d or train output)")
    p.add_argument("--config", help="configs/NAME.py[:arg]: randomly initialised G (smoke tests)")
    p.add_argument("--seeds", default="0-7", help="e.g. 0-63 or 1,5,9")
    p.add_argument(
        "--batch", type=int, default=8, help="seeds per compiled batch (multiple of devices)"
    )
    p.add_argument(
        "--views", default="yaw=-180:180:8", help="yaw=A:B:N or yaw=Y1,Y2;pitch=... (degrees)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--truncation", type=float, help="psi (default: config sample.truncation_psi)")
    p.add_argument("--neural-res", type=int, help="neural rendering resolution (default: config)")
    p.add_argument("--noise-mode", choices=("const", "random", "none"), help="backbone noise")
    p.add_argument("--devices", type=int, help="use the first N local devices (default: all)")
    p.set_defaults(fn=cmd_sample)

    cli_dataset.add_parsers(sub)
    cli_train.add_parsers(sub)
    cli_outputs.add_parsers(sub)
    cli_eval.add_parsers(sub)
    cli_invert.add_parsers(sub)
    cli_wdiff.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    parser = build_parser()
    args = parser.parse_args(rest)
    try:
        return args.fn(args, overrides)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        print(f"styleavatar-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
