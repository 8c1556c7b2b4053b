"""Run directories: `config.json` plus an orbax checkpoint of named networks.

    RUN_DIR/config.json                 the ml_collections config (JSON)
    RUN_DIR/checkpoints/<step>/<name>/  one orbax item per network: G, G_ema, D, ...

Each network's variables are {'params': ..., 'buffers': ...}. A new directory is written
under a temporary name and renamed into place, so a failed conversion leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"


def write_new_run_dir(
    out_dir: str | os.PathLike,
    cfg: ml_collections.ConfigDict,
    networks: Mapping[str, Any],
    *,
    step: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write config + networks to a fresh `out_dir` atomically (temp dir, then rename)."""
    out = Path(out_dir).absolute()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: output directory exists and is not empty (use --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / CONFIG_FILE).write_text(cfg.to_json_best_effort(indent=2, sort_keys=True))
        save_networks(tmp, networks, step=step)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_networks(run_dir: str | os.PathLike, networks: Mapping[str, Any], *, step: int) -> None:
    """Save {name: variables} as one orbax step under run_dir/checkpoints."""
    with ocp.CheckpointManager(Path(run_dir).absolute() / CHECKPOINTS) as mngr:
        mngr.save(
            step,
            args=ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in networks.items()}),
        )
        mngr.wait_until_finished()


def load_config(run_dir: str | os.PathLike) -> ml_collections.ConfigDict:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found; expected a run directory made by convert-eg3d or train"
        )
    try:
        return ml_collections.ConfigDict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def load_networks(
    run_dir: str | os.PathLike, names: Sequence[str] = ("G_ema",), *, step: int | None = None
) -> dict[str, Any]:
    """Restore the named networks (numpy/jax arrays) from the latest (or given) step."""
    ckpt = Path(run_dir).absolute() / CHECKPOINTS
    if not ckpt.is_dir():
        raise FileNotFoundError(f"{ckpt}: no checkpoints; expected a run directory")
    with ocp.CheckpointManager(ckpt) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{ckpt}: holds no checkpoint step")
        step_dir = ckpt / str(step)
        have = {p.name for p in step_dir.iterdir() if p.is_dir()} if step_dir.is_dir() else set()
        missing = [n for n in names if n not in have]
        if missing:
            raise KeyError(f"{ckpt}/{step}: no network(s) {missing}; it holds {sorted(have)}")
        restored = mngr.restore(
            step, args=ocp.args.Composite(**{n: ocp.args.StandardRestore() for n in names})
        )
    return {n: restored[n] for n in names}
