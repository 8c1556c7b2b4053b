"""What a training loop runs inside: the device mesh, the progress log, stop signals, and a
time budget. Shared by the GAN loop (train/loop.py) and the W-diffusion loop (wdiff/train.py).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh


class TrainingDiverged(RuntimeError):
    """A loss or parameter became NaN/Inf; the last checkpoint on disk is the last good one."""


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The devices (default: all, of all hosts) on one 'data' axis."""
    return Mesh(np.array(list(devices or jax.devices())), ("data",))


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


class Deadline:
    """max_seconds of wall time from now (None: no limit)."""

    def __init__(self, max_seconds: float | None):
        self.at = None if max_seconds is None else time.perf_counter() + max_seconds

    def passed(self) -> bool:
        return self.at is not None and time.perf_counter() > self.at
