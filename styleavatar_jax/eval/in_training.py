"""Metrics during training: a callback for `train.loop.train(..., callbacks=[...])`.

    cb = make_metric_callback(G, every_kimg=50, batch_size=cfg.train.batch_size, ...)
    loop.train(cfg, workdir, callbacks=[cb])

Every `every_kimg` thousand training images (counted as step × batch size, as the loop
does) it evaluates the EMA generator of the state it is handed (copied to the host at
once: the loop donates the state to the next step) with `evaluate.evaluate` and writes
WORKDIR/metrics-<step>.json, like `styleavatar-jax eval`. The real images' Inception
features are computed once, when the callback is made.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax

from styleavatar_jax.convert.inception import load_inception
from styleavatar_jax.eval import evaluate as ev
from styleavatar_jax.eval import fid
from styleavatar_jax.files import as_path
from styleavatar_jax.sampling import make_mesh


def crossed(step: int, batch_size: int, every_kimg: float) -> bool:
    """Whether step `step` (≥ 1) took the image count past a multiple of every_kimg·1000."""
    every = every_kimg * 1000
    return step >= 1 and (step * batch_size) // every > ((step - 1) * batch_size) // every


def make_metric_callback(
    G,
    *,
    workdir: str | os.PathLike,
    data: str | os.PathLike,
    every_kimg: float,
    batch_size: int,
    camera: dict,
    neural_res: int | Callable[[int], int],
    metrics: str = "fid5k",
    num: int | None = None,
    inception: str | os.PathLike | None = None,
    eval_batch: int = 32,
    truncation_cutoff: int | None = 14,
    mesh=None,
    log: Callable[[str], None] = print,
) -> Callable:
    """-> callback(step, state, metrics) running `metrics` on state.g_ema every
    `every_kimg` (metric names as `evaluate.parse_metrics`; num overrides their image
    counts). batch_size: the training batch (images per step). neural_res: a number,
    or a function of the step (the schedule's resolution). The dataset stays open for the
    run; the callback holds it and the real features (the only state it keeps)."""
    from styleavatar_jax.data.formats import open_dataset

    if every_kimg <= 0:
        raise ValueError(f"every_kimg={every_kimg}: expected a positive number of kimg")
    settings = ev.EvalSettings(metrics=ev.parse_metrics(metrics), num=num, batch=eval_batch)
    mesh = mesh if mesh is not None else make_mesh()
    needs = any(s.kind in ("fid", "kid") for s in settings.metrics)
    variables = load_inception(inception, flag="eval inception") if needs else None
    source = open_dataset(data)
    real = None
    if needs:
        extract = fid.FeatureExtractor(variables, eval_batch, mesh)
        real = ev.real_features_of(source, extract, progress=False)
    record = ev.inception_record(inception) if needs else None

    def callback(step: int, state, metrics: dict) -> None:
        if not crossed(step, batch_size, every_kimg):
            return
        g_ema = jax.device_get(state.g_ema)
        res = neural_res(step) if callable(neural_res) else neural_res
        result = ev.evaluate(G, g_ema, camera, source, settings, mesh=mesh, neural_res=res,
                             truncation_cutoff=truncation_cutoff, inception=variables,
                             real_features=real, progress=False, log=log)  # fmt: skip
        result = {"run": str(as_path(workdir)), "step": step,
                  "kimg": step * batch_size / 1000} | result  # fmt: skip
        if record is not None:
            result["protocol"]["inception"] = record
        ev.write_result(ev.metrics_path(workdir, step), result)

    return callback
