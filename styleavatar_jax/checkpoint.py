"""Run directories: `config.json` plus an orbax checkpoint of named networks.

    RUN_DIR/config.json                 the ml_collections config (JSON)
    RUN_DIR/checkpoints/<step>/<name>/  one orbax item per network: G, G_ema, D, ...

Each network's variables are {'params': ..., 'buffers': ...}. A new directory is written
under a temporary name and renamed into place, so a failed conversion leaves nothing (in an
object store, which has no directories to rename, config.json is written last: a directory
without it is not a run). RUN_DIR may be local or a URL (gs://bucket/run): orbax writes
through tensorstore, the rest through etils.epath.
The training loops (GAN and W-diffusion) list a run's steps, check a resume against the
saved config and open the orbax manager here; `load_generator` reads a run's G_ema.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

from styleavatar_jax.files import as_path, is_local, shipped_hint, write_atomic

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
    """Write config + networks to a fresh `out_dir` atomically (temp dir, then rename; in a
    store: networks first, config.json last)."""
    out = as_path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: output directory exists and is not empty (use --overwrite)")
    if not is_local(out):
        if out.exists():
            out.rmtree()
        save_networks(out, networks, step=step)
        write_config(out, cfg)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / CONFIG_FILE).write_text(cfg.to_json_best_effort(indent=2, sort_keys=True))
        save_networks(tmp, networks, step=step)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0o700; a directory gets umask's
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_run_dir(path: str | os.PathLike) -> bool:
    """A run directory: config.json and checkpoints/ (train, convert-eg3d)."""
    return (as_path(path) / CONFIG_FILE).is_file() and (as_path(path) / CHECKPOINTS).is_dir()


def save_networks(run_dir: str | os.PathLike, networks: Mapping[str, Any], *, step: int) -> None:
    """Save {name: variables} as one orbax step under run_dir/checkpoints."""
    with ocp.CheckpointManager(as_path(run_dir) / CHECKPOINTS) as mngr:
        mngr.save(
            step,
            args=ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in networks.items()}),
        )
        mngr.wait_until_finished()


def write_config(run_dir: str | os.PathLike, cfg: ml_collections.ConfigDict) -> None:
    text = cfg.to_json_best_effort(indent=2, sort_keys=True)
    write_atomic(as_path(run_dir) / CONFIG_FILE, lambda f: f.write(text.encode()))


def list_steps(run_dir: str | os.PathLike) -> list[int]:
    """The checkpoint steps of a run directory, ascending ([] when it has none)."""
    ckpt = as_path(run_dir) / CHECKPOINTS
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def latest_step(run_dir: str | os.PathLike) -> int:
    steps = list_steps(run_dir)
    if not steps:
        raise FileNotFoundError(
            f"{as_path(run_dir) / CHECKPOINTS}: holds no checkpoint step; expected a run directory"
        )
    return steps[-1]


def open_manager(run_dir: str | os.PathLike, keep: int) -> ocp.CheckpointManager:
    """The orbax manager of run_dir/checkpoints that a training loop saves with (the `keep`
    latest steps kept)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(as_path(run_dir) / CHECKPOINTS, options=options)


def check_resume(run_dir: str | os.PathLike, cfg: ml_collections.ConfigDict, resume: bool,
                 frozen: Sequence[str], resumable: Sequence[str] = ()) -> list[int]:  # fmt: skip
    """Before a training loop starts in run_dir -> its checkpoint steps ([]: a fresh start).
    A run there needs resume=True and a config equal to the saved one in the `frozen`
    sections (except the `resumable` leaves)."""
    existing = list_steps(run_dir)
    if existing and not resume:
        raise FileExistsError(
            f"{run_dir} holds a run (checkpoints at steps {existing}): pass --resume to "
            "continue it, or choose another --workdir"
        )
    if existing:
        diff = config_differences(load_config(run_dir), cfg, frozen, resumable)
        if diff:
            raise ValueError(
                f"--resume: {run_dir} was trained with another config:\n  " + "\n  ".join(diff)
            )
    return existing


def _flat(cfg: ml_collections.ConfigDict, section: str) -> dict:
    """cfg's `section` ('train', 'data.flip', ...) as {'section.a.b': leaf}."""
    node = cfg
    for part in section.split("."):
        node = node[part]
    return _leaves(node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node, section)


def _leaves(value, prefix: str) -> dict:
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, sub in value.items() for k, v in _leaves(sub, f"{prefix}.{key}").items()}


def _norm(v):
    return [_norm(x) for x in v] if isinstance(v, list | tuple) else v


def config_differences(
    saved: ml_collections.ConfigDict,
    given: ml_collections.ConfigDict,
    sections: Sequence[str],
    resumable: Sequence[str] = (),
) -> list[str]:
    """['config.train.lr_d: 0.002 in the run, 0.003 given', ...] over `sections`, except the
    `resumable` leaves."""
    out = []
    for section in sections:
        try:
            a, b = _flat(saved, section), _flat(given, section)
        except (KeyError, AttributeError):
            out.append(f"config.{section}: missing in one of the two configs")
            continue
        for k in sorted(set(a) | set(b)):
            if k in resumable:
                continue
            if _norm(a.get(k)) != _norm(b.get(k)):
                out.append(f"config.{k}: {a.get(k)!r} in the run, {b.get(k)!r} given")
    return out


def check_run_dir(path: str | os.PathLike, flag: str = "--ckpt") -> Path:
    """A path given as a run directory (--ckpt, --gan) -> Path; a file (an EG3D snapshot,
    say) -> ValueError with the command that converts it."""
    if as_path(path).is_file():
        raise ValueError(
            f"{flag}={path}: is a file, but {flag} takes a run directory (made by train or "
            f"convert-eg3d); for an EG3D snapshot, convert it first: styleavatar-jax "
            f"convert-eg3d {path} OUT_DIR, then {flag}=OUT_DIR"
        )
    return as_path(path)


def load_config(run_dir: str | os.PathLike) -> ml_collections.ConfigDict:
    path = as_path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found; expected a run directory made by convert-eg3d or train."
            + shipped_hint(path)
        )
    try:
        return ml_collections.ConfigDict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def load_networks(
    run_dir: str | os.PathLike, names: Sequence[str] = ("G_ema",), *, step: int | None = None
) -> dict[str, Any]:
    """Restore the named networks (numpy/jax arrays) from the latest (or given) step."""
    ckpt = as_path(run_dir) / CHECKPOINTS
    if not ckpt.is_dir():
        raise FileNotFoundError(
            f"{ckpt}: no checkpoints; expected a run directory." + shipped_hint(ckpt)
        )
    with ocp.CheckpointManager(ckpt) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{ckpt}: holds no checkpoint step." + shipped_hint(ckpt))
        step_dir = ckpt / str(step)
        have = {p.name for p in step_dir.iterdir() if p.is_dir()} if step_dir.is_dir() else set()
        missing = [n for n in names if n not in have]
        if missing:
            raise ValueError(f"{ckpt}/{step}: no network(s) {missing}; it holds {sorted(have)}."
                             + shipped_hint(ckpt))  # fmt: skip
        items = {n: ocp.args.StandardRestore(_local_target(step_dir / n)) for n in names}
        restored = restore_step(mngr, step, items)
    return {n: restored[n] for n in names}


def _local_target(item_dir: Path):
    """A saved item's shapes and dtypes on this process's first device: a checkpoint saved
    on other devices (another mesh, other hosts) restores anywhere."""
    import jax

    try:
        shapes = ocp.StandardCheckpointHandler().metadata(item_dir).tree
    except Exception:  # unreadable metadata: restore_step reports the damaged step
        return None
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here), shapes)


class DamagedCheckpoint(ValueError):
    """A checkpoint step cannot be read; the message names the step, the item and the way to
    the previous step (the library's error is its __cause__: `--debug` shows it)."""


def restore_step(mngr: ocp.CheckpointManager, step: int, items: Mapping[str, Any]) -> Any:
    """mngr.restore(step) of the named orbax `items` ({name: ocp.args...}); a damaged or
    mismatched step raises DamagedCheckpoint (one paragraph) instead of the library's dump."""
    try:
        return mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax/tensorstore raise many types for a damaged step
        _quiet_event_loop_noise()
        where = as_path(mngr.directory)
        raise DamagedCheckpoint(damaged_message(where, step, list(items), e)) from e


def damaged_message(ckpt: Path, step: int, items: Sequence[str], error: BaseException) -> str:
    """One paragraph: which step and item, the damaged file if the error names it, and how to
    go back to the previous step (or to restore it, for a model shipped in pretrained/)."""
    text = str(error)
    found = re.search(rf"{re.escape(str(ckpt))}/{step}/([^/\s\"']+)", text)
    item = found.group(1) if found and found.group(1) in items else None
    files = re.findall(r'local file "([^"]+)"', text)
    what = f"its item {item}" if item else f"one of its items {list(items)}"
    where = ckpt / str(step)
    msg = (f"checkpoint step {step} in {ckpt} is damaged or does not match this config: {what} "
           f"cannot be read ({type(error).__name__}"
           + (f" reading {files[-1]}" if files else "") + "). ")  # fmt: skip
    earlier = [s for s in list_steps(ckpt.parent) if s < step]
    hint = shipped_hint(ckpt)
    if hint:  # a shipped model: restoring it beats going back a step
        msg += hint.strip()
    elif earlier:
        msg += (f"The previous step, {earlier[-1]}, is on disk: delete this one "
                f"(rm -r {where}) and rerun (train: with --resume) to continue from step "
                f"{earlier[-1]}.")  # fmt: skip
    else:
        msg += ("No earlier step is on disk: start the run again in a new --workdir (or "
                "convert the snapshot again).")  # fmt: skip
    return msg + " Add --debug to see the library's error."


def _quiet_event_loop_noise() -> None:
    """After a failed restore, orbax's background threads may print 'Event loop is closed'
    tracebacks (asyncio logger, thread/unraisable hooks): drop just those."""
    import logging
    import sys
    import threading

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)

    def noise(exc) -> bool:
        return isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)

    thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook
    threading.excepthook = lambda a: None if noise(a.exc_value) else thread_hook(a)
    sys.unraisablehook = lambda u: None if noise(u.exc_value) else unraisable_hook(u)


def load_generator(ckpt: str | None, config: str | None, overrides, command: str,
                   flag: str = "--ckpt"):  # fmt: skip
    """--ckpt RUN_DIR (its G_ema) or --config FILE (random init) -> (cfg, G, variables);
    `flag` names ckpt in messages."""
    from styleavatar_jax import typed_config
    from styleavatar_jax.models.triplane import TriPlaneGenerator

    if bool(ckpt) == bool(config):
        raise ValueError(f"{command}: give exactly one of --ckpt DIR or --config FILE "
                         "(random init)")  # fmt: skip
    if ckpt:
        cfg = typed_config.apply_overrides(load_config(check_run_dir(ckpt, flag)), overrides or [])
    else:
        cfg = typed_config.load_config_file(config, overrides)
    G = TriPlaneGenerator(typed_config.generator_config(cfg.model.generator))
    if ckpt:
        variables = load_networks(ckpt, ["G_ema"])["G_ema"]
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
