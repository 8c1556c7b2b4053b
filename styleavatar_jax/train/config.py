"""Typed training hyperparameters and the layout of a training config.

A training config (configs/*.py `get_config`) is an ml_collections.ConfigDict:

    seed                      run seed: initial weights, every step's PRNG key, data order
    model.generator           GeneratorConfig fields
    model.discriminator       DiscriminatorConfig fields (c_dim follows `pose`)
    model.neural_res          neural rendering resolution for sampling
    camera, sample            views and truncation of `sample` and of the snapshots
    train                     TrainConfig fields (EG3D's loss and optimizer settings)
    pose                      PoseLabelConfig fields (D's label: EG3D camera | coarse-to-fine)
    data.path, data.flip      dataset (EG3D folder/zip or tfds dir) and x-flip augmentation
    run                       RunConfig fields (checkpoints, logs, snapshots)
    eval                      metrics during training: metrics ('' = none, e.g. 'fid5k,swd'),
                              every_kimg, inception (weights file), num (0: the metric's own
                              count), batch (see styleavatar_jax/eval/in_training.py)

`training_configs(cfg)` turns it into typed, validated dataclasses; an unknown or ill-typed
field is an error naming `config.<section>.<field>`.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from styleavatar_jax import typed_config
from styleavatar_jax.models.discriminator import DiscriminatorConfig
from styleavatar_jax.models.triplane import GeneratorConfig
from styleavatar_jax.train.pose_labels import PoseLabelConfig


def _check_finite(cfg, where: str) -> None:
    """Every float field (and float in a tuple field) of a config dataclass is finite."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        for v in value if isinstance(value, tuple | list) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{where}.{f.name}={value}: expected a finite number; pass e.g. "
                                 f"--{where}.{f.name}={f.default}")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # global batch (all devices, all hosts)
    accum_steps: int = 1  # micro-batches per optimizer step (gradient accumulation)
    lr_g: float = 0.0025
    lr_d: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    # Lazy regularisation: a phase of its own every N steps (× N, Adam lr and β scaled by
    # N/(N+1)); 0 = EG3D's None: with the main loss in one unscaled Adam step every step.
    g_reg_interval: int = 4  # density regularisation
    d_reg_interval: int = 16  # R1
    r1_gamma: float = 1.0
    density_reg: float = 0.25  # strength of the L1 density regulariser (0 = off)
    density_reg_points: int = 1000
    density_reg_p_dist: float = 0.004
    blur_init_sigma: float = 10.0
    blur_fade_kimg: float = 200.0
    gpc_reg_prob: float = 0.5  # generator pose-conditioning swap probability after the fade
    gpc_reg_fade_kimg: float = 1000.0
    neural_res_initial: int = 64
    neural_res_final: int | None = None  # None = no fade
    neural_res_fade_kimg: float = 1000.0
    ema_kimg: float = 10.0  # EG3D: batch_size · 10 / 32
    ema_rampup: float | None = 0.05
    total_kimg: float = 25000.0

    def __post_init__(self):
        _check_finite(self, "config.train")
        for name in ("lr_g", "lr_d", "total_kimg"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config.train.{name}={getattr(self, name)}: expected a number "
                                 f"> 0; pass e.g. --config.train.{name}="
                                 f"{getattr(TrainConfig, name)}")  # fmt: skip
        for name in ("r1_gamma", "density_reg", "blur_init_sigma", "ema_kimg"):
            if getattr(self, name) < 0:
                raise ValueError(f"config.train.{name}={getattr(self, name)}: expected a number "
                                 f"≥ 0; pass e.g. --config.train.{name}="
                                 f"{getattr(TrainConfig, name)}")  # fmt: skip
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size={self.batch_size} must be positive")
        if self.accum_steps < 1 or self.batch_size % self.accum_steps:
            raise ValueError(
                f"train.accum_steps={self.accum_steps} must be ≥ 1 and divide "
                f"train.batch_size={self.batch_size}"
            )
        for name in ("g_reg_interval", "d_reg_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"config.train.{name}={value!r}: expected an integer ≥ 0 (N ≥ 1: lazy, "
                    "a regulariser step every N steps; 0: regularise every step within the "
                    "main step, EG3D's reg_interval=None)"
                )
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))  # hashable


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Bookkeeping of a run (not part of the math: may change on --resume)."""

    checkpoint_kimg: float = 200.0  # save every this many kimg (and at the end / on a signal)
    keep_checkpoints: int = 3
    log_steps: int = 50  # scalars to TensorBoard + the NaN/Inf check every N steps
    snapshot_kimg: float = 200.0  # image grid of G_ema (fixed seeds and views); 0 = off
    snapshot_seeds: tuple[int, ...] = (0, 1, 2, 3)
    snapshot_yaws: tuple[float, ...] = (0.0, 45.0, 90.0, 180.0, -90.0, -45.0)  # degrees
    workers: int = 4  # image decode threads
    # Compile the next neural resolution's programs in a background thread while the
    # current ones run (train/programs.py); False: compile each when first used.
    compile_ahead: bool = True

    def __post_init__(self):
        _check_finite(self, "config.run")
        for name in ("checkpoint_kimg", "snapshot_kimg"):
            if getattr(self, name) < 0:
                raise ValueError(f"config.run.{name} must be ≥ 0")
        if self.keep_checkpoints < 1 or self.log_steps < 1 or self.workers < 1:
            raise ValueError("config.run.keep_checkpoints, log_steps and workers must be ≥ 1")
        for name in ("snapshot_seeds", "snapshot_yaws"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclasses.dataclass(frozen=True)
class TrainingConfigs:
    """The typed view of a training config."""

    seed: int
    generator: GeneratorConfig
    discriminator: DiscriminatorConfig
    train: TrainConfig
    pose: PoseLabelConfig
    run: RunConfig
    data_path: str
    flip: bool


def make_config(
    *,
    generator: GeneratorConfig,
    discriminator: DiscriminatorConfig,
    train: TrainConfig,
    pose: PoseLabelConfig,
    run: RunConfig = RunConfig(),
    neural_res: int | None = None,
    data_path: str = "",
    flip: bool = True,
    seed: int = 0,
    camera: dict | None = None,
) -> ml_collections.ConfigDict:
    """Build a training ConfigDict (the layout in the module docstring)."""
    cfg = ml_collections.ConfigDict()
    cfg.seed = seed
    cfg.model = ml_collections.ConfigDict()
    cfg.model.generator = dataclasses.asdict(generator)
    cfg.model.discriminator = dataclasses.asdict(discriminator)
    cfg.model.neural_res = neural_res or train.neural_res_final or train.neural_res_initial
    cfg.camera = camera or dict(radius=2.7, fov_degrees=18.837, pivot=(0.0, 0.0, 0.2))
    # surface_threshold: the σ level `mesh` and `view` use (EG3D's extract_shapes.py: 10).
    cfg.sample = dict(truncation_psi=1.0, truncation_cutoff=14, noise_mode="const",
                      surface_threshold=10.0)  # fmt: skip
    cfg.train = dataclasses.asdict(train)
    cfg.pose = dataclasses.asdict(pose)
    cfg.data = dict(path=data_path, flip=flip)
    cfg.run = dataclasses.asdict(run)
    cfg.eval = dict(metrics="", every_kimg=0.0, inception="", num=0, batch=32)
    return cfg


def training_configs(cfg: ml_collections.ConfigDict) -> TrainingConfigs:
    """ConfigDict -> TrainingConfigs; errors name the offending `config.<section>.<field>`."""
    for section in ("model", "train", "pose", "data", "run"):
        if section not in cfg:
            raise ValueError(
                f"config: no section {section!r}; a training config needs model, train, pose, "
                "data and run (styleavatar_jax/train/config.py)"
            )
    data = cfg.data.to_dict() if hasattr(cfg.data, "to_dict") else dict(cfg.data)
    unknown = sorted(set(data) - {"path", "flip"})
    if unknown:
        raise ValueError(f"config.data: unknown field(s) {unknown}; expected path, flip")
    return TrainingConfigs(
        seed=int(cfg.get("seed", 0)),
        generator=typed_config.generator_config(cfg.model.generator),
        discriminator=typed_config.discriminator_config(cfg.model.discriminator),
        train=typed_config.build_dataclass(TrainConfig, cfg.train, "config.train"),
        pose=typed_config.build_dataclass(PoseLabelConfig, cfg.pose, "config.pose"),
        run=typed_config.build_dataclass(RunConfig, cfg.run, "config.run"),
        data_path=str(data.get("path", "")),
        flip=bool(data.get("flip", True)),
    )
