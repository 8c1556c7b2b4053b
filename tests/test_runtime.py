"""runtime.StopOnSignal: Ctrl-C / SIGTERM acknowledged at once, exit codes 130 / 143, a second
Ctrl-C (or one during initialisation) exits at once. No model is compiled."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from styleavatar_jax import runtime

ROOT = Path(__file__).resolve().parent.parent


def _wait(event, seconds=5.0):
    end = time.monotonic() + seconds
    while not event.is_set() and time.monotonic() < end:
        time.sleep(0.01)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_sets_the_flag_and_says_so(capfd, sig, code):
    before = signal.getsignal(sig)
    with runtime.StopOnSignal() as stop:
        os.kill(os.getpid(), sig)
        _wait(stop.flag)
        time.sleep(0.1)  # the watcher thread's message
    assert stop.flag.is_set() and stop.signum == sig
    assert (
        "stopping after this step; Ctrl-C again to abort without saving" in capfd.readouterr().err
    )
    assert runtime.exit_code("interrupted") == code
    assert runtime.exit_code("finished") == 0
    assert signal.getsignal(sig) is before


def _child(body: str) -> subprocess.CompletedProcess:
    code = ("import os, signal, time\nfrom styleavatar_jax.runtime import StopOnSignal\n" + body
            + "\ntime.sleep(20)\nprint('not reached')\n")  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip


def test_second_ctrl_c_aborts_without_saving():
    r = _child("with StopOnSignal():\n    os.kill(os.getpid(), signal.SIGINT)\n"
               "    time.sleep(0.5)\n    os.kill(os.getpid(), signal.SIGINT)\n"
               "    time.sleep(20)")  # fmt: skip
    assert r.returncode == 130, r.stderr
    assert "aborting without saving" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_initialisation_exits_at_once(sig, code):
    r = _child(f"with StopOnSignal(armed=False):\n    os.kill(os.getpid(), {int(sig)})\n"
               "    time.sleep(20)")  # fmt: skip
    assert r.returncode == code, r.stderr
    assert "interrupted during initialisation" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_progress_bar_never_passes_its_total(tmp_path):
    import warnings

    log = runtime.TrainLog(tmp_path, total=0.01, done=0.0, progress=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm's TqdmWarning when n > total
        for _ in range(3):
            log.advance(0.004)
        log.close()
    assert log.bar.n == pytest.approx(0.01)


def test_without_the_bar_each_logged_step_is_one_line(tmp_path, capsys):
    """Background runs (`--no-progress`, nohup): a plain line per logged step with its rate."""
    log = runtime.TrainLog(tmp_path, total=10.0, done=0.0, progress=False)
    metrics = {"G/loss": [1.25, 1.75], "D/loss": 0.5, "D/r1_penalty": 3.0}
    log.scalars(metrics, step=50, nimg=200, extra={})
    log.scalars(metrics, step=100, nimg=400, extra={})
    log.close()
    first, second = capsys.readouterr().out.splitlines()
    assert first == "step 50  0.200 kimg  Gloss=1.500  Dloss=0.500"
    assert re.fullmatch(r"step 100  0\.400 kimg  \d+ s/kimg  Gloss=1\.500  Dloss=0\.500", second)
    assert (tmp_path / "tb").is_dir()
