"""Flag groups that several subcommands share, and parsers of the flags' little languages."""

from __future__ import annotations

import argparse


def generator_flags(p: argparse.ArgumentParser) -> None:
    """Which generator renders and how: --ckpt or --config, --truncation, --neural-res,
    --devices (sample, video, mesh, walk)."""
    p.add_argument("--ckpt", help="run directory (convert-eg3d or train output)")
    p.add_argument("--config", help="configs/NAME.py[:arg]: randomly initialised G (smoke tests)")
    p.add_argument("--truncation", type=float, help="psi (default: config sample.truncation_psi)")
    p.add_argument("--neural-res", type=int, help="neural rendering resolution (default: config)")
    p.add_argument("--devices", type=int, help="use the first N local devices (default: all)")


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
