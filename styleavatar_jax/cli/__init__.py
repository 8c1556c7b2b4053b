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
    styleavatar-jax mesh --ckpt DIR --seed 0 --res 256 --out head.glb|head.obj|head.ply
    styleavatar-jax splats --ckpt DIR --seed 0 --out head.ply [--check]
    styleavatar-jax walk --ckpt DIR --seeds 0,1,2 --space z|w --frames-per-seed 30 --out walk.mp4
    styleavatar-jax view OUT_DIR --ckpt DIR --seed 0 [--texture 512] [--res 128] [--screenshot P]
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

from styleavatar_jax import __version__
from styleavatar_jax.cli import (
    convert,
    dataset,
    eval,
    export3d,
    invert,
    outputs,
    sample,
    train,
    view,
    wdiff,
)

# What the top-level --help shows: the docstring's command list, not its note for developers.
USAGE = __doc__.split("\nConfigDicts stop here")[0]
# The errors a command raises for bad input (a flag, a config field, a file): one line, exit 2.
BAD_INPUT = (ValueError, FileNotFoundError, FileExistsError, KeyError)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it is None/False or its help already says it."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """A usage error is two lines: the usage (unwrapped: argparse wraps a long one over
        several), then the error."""
        usage = " ".join(self.format_usage().split())
        self.exit(2, f"{usage}\n{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="styleavatar-jax",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for group in (convert, sample, dataset, train, outputs, eval, invert, wdiff, view, export3d):
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command -> its exit code: 0 done, 2 bad input (one line on stderr: the flag,
    field or file, what was expected, the fix), 130 / 143 interrupted by SIGINT / SIGTERM
    (see `train`), others per command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    parser = build_parser()
    try:
        args = parser.parse_args(rest)
    except SystemExit as e:  # argparse: --help, --version (0) or a bad flag (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.fn(args, overrides)
    except BAD_INPUT as e:
        if args.debug:
            raise
        print(f"styleavatar-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"styleavatar-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
