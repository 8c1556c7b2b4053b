"""`convert-eg3d` and `convert-inception` subcommands: official weights -> our formats;
`export-generator`: a training run -> a run directory holding G_ema only (for sharing).

styleavatar-jax convert-eg3d SNAPSHOT.pkl OUT_DIR [--check IO.npz] [--config FILE]
styleavatar-jax convert-inception pt_inception-2015-12-05-6726825d.pth inception.npz
styleavatar-jax export-generator RUN OUT_DIR [--step N]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from styleavatar_jax.cli.args import check_output, nonnegative_int
from styleavatar_jax.files import load_npz
from styleavatar_jax.typed_config import load_config_file


def add_parsers(sub) -> None:
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

    p = sub.add_parser(
        "export-generator", help="training run -> run directory with G_ema only (for sampling)"
    )
    p.add_argument("run", help="training run directory")
    p.add_argument("out_dir", help="run directory to create")
    p.add_argument("--step", type=nonnegative_int, help="checkpoint step (default: the latest)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.set_defaults(fn=cmd_export_generator)

    p = sub.add_parser("convert-inception", help="pytorch-fid Inception .pth -> .npz (no torch)")
    p.add_argument("src", help="pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("out", help="output .npz")
    p.set_defaults(fn=cmd_convert_inception)


def cmd_export_generator(args, overrides) -> int:
    """G_ema and the config of one step (3 MB for configs/mannequin64.py, where the full
    training state with G, D and both Adam states is 17 MB): what sampling needs."""
    from styleavatar_jax import checkpoint

    run = checkpoint.check_run_dir(args.run, "RUN")
    check_output(args.out_dir, "OUT_DIR", folder=True)
    cfg = checkpoint.load_config(run)
    step = checkpoint.latest_step(run) if args.step is None else args.step
    if step not in checkpoint.list_steps(run):
        raise ValueError(f"--step={step}: {run} holds steps {checkpoint.list_steps(run)}")
    g_ema = checkpoint.load_networks(run, ["G_ema"], step=step)["G_ema"]
    out = checkpoint.write_new_run_dir(args.out_dir, cfg, {"G_ema": g_ema}, step=step,
                                       overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {out} (G_ema of step {step})")
    return 0


def cmd_convert(args, overrides) -> int:
    from styleavatar_jax import checkpoint
    from styleavatar_jax.convert import check, snapshot

    src = Path(args.snapshot)
    if src.is_dir():
        raise ValueError(f"SNAPSHOT={src}: is a folder; expected an EG3D .pkl snapshot file "
                         "(a run directory needs no conversion: pass it as --ckpt)")  # fmt: skip
    if not src.is_file():
        raise FileNotFoundError(f"SNAPSHOT={src}: no such file; expected an EG3D .pkl snapshot")
    check_output(args.out_dir, "OUT_DIR", folder=True)
    io = load_npz(args.check, "--check") if args.check else None  # before the conversion
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

    if io is not None:
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


def _count(variables) -> int:
    import jax

    return sum(int(np.size(x)) for x in jax.tree.leaves(variables.get("params", {})))


def cmd_convert_inception(args, overrides) -> int:
    from styleavatar_jax.convert.inception import load_inception, save_npz

    check_output(args.out, "OUT", suffixes=(".npz",))
    src = Path(args.src)
    variables = load_inception(src, flag="convert-inception SRC")
    out = save_npz(variables, args.out)
    print(f"read {src}; wrote {out}")
    return 0
