"""The training loop: config -> run directory with checkpoints, TensorBoard logs, snapshots.

    WORKDIR/config.json                  the full config (a run directory: `sample` reads it)
    WORKDIR/checkpoints/<step>/          orbax: G, G_ema, D (variables), opt (both Adam
                                         states, step, nimg), meta (JSON: kimg, seed, ...)
    WORKDIR/tb/                          TensorBoard scalars and image snapshots
    WORKDIR/snapshots/<kimg>.png         G_ema at fixed seeds (rows) and yaws (columns)

Exact resume: a step's randomness is fold_in(key(seed), step) and its batch is
`InputPipeline.batch_at(step)`, so the checkpointed state (G, D, G_ema, optimizers, step,
nimg) is all a run needs to continue bit for bit. SIGTERM/SIGINT finish the current step,
save, and return; a NaN/Inf loss or parameter stops the run with `TrainingDiverged` before
anything non-finite is saved, so the last checkpoint stays good. Orbax writes each
checkpoint to a temporary directory and renames it, so a kill never leaves one half-written.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax import checkpoint
from styleavatar_jax.data.formats import open_dataset
from styleavatar_jax.data.pipeline import InputPipeline
from styleavatar_jax.data.source import ImageSource
from styleavatar_jax.export.grid import image_grid, to_uint8, write_png
from styleavatar_jax.files import write_atomic
from styleavatar_jax.train.config import TrainingConfigs, training_configs
from styleavatar_jax.train.state import Networks, TrainState, init_state, make_networks
from styleavatar_jax.train.step import Trainer, phases_at, schedule_at

# Config sections that define the math of a run: a resume must not change them.
FROZEN_SECTIONS = ("seed", "model.generator", "model.discriminator", "train", "pose", "data.flip")
RESUMABLE = ("train.total_kimg",)  # may change on --resume (as run.* may)


class TrainingDiverged(RuntimeError):
    """A loss or parameter became NaN/Inf; the last checkpoint on disk is the last good one."""


@dataclasses.dataclass
class RunResult:
    state: TrainState
    status: str  # "finished" | "interrupted" (signal) | "stopped" (max_steps)
    step: int
    kimg: float
    workdir: Path


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """All devices (of all hosts) on one 'data' axis."""
    return Mesh(np.array(list(devices or jax.devices())), ("data",))


# ---------------------------------------------------------------------------------------
# Run directory


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


def config_differences(saved: ml_collections.ConfigDict, given: ml_collections.ConfigDict,
                       sections: Sequence[str] = FROZEN_SECTIONS,
                       resumable: Sequence[str] = RESUMABLE) -> list[str]:  # fmt: skip
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


def write_config(workdir: Path, cfg: ml_collections.ConfigDict) -> None:
    text = cfg.to_json_best_effort(indent=2, sort_keys=True)
    write_atomic(workdir / checkpoint.CONFIG_FILE, lambda f: f.write(text.encode()))


def check_dataset(source: ImageSource, tc: TrainingConfigs) -> None:
    """The dataset must match the config: resolution = D's and G's, 25-d labels."""
    res = tc.discriminator.img_resolution
    if source.resolution != res or tc.generator.img_resolution != res:
        raise ValueError(
            f"{source.path}: images are {source.resolution}², but config.model.discriminator."
            f"img_resolution is {res} and config.model.generator.img_resolution "
            f"{tc.generator.img_resolution}; resize the dataset (convert-dataset --resolution) "
            "or pick a config at that resolution"
        )
    if source.labels.shape[1] != 25:
        raise ValueError(f"{source.path}: labels are {source.labels.shape[1]}-d, expected 25")
    if len(source) < tc.train.batch_size:
        raise ValueError(
            f"{source.path}: {len(source)} images, fewer than config.train.batch_size="
            f"{tc.train.batch_size}"
        )


# ---------------------------------------------------------------------------------------
# Checkpoints


def _manager(workdir: Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(workdir / checkpoint.CHECKPOINTS, options=options)


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
    """Restore `step` into the structure and shardings of `target` -> (state, meta)."""
    opt = {"g_opt": target.g_opt, "d_opt": target.d_opt, "step": target.step,
           "nimg": target.nimg}  # fmt: skip
    where = Path(mngr.directory) / str(step)
    try:
        r = mngr.restore(
            step,
            args=ocp.args.Composite(
                G=ocp.args.StandardRestore(target.g),
                G_ema=ocp.args.StandardRestore(target.g_ema),
                D=ocp.args.StandardRestore(target.d),
                opt=ocp.args.StandardRestore(opt),
                meta=ocp.args.JsonRestore(),
            ),
        )
    except Exception as e:  # orbax raises many types for a damaged step
        others = [s for s in mngr.all_steps() if s != step]
        raise ValueError(
            f"checkpoint {where} cannot be read ({type(e).__name__}: {e}); it is damaged or "
            f"from another config. Other steps there: {others or 'none'} (delete the damaged "
            "step to resume from the previous one)"
        ) from e
    o = r["opt"]
    state = TrainState(step=o["step"], nimg=o["nimg"], g=r["G"], g_ema=r["G_ema"], d=r["D"],
                       g_opt=o["g_opt"], d_opt=o["d_opt"])  # fmt: skip
    return state, r["meta"]


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


class TrainLog:
    """TensorBoard (tensorboardX, process 0 only) + a tqdm bar counting `unit`s (kimg)."""

    def __init__(self, workdir: Path, total: float, done: float, progress: bool,
                 unit: str = "kimg"):  # fmt: skip
        self.main = jax.process_index() == 0
        self.writer = None
        if self.main:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(workdir / "tb"))
        self.bar = None
        if progress and self.main:
            from tqdm import tqdm

            n = "{n:.3f}/{total:.3f}" if unit == "kimg" else "{n:.0f}/{total:.0f}"
            self.bar = tqdm(total=round(total, 3), initial=round(done, 3), unit=unit,
                            bar_format="{l_bar}{bar}| " + n + f" {unit} "
                                       "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")  # fmt: skip

    def scalars(self, metrics: dict, step: int, nimg: int, extra: dict) -> None:
        if self.writer is not None:
            for k, v in {**metrics, **extra}.items():
                self.writer.add_scalar(k, float(np.mean(v)), step)
        if self.bar is not None:
            shown = {k.split("/")[0][0] + k.split("/")[1][:4]: float(np.mean(v))
                     for k, v in metrics.items() if k.endswith("loss")}  # fmt: skip
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)

    def advance(self, amount: float) -> None:
        if self.bar is not None:
            self.bar.update(round(amount, 6))

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


class StopOnSignal:
    """SIGTERM/SIGINT set a flag (main thread only); the previous handlers come back after."""

    def __init__(self):
        self.flag = threading.Event()
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, lambda *_: self.flag.set())
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


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
) -> RunResult:
    """Train per `cfg` into `workdir` (module docstring). resume: continue the run there from
    its latest checkpoint (a fresh start when it has none). max_steps / max_seconds: stop
    (and save) after this many steps / seconds of training in this call (status "stopped").
    callbacks(step, state, metrics) run once before the first step (metrics {}) and after
    every step; the state they see is donated to the next step, so use it right away."""
    tc = training_configs(cfg)
    t = tc.train
    workdir = Path(workdir).absolute()
    if not tc.data_path:
        raise ValueError("config.data.path is empty: pass --config.data.path=DATASET "
                         "(an EG3D folder or zip, or a tfds directory)")  # fmt: skip
    mngr_dir = workdir / checkpoint.CHECKPOINTS
    existing = sorted(int(p.name) for p in mngr_dir.iterdir() if p.name.isdigit()) \
        if mngr_dir.is_dir() else []  # fmt: skip
    if existing and not resume:
        raise FileExistsError(
            f"{workdir} holds a run (checkpoints at steps {existing}): pass --resume to "
            "continue it, or choose another --workdir"
        )
    if existing:
        diff = config_differences(checkpoint.load_config(workdir), cfg)
        if diff:
            raise ValueError(
                f"--resume: {workdir} was trained with another config:\n  " + "\n  ".join(diff)
            )
    if init_from and existing:
        raise ValueError("--init-from starts a run; it cannot be combined with a resumed one")

    mesh = mesh or data_mesh()
    n = mesh.shape["data"]
    if t.batch_size % (n * t.accum_steps):
        raise ValueError(
            f"config.train.batch_size={t.batch_size} must be divisible by the {n} devices × "
            f"config.train.accum_steps={t.accum_steps}"
        )
    source = open_dataset(tc.data_path)
    check_dataset(source, tc)

    nets = make_networks(tc.generator, tc.discriminator, t, tc.pose)
    trainer = Trainer(nets, mesh)
    key = jax.random.key(tc.seed)
    init_key, run_key = jax.random.split(key)
    rep = NamedSharding(mesh, P())
    if existing:
        abstract = jax.eval_shape(lambda: init_state(nets, init_key))
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                              abstract)  # fmt: skip
    else:
        state = init_state(nets, init_key)
        if init_from:
            state = _init_from(init_from, nets, state)
        state = trainer.place(state)

    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0 and not existing:
        write_config(workdir, cfg)
    mngr = _manager(workdir, tc.run.keep_checkpoints)
    if existing:
        state, meta = restore_state(mngr, existing[-1], target)
        log(f"resumed {workdir} at step {int(state.step)} ({int(state.nimg) / 1000:.3f} kimg)")

    step, nimg = int(state.step), int(state.nimg)
    total_steps = math.ceil(t.total_kimg * 1000 / t.batch_size)
    last_step = total_steps if max_steps is None else min(total_steps, step + max_steps)
    pipeline = InputPipeline(source, t.batch_size, seed=tc.seed, flip=tc.flip, mesh=mesh,
                             threads=tc.run.workers)  # fmt: skip
    logger = TrainLog(workdir, t.total_kimg, nimg / 1000, progress)
    ckpt_every = max(1, round(tc.run.checkpoint_kimg * 1000 / t.batch_size))
    snap_every = round(tc.run.snapshot_kimg * 1000 / t.batch_size)
    status = "finished"
    metrics: dict = {}

    def meta() -> dict:
        # The data position is the step: InputPipeline.batch_at(step) (module docstring).
        return {"step": int(state.step), "nimg": int(state.nimg), "seed": tc.seed}

    def save():
        _check_finite(state, jax.device_get(metrics), step, workdir)
        if step not in mngr.all_steps():
            save_state(mngr, state, meta())

    def snapshot(neural_res):
        if jax.process_index() == 0 and tc.run.snapshot_seeds and tc.run.snapshot_yaws:
            grid = snapshot_images(nets, state.g_ema, cfg, tc, neural_res, mesh)
            write_png(workdir / "snapshots" / f"{nimg / 1000:09.3f}kimg.png", grid)
            logger.image("G_ema", grid, step)

    try:
        with StopOnSignal() as stop, pipeline.iterate(step) as batches:
            tick, tick_nimg = time.perf_counter(), nimg
            deadline = None if max_seconds is None else time.perf_counter() + max_seconds
            neural_res = schedule_at(t, nimg)[1]
            if step == 0 and snap_every:
                snapshot(neural_res)
            for cb in callbacks:
                cb(step, state, {})
            while step < last_step:
                batch = next(batches)
                batch = {"image": batch["image"], "label": batch["label"]}
                sched, neural_res = schedule_at(t, nimg)
                phases = phases_at(t, step)
                state, metrics = trainer.step(
                    state, batch, run_key, sched, phases=phases, neural_res=neural_res
                )
                step, nimg = step + 1, nimg + t.batch_size
                for cb in callbacks:
                    cb(step, state, metrics)
                timeout = deadline is not None and time.perf_counter() > deadline
                done = step == last_step or stop.flag.is_set() or timeout
                if step % tc.run.log_steps == 0 or done:
                    host = jax.device_get(metrics)
                    _check_finite(state, host, step, workdir)
                    now = time.perf_counter()
                    rate = (nimg - tick_nimg) / 1000 / max(now - tick, 1e-9)
                    tick, tick_nimg = now, nimg
                    extra = {"Progress/kimg": nimg / 1000, "Progress/kimg_per_s": rate,
                             "Progress/blur_sigma": float(sched["blur_sigma"]),
                             "Progress/neural_res": neural_res,
                             "Progress/lr_g": t.lr_g, "Progress/lr_d": t.lr_d}  # fmt: skip
                    logger.scalars(host, step, nimg, extra)
                logger.advance(t.batch_size / 1000)
                if step % ckpt_every == 0 or done:
                    save()
                if snap_every and (step % snap_every == 0 or step == total_steps):
                    snapshot(neural_res)
                if stop.flag.is_set():
                    status = "interrupted"
                    log(f"\nstopped by a signal at step {step}; saved {mngr_dir / str(step)}")
                    break
                if timeout:
                    break
            if status == "finished" and step < total_steps:
                status = "stopped"
    finally:
        logger.close()
        pipeline.close()
        source.close()
        mngr.close()
    return RunResult(state, status, step, nimg / 1000, workdir)
