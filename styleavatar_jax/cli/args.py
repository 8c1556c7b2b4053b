"""Flag groups that several subcommands share, and parsers of the flags' little languages."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from etils import epath

from styleavatar_jax.files import as_path, is_local, store_root


def generator_flags(p: argparse.ArgumentParser) -> None:
    """Which generator renders and how: --ckpt or --config, --truncation, --neural-res,
    --devices (sample, video, mesh, walk)."""
    p.add_argument("--ckpt", help="run directory (convert-eg3d or train output)")
    p.add_argument("--config", help="configs/NAME.py[:arg]: randomly initialised G (smoke tests)")
    p.add_argument("--truncation", type=float, help="psi (default: config sample.truncation_psi)")
    p.add_argument("--neural-res", type=positive_int,
                   help="neural rendering resolution (default: config)")  # fmt: skip
    p.add_argument("--devices", type=positive_int,
                   help="use the first N local devices (default: all)")  # fmt: skip


def distributed_flags(p: argparse.ArgumentParser) -> None:
    """--distributed and its settings (train); see styleavatar_jax.distributed."""
    p.add_argument("--distributed", action="store_true",
                   help="multi-process: join the other processes first (the settings below, "
                        "else JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, "
                        "else the TPU or SLURM environment)")  # fmt: skip
    p.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (implies "
                   "--distributed)")  # fmt: skip
    p.add_argument("--num-processes", type=positive_int, help="processes in the run (implies "
                   "--distributed)")  # fmt: skip
    p.add_argument("--process-id", type=nonnegative_int, help="this process, 0 .. N-1 "
                   "(implies --distributed)")  # fmt: skip
    p.add_argument("--distributed-timeout", type=positive_float, default=120.0, metavar="S",
                   help="seconds to wait for all processes to join")  # fmt: skip
    p.add_argument("--heartbeat-timeout", type=positive_float, default=30.0, metavar="S",
                   help="seconds without a sign of life after which a process counts as "
                        "dead and the others exit")  # fmt: skip


def join_processes(args: argparse.Namespace) -> None:
    """distributed_flags -> styleavatar_jax.distributed.initialize, when asked for."""
    flags = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed or any(f is not None for f in flags):
        from styleavatar_jax import distributed

        distributed.initialize(*flags, timeout_s=args.distributed_timeout,
                               heartbeat_s=args.heartbeat_timeout)  # fmt: skip


def parse_kinds(spec: str) -> list[str]:
    """'rgb,depth' -> ['rgb', 'depth'], a subset of export.frames.KINDS (--kinds)."""
    from styleavatar_jax.export.frames import KINDS

    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise ValueError(f"--kinds={spec!r}: expected a comma-separated subset of {KINDS}")
    return kinds


def truncation_psi(args: argparse.Namespace, cfg) -> float:
    """--truncation, or the config's sample.truncation_psi."""
    return float(cfg.sample.truncation_psi if args.truncation is None else args.truncation)


# ---------------------------------------------------------------------------------------
# Checks that run before any heavy work (argparse `type=`s and output paths)


def _number(kind, minimum, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"{text}: expected {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, "an integer ≥ 1")
nonnegative_int = _number(int, 0, "an integer ≥ 0")
positive_float = _number(float, 1e-300, "a number > 0")
at_least_one = _number(float, 1, "a number ≥ 1")


def check_output(path: str | os.PathLike, flag: str, *, folder: bool = False,
                 suffixes: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """An output path is usable before the work that fills it: the suffix is one of
    `suffixes`, no part of it is a file, and the folder it goes in is writable. Nothing is
    created (a probe file is made and removed in the nearest existing folder). A URL
    (gs://bucket/...) is checked by listing its bucket, which needs the store to answer."""
    if not is_local(path):
        return _check_store_output(path, flag, folder, suffixes)
    out = Path(path)
    if suffixes and out.suffix.lower() not in suffixes:
        raise ValueError(f"{flag}={path}: expected a file ending in {' or '.join(suffixes)}; "
                         f"for example {flag}={out.with_suffix(suffixes[0])}")  # fmt: skip
    if out.exists() and out.is_dir() != folder:
        want = "a folder" if folder else "a file"
        raise ValueError(f"{flag}={path}: exists and is not {want}; choose another path")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag}={path}: {parent} is a file, not a folder; choose a path "
                         "outside it")  # fmt: skip
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=parent)
    except OSError as e:
        raise ValueError(f"{flag}={path}: cannot write in {parent} ({e.strerror}); choose a "
                         "writable folder") from None  # fmt: skip
    os.close(fd)
    os.unlink(probe)
    return out


def _check_store_output(url: str | os.PathLike, flag: str, folder: bool,
                        suffixes: tuple[str, ...]) -> epath.Path:  # fmt: skip
    """check_output for an object-store URL: suffix, kind, and a bucket that answers."""
    out = as_path(url)
    if suffixes and out.suffix.lower() not in suffixes:
        raise ValueError(f"{flag}={url}: expected a file ending in {' or '.join(suffixes)}")
    try:
        if out.exists() and out.is_dir() != folder:
            want = "a folder" if folder else "a file"
            raise ValueError(f"{flag}={url}: exists and is not {want}; choose another path")
        next(iter(as_path(store_root(out)).iterdir()), None)
    except ValueError:
        raise
    except Exception as e:  # each store's client raises its own types
        raise ValueError(f"{flag}={url}: the store does not answer ({type(e).__name__}: {e}); "
                         "check the bucket name and credentials") from None  # fmt: skip
    return out


def threshold_flag(p) -> None:
    """--threshold: the σ level of a surface (mesh, view); None = the model's own."""
    p.add_argument("--threshold", type=float,
                   help="σ level of the surface (default: the model's "
                        "config.sample.surface_threshold, else EG3D's 10)")  # fmt: skip
