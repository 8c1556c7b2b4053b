"""Typed training hyperparameters (EG3D's train.py defaults for FFHQ-512 unless noted)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # global batch (all devices, all hosts)
    lr_g: float = 0.0025
    lr_d: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    g_reg_interval: int = 4  # density regularisation every N steps (lazy)
    d_reg_interval: int = 16  # R1 every N steps (lazy)
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
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size={self.batch_size} must be positive")
        for name in ("g_reg_interval", "d_reg_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be ≥ 0 (0 = regularise every step)")
