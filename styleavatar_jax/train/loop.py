"""The training loop: config -> run directory with checkpoints, TensorBoard logs, snapshots.

    WORKDIR/config.json                  the full config (a run directory: `sample` reads it)
    WORKDIR/checkpoints/<step>/          orbax: G, G_ema, D (variables), opt (both Adam
                                         states, step, nimg), meta (JSON: kimg, seed, ...)
    WORKDIR/tb/                          TensorBoard scalars and image snapshots
    WORKDIR/snapshots/<kimg>.png         G_ema at fixed seeds (rows) and yaws (columns)

Exact resume: a step's randomness is fold_in(key(seed), step) and its batch is
`InputPipeline.batch_at(step)`, so the checkpointed state (G, D, G_ema, optimizers, step,
nimg) is all a run needs to continue bit for bit. SIGTERM/SIGINT are acknowledged at once
on stderr; the current step finishes, is saved, and `train` returns status "interrupted"
(the `train` command then exits 130 for SIGINT, 143 for SIGTERM: runtime.StopOnSignal). A
second Ctrl-C aborts at once (exit 130, nothing saved); a signal during initialisation
exits at once (128 + the signal, nothing to save). A NaN/Inf loss or parameter stops the
run with `TrainingDiverged` before anything non-finite is saved, so the last checkpoint
stays good. Orbax writes each
checkpoint to a temporary directory and renames it, so a kill never leaves one half-written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax import cameras, checkpoint
from styleavatar_jax.data.formats import open_dataset
from styleavatar_jax.data.pipeline import InputPipeline
from styleavatar_jax.data.source import ImageSource, check_images, spread
from styleavatar_jax.export.grid import image_grid, to_uint8, write_png
from styleavatar_jax.files import as_path
from styleavatar_jax.runtime import Deadline, StopOnSignal, TrainingDiverged, TrainLog, data_mesh
from styleavatar_jax.train import schedules
from styleavatar_jax.train.config import TrainingConfigs, training_configs
from styleavatar_jax.train.state import (
    Networks,
    TrainState,
    init_state,
    make_networks,
    per_param_counts,
)
from styleavatar_jax.train.step import Trainer, phases_at, phases_between, schedule_at

# Config sections that define the math of a run: a resume must not change them.
FROZEN_SECTIONS = ("seed", "model.generator", "model.discriminator", "train", "pose", "data.flip")
RESUMABLE = ("train.total_kimg",)  # may change on --resume (as run.* may)
CHECKED_IMAGES = 64  # decoded before the networks are built (a damaged dataset fails fast)


@dataclasses.dataclass
class RunResult:
    state: TrainState
    status: str  # "finished" | "interrupted" (signal) | "stopped" (max_steps)
    step: int
    kimg: float
    workdir: Path
    compile_stats: dict  # train.programs.Programs.stats(): compiled, compile_s, wait_s


# ---------------------------------------------------------------------------------------
# Run directory


def check_dataset(source: ImageSource, tc: TrainingConfigs) -> None:
    """The dataset must match the config: resolution = D's and G's, 25-d labels."""
    res = tc.discriminator.img_resolution
    if source.resolution != res or tc.generator.img_resolution != res:
        raise ValueError(
            f"{source.path}: images are {source.resolution}², but config.model.discriminator."
            f"img_resolution is {res} and config.model.generator.img_resolution "
            f"{tc.generator.img_resolution}; make the dataset at {res}² (make-dataset --res "
            f"{res}) or pick a config made for {source.resolution}² images"
        )
    if source.labels.shape[1] != 25:
        raise ValueError(f"{source.path}: labels are {source.labels.shape[1]}-d, expected 25")
    if len(source) < tc.train.batch_size:
        raise ValueError(
            f"{source.path}: {len(source)} images, fewer than config.train.batch_size="
            f"{tc.train.batch_size}"
        )


def check_pivot(labels: np.ndarray, camera: dict, where, log: Callable[[str], None]) -> None:
    """Warn when config.camera.pivot (where `sample`, `video` and the snapshots look) is not
    where the dataset's cameras look: its side views would sit off the centre of the frame."""
    seen = cameras.look_at_point(labels[:4096]) + 0.0  # + 0.0: no "-0.00"
    pivot = np.asarray(camera["pivot"], np.float64)
    if np.linalg.norm(seen - pivot) > 0.05:
        fmt = lambda p: "({:.2f}, {:.2f}, {:.2f})".format(*(np.round(p, 2) + 0.0))
        log(f"warning: the cameras of {where} look at {fmt(seen)}, but config.camera.pivot is "
            f"{fmt(pivot)}; sampled side views will be off centre. Set "
            f"--config.camera.pivot='{fmt(seen)}'")  # fmt: skip


# ---------------------------------------------------------------------------------------
# Checkpoints


def save_state(mngr: ocp.CheckpointManager, state: TrainState, meta: dict) -> None:
    """One orbax step: G, G_ema, D (as run-directory networks), opt, meta."""
    step = int(state.step)
    opt = {"g_opt": state.g_opt, "d_opt": state.d_opt, "step": state.step, "nimg": state.nimg}
    mngr.save(
        step,
        args=ocp.args.Composite(
            G=ocp.args.StandardSave(state.g),
            G_ema=ocp.args.StandardSave(state.g_ema),
            D=ocp.args.StandardSave(state.d),
            opt=ocp.args.StandardSave(opt),
            meta=ocp.args.JsonSave(meta),
        ),
    )
    mngr.wait_until_finished()


def restore_state(mngr: ocp.CheckpointManager, step: int, target: TrainState) -> tuple:
    """Restore `step` into the structure and shardings of `target` -> (state, meta). A step
    saved with one Adam count for all parameters (before per-parameter counts) restores
    with that count given to every parameter."""
    legacy = _single_adam_count(mngr, step)
    g_opt, d_opt = target.g_opt, target.d_opt
    if legacy:  # the saved structure: one count leaf per optimizer
        g_opt, d_opt = (_one_count(o) for o in (g_opt, d_opt))
    opt = {"g_opt": g_opt, "d_opt": d_opt, "step": target.step, "nimg": target.nimg}
    r = checkpoint.restore_step(
        mngr,
        step,
        dict(
            G=ocp.args.StandardRestore(target.g),
            G_ema=ocp.args.StandardRestore(target.g_ema),
            D=ocp.args.StandardRestore(target.d),
            opt=ocp.args.StandardRestore(opt),
            meta=ocp.args.JsonRestore(),
        ),
    )
    o = r["opt"]
    if legacy:
        o = {**o, "g_opt": per_param_counts(o["g_opt"]), "d_opt": per_param_counts(o["d_opt"])}
    state = TrainState(step=o["step"], nimg=o["nimg"], g=r["G"], g_ema=r["G_ema"], d=r["D"],
                       g_opt=o["g_opt"], d_opt=o["d_opt"])  # fmt: skip
    return state, r["meta"]


def _single_adam_count(mngr: ocp.CheckpointManager, step: int) -> bool:
    """Whether `step` saved G's Adam with one step count (a leaf, not a tree per parameter)."""
    try:
        item = as_path(mngr.directory) / str(step) / "opt"
        tree = ocp.StandardCheckpointHandler().metadata(epath.Path(str(item))).tree
        count = tree["g_opt"][0]["count"]
    except Exception:  # unreadable: the restore itself reports the damaged step
        return False
    return not isinstance(count, dict)


def _one_count(opt_state):
    """`opt_state` (per-parameter counts) with one count leaf, as older steps saved it."""
    adam, *rest = opt_state
    one = jax.tree.leaves(adam.count)[0]
    return (adam._replace(count=one), *rest)


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if x.dtype.kind == "f"]
    return jnp.all(jnp.stack(leaves))


def _check_finite(state: TrainState, metrics: dict, step: int, workdir: Path) -> None:
    bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
    if not bad and bool(_all_finite((state.g["params"], state.d["params"]))):
        return
    what = f"losses {bad}" if bad else "parameters of G or D"
    raise TrainingDiverged(
        f"step {step}: {what} became NaN/Inf. Nothing was saved after it; the last good "
        f"checkpoint is in {workdir / checkpoint.CHECKPOINTS}. Lower config.train.lr_g / "
        "lr_d, raise config.train.r1_gamma, or resume from that checkpoint with another seed"
    )


# ---------------------------------------------------------------------------------------
# Snapshots and logging


def snapshot_images(nets: Networks, g_vars, cfg: ml_collections.ConfigDict, tc: TrainingConfigs,
                    neural_res: int, mesh: Mesh) -> np.ndarray:  # fmt: skip
    """G_ema at run.snapshot_seeds (rows) × run.snapshot_yaws (columns): uint8 grid."""
    from styleavatar_jax import sampling

    yaws = np.radians(np.asarray(tc.run.snapshot_yaws, np.float32))
    views = sampling.view_labels(yaws, np.zeros_like(yaws), cfg.camera)
    settings = sampling.SampleSettings(neural_res=neural_res, truncation_psi=1.0,
                                       truncation_cutoff=None)  # fmt: skip
    local = sampling.make_mesh(min(jax.local_device_count(), len(tc.run.snapshot_seeds)))
    batch = local.size * math.ceil(len(tc.run.snapshot_seeds) / local.size)
    rows = [
        images
        for _, images, _, _ in sampling.sample_batches(
            nets.G,
            jax.device_get(g_vars),
            tc.run.snapshot_seeds,
            views,
            cfg.camera,
            settings,
            batch=batch,
            mesh=local,
        )  # fmt: skip
    ]
    return image_grid(to_uint8(np.concatenate(rows)))


# ---------------------------------------------------------------------------------------
# The loop


def _init_from(path: str, nets: Networks, state: TrainState) -> TrainState:
    """G (and G_ema) from an EG3D snapshot, D too when its label width matches."""
    from styleavatar_jax.convert import snapshot

    src = Path(path)
    if not src.is_file() or src.suffix != ".pkl":
        raise FileNotFoundError(f"--init-from={path}: expected an EG3D network .pkl")
    cfg, networks, (G, D) = snapshot.convert_pickle(src)
    if G.cfg != nets.G.cfg:
        diff = [f.name for f in dataclasses.fields(G.cfg)
                if getattr(G.cfg, f.name) != getattr(nets.G.cfg, f.name)]  # fmt: skip
        raise ValueError(
            f"--init-from={path}: its generator differs from config.model.generator in {diff}"
        )
    g = networks["G"]
    g_ema = networks.get("G_ema", g)
    d = state.d
    if "D" in networks:
        if jax.tree.map(np.shape, networks["D"]["params"]) == jax.tree.map(
            np.shape, state.d["params"]
        ):
            d = {"params": networks["D"]["params"]}
        else:
            print(f"--init-from: {path}'s D has another shape (label width or size): D starts "
                  "from random weights")  # fmt: skip
    cast = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t)
    return state.replace(
        g=cast(g), g_ema=cast(g_ema), d=cast(d),
        g_opt=nets.g_tx.init(cast(g["params"])), d_opt=nets.d_tx.init(cast(d["params"])),
    )  # fmt: skip


def train(
    cfg: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    resume: bool = False,
    init_from: str | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    mesh: Mesh | None = None,
    progress: bool = True,
    callbacks: Sequence[Callable[[int, TrainState, dict], None]] = (),
    log: Callable[[str], None] = print,
    check_all_images: bool = False,
) -> RunResult:
    """Train per `cfg` into `workdir` (module docstring). resume: continue the run there from
    its latest checkpoint (a fresh start when it has none). max_steps / max_seconds: stop
    (and save) after this many steps / seconds of training in this call (status "stopped").
    callbacks(step, state, metrics) run once before the first step (metrics {}) and after
    every step; the state they see is donated to the next step, so use it right away.
    Before the networks are built, CHECKED_IMAGES images spread over the dataset (all with
    check_all_images) are decoded: a damaged one is a ValueError naming it."""
    tc = training_configs(cfg)
    workdir = as_path(workdir)
    log = log if jax.process_index() == 0 else lambda text: None  # one voice per run
    existing = _check_start(cfg, tc, workdir, resume, init_from)
    mesh = mesh or data_mesh()
    _check_batch(tc, mesh)
    # A signal before the first step: exit. Each resource is closed however the call ends.
    with StopOnSignal(armed=False) as stop, contextlib.ExitStack() as cleanup:
        source = open_dataset(tc.data_path)
        cleanup.callback(source.close)
        check_dataset(source, tc)
        check_images(source, None if check_all_images else spread(len(source), CHECKED_IMAGES))
        check_pivot(source.labels, cfg.camera.to_dict(), source.path, log)

        nets = make_networks(tc.generator, tc.discriminator, tc.train, tc.pose)
        trainer = Trainer(nets, mesh, compile_ahead=tc.run.compile_ahead)
        cleanup.callback(trainer.close)
        init_key, run_key = jax.random.split(jax.random.key(tc.seed))
        state = _start_state(nets, trainer, init_key, init_from, mesh, abstract=bool(existing))
        workdir.mkdir(parents=True, exist_ok=True)
        if jax.process_index() == 0 and not existing:
            checkpoint.write_config(workdir, cfg)
        mngr = checkpoint.open_manager(workdir, tc.run.keep_checkpoints)
        cleanup.callback(mngr.close)
        if existing:
            state, _ = restore_state(mngr, existing[-1], state)
            log(f"resumed {workdir} at step {int(state.step)} ({int(state.nimg) / 1000:.3f} kimg)")

        t = tc.train
        pos = Position(state, {}, int(state.step), int(state.nimg))
        pipeline = InputPipeline(source, t.batch_size, seed=tc.seed, flip=tc.flip, mesh=mesh,
                                 threads=tc.run.workers)  # fmt: skip
        cleanup.callback(pipeline.close)
        logger = TrainLog(workdir, t.total_kimg, pos.nimg / 1000, progress)
        cleanup.callback(logger.close)
        run = Run(cfg, tc, nets, trainer, mesh, workdir, mngr, logger, run_key, log)
        with pipeline.iterate(pos.step) as batches:
            stop.arm()
            pos, status = _loop(run, pos, batches, stop, Deadline(max_seconds), max_steps,
                                callbacks)  # fmt: skip
        stats = trainer.programs.stats()
        log(f"compiled {stats['compiled']} training programs ({stats['compile_s']:.0f} s); "
            f"steps waited {stats['wait_s']:.0f} s for compilation")  # fmt: skip
    return RunResult(pos.state, status, pos.step, pos.nimg / 1000, workdir, stats)


def _check_start(cfg, tc: TrainingConfigs, workdir: Path, resume: bool,
                 init_from: str | None) -> list[int]:  # fmt: skip
    """The run directory and the flags agree -> its checkpoint steps ([]: a fresh start)."""
    if not tc.data_path:
        raise ValueError("config.data.path is empty: pass --config.data.path=DATASET "
                         "(an EG3D folder or zip, or a tfds directory)")  # fmt: skip
    existing = checkpoint.check_resume(workdir, cfg, resume, FROZEN_SECTIONS, RESUMABLE)
    if init_from and existing:
        raise ValueError("--init-from starts a run; it cannot be combined with a resumed one")
    return existing


def _check_batch(tc: TrainingConfigs, mesh: Mesh) -> None:
    t, n = tc.train, mesh.shape["data"]
    if t.batch_size % (n * t.accum_steps):
        raise ValueError(
            f"config.train.batch_size={t.batch_size} must be divisible by the {n} devices × "
            f"config.train.accum_steps={t.accum_steps}"
        )


def _start_state(nets: Networks, trainer: Trainer, init_key, init_from: str | None, mesh: Mesh,
                 *, abstract: bool) -> TrainState:  # fmt: skip
    """The state a fresh run starts from (placed on the mesh), or, abstract=True, its shapes
    and shardings for restoring a checkpoint into."""
    if abstract:
        rep = NamedSharding(mesh, P())
        shapes = jax.eval_shape(lambda: init_state(nets, init_key))
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                            shapes)  # fmt: skip
    state = init_state(nets, init_key)
    if init_from:
        state = _init_from(init_from, nets, state)
    return trainer.place(state)


@dataclasses.dataclass(frozen=True)
class Run:
    """What the loop works with and does not change: configs, networks, mesh, outputs."""

    cfg: ml_collections.ConfigDict
    tc: TrainingConfigs
    nets: Networks
    trainer: Trainer
    mesh: Mesh
    workdir: Path
    mngr: ocp.CheckpointManager
    logger: TrainLog
    run_key: jax.Array
    log: Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Position:
    """Where the loop is: the state after `step` steps (`nimg` images) and its metrics."""

    state: TrainState
    metrics: dict
    step: int
    nimg: int


def save(run: Run, pos: Position) -> None:
    """Checkpoint pos (once per step), after checking it is finite."""
    _check_finite(pos.state, jax.device_get(pos.metrics), pos.step, run.workdir)
    if pos.step not in run.mngr.all_steps():
        # The data position is the step: InputPipeline.batch_at(step) (module docstring).
        meta = {"step": int(pos.state.step), "nimg": int(pos.state.nimg), "seed": run.tc.seed}
        save_state(run.mngr, pos.state, meta)


def snapshot(run: Run, pos: Position, neural_res: int) -> None:
    """G_ema's snapshot grid -> WORKDIR/snapshots/<kimg>.png and TensorBoard (process 0)."""
    tc = run.tc
    if jax.process_index() == 0 and tc.run.snapshot_seeds and tc.run.snapshot_yaws:
        grid = snapshot_images(run.nets, pos.state.g_ema, run.cfg, tc, neural_res, run.mesh)
        write_png(run.workdir / "snapshots" / f"{pos.nimg / 1000:09.3f}kimg.png", grid)
        run.logger.image("G_ema", grid, pos.step)


def _log_scalars(run: Run, pos: Position, sched: dict, neural_res: int, rate: float) -> None:
    t = run.tc.train
    host = jax.device_get(pos.metrics)
    _check_finite(pos.state, host, pos.step, run.workdir)
    extra = {"Progress/kimg": pos.nimg / 1000, "Progress/kimg_per_s": rate,
             "Progress/blur_sigma": float(sched["blur_sigma"]),
             "Progress/neural_res": neural_res,
             "Progress/lr_g": t.lr_g, "Progress/lr_d": t.lr_d}  # fmt: skip
    run.logger.scalars(host, pos.step, pos.nimg, extra)


def _loop(run: Run, pos: Position, batches: Iterator, stop: StopOnSignal, deadline: Deadline,
          max_steps: int | None, callbacks) -> tuple[Position, str]:  # fmt: skip
    """Step until the run's total (or max_steps, the deadline, a signal) -> (pos, status)."""
    t, r = run.tc.train, run.tc.run
    total_steps = math.ceil(t.total_kimg * 1000 / t.batch_size)
    last_step = total_steps if max_steps is None else min(total_steps, pos.step + max_steps)
    ckpt_every = max(1, round(r.checkpoint_kimg * 1000 / t.batch_size))
    snap_every = round(r.snapshot_kimg * 1000 / t.batch_size)
    status = "finished"
    tick, tick_nimg = time.perf_counter(), pos.nimg
    neural_res = schedule_at(t, pos.nimg)[1]
    ahead_of = None  # the resolution whose successor's programs were asked for
    if pos.step == 0 and snap_every:
        snapshot(run, pos, neural_res)
    for cb in callbacks:
        cb(pos.step, pos.state, {})
    while pos.step < last_step:
        batch = next(batches)
        batch = {"image": batch["image"], "label": batch["label"]}
        sched, neural_res = schedule_at(t, pos.nimg)
        phases = phases_at(t, pos.step)
        if neural_res != ahead_of:  # a new resolution: compile the next one meanwhile
            ahead_of = neural_res
            span = schedules.neural_res_span(pos.nimg, t.batch_size, t.neural_res_initial,
                                             t.neural_res_final, t.neural_res_fade_kimg,
                                             end_nimg=last_step * t.batch_size)  # fmt: skip
            if span is not None:
                nxt, first, last = span  # only the phases its steps run
                needed = phases_between(t, pos.step + first, pos.step + last)
                run.trainer.compile_ahead(needed, pos.state, batch, run.run_key, sched,
                                          neural_res=nxt)  # fmt: skip
        state, metrics = run.trainer.step(pos.state, batch, run.run_key, sched, phases=phases,
                                          neural_res=neural_res)  # fmt: skip
        pos = Position(state, metrics, pos.step + 1, pos.nimg + t.batch_size)
        for cb in callbacks:
            cb(pos.step, pos.state, pos.metrics)
        # Read the flag once: a signal that lands after this (its handler is a thread) is
        # seen after the next step, never between "save?" and "stop".
        stopping, timeout = stop.flag.is_set(), deadline.passed()
        done = pos.step == last_step or stopping or timeout
        if pos.step % r.log_steps == 0 or done:
            now = time.perf_counter()
            rate = (pos.nimg - tick_nimg) / 1000 / max(now - tick, 1e-9)
            tick, tick_nimg = now, pos.nimg
            _log_scalars(run, pos, sched, neural_res, rate)
        run.logger.advance(t.batch_size / 1000)
        if pos.step % ckpt_every == 0 or done:
            save(run, pos)
        if snap_every and (pos.step % snap_every == 0 or pos.step == total_steps):
            snapshot(run, pos, neural_res)
        if stopping:
            status = "interrupted"
            where = run.workdir / checkpoint.CHECKPOINTS / str(pos.step)
            run.log(f"\nstopped by a signal at step {pos.step}; saved {where}")
            break
        if timeout:
            break
    if status == "finished" and pos.step < total_steps:
        status = "stopped"
    return pos, status
