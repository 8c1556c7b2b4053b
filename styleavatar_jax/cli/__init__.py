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
    styleavatar-jax train-view-classifier --data DIR --heldout DIR --out vc.npz
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
import sys

from styleavatar_jax.cli import convert, dataset, eval, invert, outputs, sample, train, wdiff


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styleavatar-jax",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (convert, sample, dataset, train, outputs, eval, invert, wdiff):
        group.add_parsers(sub)
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
