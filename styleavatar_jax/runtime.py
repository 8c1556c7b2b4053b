"""What a training loop runs inside: the device mesh, the progress log, stop signals, and a
time budget. Shared by the GAN loop (train/loop.py) and the W-diffusion loop (wdiff/train.py).
"""

from __future__ import annotations

import os
import signal
import sys
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
    """TensorBoard (tensorboardX, process 0 only) + a tqdm bar counting `unit`s (kimg), or,
    without the bar (`progress=False`: logs of background runs), one plain line per logged
    step: the step, kimg, seconds per kimg since the previous line, and the losses."""

    def __init__(self, workdir: Path, total: float, done: float, progress: bool,
                 unit: str = "kimg"):  # fmt: skip
        self.main = jax.process_index() == 0
        self.lines = self.main and not progress and unit == "kimg"
        self.last = (time.monotonic(), None)  # (time, nimg) of the previous line
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
        shown = {k.split("/")[0][0] + k.split("/")[1][:4]: float(np.mean(v))
                 for k, v in metrics.items() if k.endswith("loss")}  # fmt: skip
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)
        if self.lines:
            now, (then, before) = time.monotonic(), self.last
            rate = ""
            if before is not None and nimg > before:
                rate = f"  {(now - then) / ((nimg - before) / 1000):.0f} s/kimg"
            losses = "".join(f"  {k}={v:.3f}" for k, v in shown.items())
            print(f"step {step}  {nimg / 1000:.3f} kimg{rate}{losses}", flush=True)
            self.last = (now, nimg)

    def advance(self, amount: float) -> None:
        if self.bar is not None:  # never past the total (tqdm warns at the end otherwise)
            self.bar.update(max(0.0, min(round(amount, 6), self.bar.total - self.bar.n)))

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


class StopOnSignal:
    """Ctrl-C (SIGINT) and SIGTERM in a training loop (main thread only; the previous handlers
    come back after).

    Armed (the loop is stepping): the signal is acknowledged at once on stderr (a thread
    woken by signal.set_wakeup_fd, so even during a long compilation), `flag` is set, and the
    loop finishes its step, saves and returns "interrupted"; the command then exits with
    `exit_code(status)`: 130 after SIGINT, 143 after SIGTERM (128 + the signal, as a shell
    reports a process killed by it). A second Ctrl-C exits at once with 130, without saving.
    Not armed yet (initialisation: nothing to save): one line on stderr and exit 128 + the
    signal at once, without a traceback.
    """

    def __init__(self, *, armed: bool = True):
        self.flag = threading.Event()
        self.armed = armed
        self.signum: int | None = None
        self._old = {}
        self._pipe = None
        self._old_fd = -1
        self._seen = 0

    def arm(self) -> None:
        self.armed = True

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._pipe = (r, w)
        self._old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._handle)
        threading.Thread(target=self._watch, args=(r,), daemon=True, name="stop-on-signal").start()
        return self

    def _handle(self, signum, frame) -> None:
        """The Python-level handler (main thread, between bytecodes): only sets the flag, so
        the step in which a signal arrives is the last one; the watcher thread talks."""
        global _last_signal
        if self.armed and not self.flag.is_set():
            self.signum = _last_signal = signum
            self.flag.set()

    def _watch(self, r: int) -> None:
        while data := _read(r):
            for signum in data:
                if signum in STOP_SIGNALS:
                    self._acknowledge(signum)
        os.close(r)

    def _acknowledge(self, signum: int) -> None:
        name = signal.Signals(signum).name
        self._seen += 1
        if not self.armed:
            _say(f"{name}: interrupted during initialisation; nothing to save, exiting")
            os._exit(128 + signum)
        if self._seen == 1:
            _say(f"{name}: stopping after this step; Ctrl-C again to abort without saving")
        elif signum == signal.SIGINT:
            _say(f"{name} again: aborting without saving")
            os._exit(128 + signum)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_fd)
            os.close(self._pipe[1])  # the watcher reads EOF and ends; it closes the read end


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_last_signal: int | None = None


def exit_code(status: str) -> int:
    """A training command's exit code: 128 + the signal that interrupted it, else 0."""
    return 128 + _last_signal if status == "interrupted" and _last_signal else 0


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 64)
    except OSError:
        return b""


def _say(text: str) -> None:
    print(f"\n{text}", file=sys.stderr, flush=True)


class Deadline:
    """max_seconds of wall time from now (None: no limit)."""

    def __init__(self, max_seconds: float | None):
        self.at = None if max_seconds is None else time.perf_counter() + max_seconds

    def passed(self) -> bool:
        return self.at is not None and time.perf_counter() > self.at
