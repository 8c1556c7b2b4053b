"""Typed W-diffusion hyperparameters and the layout of its config (configs/wdiff.py):

seed                 initial weights, every step's PRNG key, data order
model                DenoiserConfig fields (w_dim / cond_dim: None = from the pairs file)
diffusion            schedule ('cosine' | 'linear'), num_train_steps
train                WDiffTrainConfig fields
sample               steps, eta, guidance (λ) used by from-image / from-text / eval
data.path            the pairs file (`styleavatar-jax wdiff-data`)
run                  log_steps, checkpoint_steps, keep_checkpoints
"""

from __future__ import annotations

import dataclasses

import ml_collections

from styleavatar_jax import typed_config
from styleavatar_jax.models.wdiffusion import DenoiserConfig
from styleavatar_jax.wdiff.diffusion import SCHEDULES


@dataclasses.dataclass(frozen=True)
class WDiffTrainConfig:
    batch_size: int = 256  # global batch (all devices)
    lr: float = 3e-4
    warmup_steps: int = 500
    total_steps: int = 20000
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # global-norm clip (0 = off)
    ema_decay: float = 0.9995
    p_drop: float = 0.1  # condition dropout (classifier-free guidance)
    heldout: float = 0.05  # fraction of the pairs kept out of training, for evaluation

    def __post_init__(self):
        if self.batch_size < 1 or self.total_steps < 1:
            raise ValueError("train.batch_size and train.total_steps must be positive")
        if not 0 <= self.p_drop < 1:
            raise ValueError(f"train.p_drop={self.p_drop}: expected 0 ≤ p_drop < 1")
        if not 0 <= self.heldout < 1:
            raise ValueError(f"train.heldout={self.heldout}: expected 0 ≤ heldout < 1")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "cosine"
    num_train_steps: int = 1000

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"diffusion.schedule={self.schedule!r}: expected one of {SCHEDULES}")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    steps: int = 50  # DDIM steps
    eta: float = 0.0
    guidance: float = 3.0  # λ in ε̂ = λ·ε(w, y) + (1 − λ)·ε(w)
    clip_x0: float | None = 5.0  # clamp x̂₀ of the standardised w to ±this (None: off)


@dataclasses.dataclass(frozen=True)
class WDiffRunConfig:
    log_steps: int = 100
    checkpoint_steps: int = 1000
    keep_checkpoints: int = 3


@dataclasses.dataclass(frozen=True)
class WDiffConfigs:
    seed: int
    model: dict  # DenoiserConfig fields; w_dim/cond_dim may be None (from the data)
    diffusion: DiffusionConfig
    train: WDiffTrainConfig
    sample: SampleConfig
    run: WDiffRunConfig
    data_path: str

    def denoiser(self, w_dim: int, cond_dim: int, where: str = "the pairs file") -> DenoiserConfig:
        """DenoiserConfig with w_dim/cond_dim from the data (config values must agree)."""
        model = dict(self.model)
        for name, value in (("w_dim", w_dim), ("cond_dim", cond_dim)):
            if model.get(name) not in (None, value):
                raise ValueError(
                    f"config.model.{name}={model[name]} but {where} has {name}={value}"
                )
            model[name] = value
        model["num_train_steps"] = self.diffusion.num_train_steps
        return typed_config.build_dataclass(DenoiserConfig, model, "config.model")


def make_config(
    *,
    model: dict | None = None,
    diffusion=DiffusionConfig(),
    train=WDiffTrainConfig(),
    sample=SampleConfig(),
    run=WDiffRunConfig(),
    data_path: str = "",
    seed: int = 0,
) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.seed = seed
    base = {k: v for k, v in dataclasses.asdict(DenoiserConfig()).items() if k != "num_train_steps"}
    cfg.model = {**base, "w_dim": None, "cond_dim": None, **(model or {})}
    cfg.diffusion = dataclasses.asdict(diffusion)
    cfg.train = dataclasses.asdict(train)
    cfg.sample = dataclasses.asdict(sample)
    cfg.data = dict(path=data_path)
    cfg.run = dataclasses.asdict(run)
    return cfg


def wdiff_configs(cfg: ml_collections.ConfigDict) -> WDiffConfigs:
    """ConfigDict -> WDiffConfigs; errors name `config.<section>.<field>`."""
    for section in ("model", "diffusion", "train", "sample", "data", "run"):
        if section not in cfg:
            raise ValueError(
                f"config: no section {section!r} (a W-diffusion config needs "
                "model, diffusion, train, sample, data, run: configs/wdiff.py)"
            )
    model = cfg.model.to_dict()
    names = {f.name for f in dataclasses.fields(DenoiserConfig)} - {"num_train_steps"}
    unknown = sorted(set(model) - names)
    if unknown:
        raise ValueError(f"config.model: unknown field(s) {unknown}; expected {sorted(names)}")
    return WDiffConfigs(
        seed=int(cfg.seed),
        model=model,
        diffusion=typed_config.build_dataclass(DiffusionConfig, cfg.diffusion, "config.diffusion"),
        train=typed_config.build_dataclass(WDiffTrainConfig, cfg.train, "config.train"),
        sample=typed_config.build_dataclass(SampleConfig, cfg.sample, "config.sample"),
        run=typed_config.build_dataclass(WDiffRunConfig, cfg.run, "config.run"),
        data_path=str(cfg.data.path),
    )
