"""Metrics during training: config.eval -> the callbacks `loop.train` runs after each step."""

from __future__ import annotations

from pathlib import Path

import ml_collections

from styleavatar_jax.eval.in_training import make_metric_callback
from styleavatar_jax.models.triplane import TriPlaneGenerator
from styleavatar_jax.train.config import training_configs
from styleavatar_jax.train.step import schedule_at


def metric_callbacks(cfg: ml_collections.ConfigDict, workdir: str | Path) -> list:
    """config.eval -> [a callback running its metrics every eval.every_kimg] (or [])."""
    ev = cfg.get("eval")
    if ev is None or not ev.metrics or ev.every_kimg <= 0:
        return []
    tc = training_configs(cfg)
    batch = tc.train.batch_size
    return [make_metric_callback(
        TriPlaneGenerator(tc.generator), workdir=workdir, data=tc.data_path,
        every_kimg=float(ev.every_kimg), batch_size=batch, camera=cfg.camera.to_dict(),
        neural_res=lambda step: schedule_at(tc.train, step * batch)[1], metrics=ev.metrics,
        num=int(ev.num) or None, inception=ev.inception or None, eval_batch=int(ev.batch),
    )]  # fmt: skip
