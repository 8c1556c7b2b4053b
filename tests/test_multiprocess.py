"""Multi-host training, proven with real processes on CPU: `train --distributed` as 2
processes × 2 CPU devices (collectives over gloo, on 127.0.0.1) trains the parameters that
1 process × 4 devices trains, and its checkpoint resumes in 1 process; a process that dies
ends the others; bad settings are one error naming them, in bounded time."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from styleavatar_jax import distributed
from styleavatar_jax.train import loop
from styleavatar_jax.typed_config import load_config_file
from tests.test_train_loop import _write_dataset

ROOT = Path(__file__).resolve().parent.parent
# Every process: 2 CPU devices, compiled as the in-process reference is (conftest).
ENV = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "PYTHONPATH": str(ROOT),
    "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
    "JAX_DEFAULT_MATMUL_PRECISION": "highest",
}
STEPS = ["--config.train.total_kimg=0.008", "--config.run.snapshot_kimg=0"]  # 2 steps of 4
# Not bit-exact: gloo's all-reduce adds the 2 processes' gradients in another order than
# XLA's in-process one (measured: 1 ulp in some parameters after 2 steps).
TOL = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module", autouse=True)
def _fast(fast_compile):
    """Compile-bound module: see conftest.fast_compile."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(n: int, argv: list[str], *, port: int | None = None, stderr=subprocess.PIPE):
    """`styleavatar-jax argv` as processes 0..n-1 of one run (JAX_* variables, as the README
    documents) -> the Popens."""
    port = port or free_port()
    env = dict(ENV, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n))
    cmd = [sys.executable, "-m", "styleavatar_jax.cli", *map(str, argv)]
    return [subprocess.Popen(cmd, cwd=ROOT, env=dict(env, JAX_PROCESS_ID=str(i)),
                             stdout=subprocess.PIPE, stderr=stderr, text=True)
            for i in range(n)]  # fmt: skip


def finish(procs, timeout: float) -> list[tuple[int, str]]:
    """Wait for all (killing them all past `timeout` s) -> [(returncode, stdout + stderr)]."""
    end, out = time.monotonic() + timeout, []
    try:
        for p in procs:
            o, e = p.communicate(timeout=max(1.0, end - time.monotonic()))
            out.append((p.returncode, o + (e or "")))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(_write_dataset(tmp_path_factory.mktemp("data") / "ds").parent)


def _train_argv(data, workdir, *more):
    return ["train", "--distributed", "--config", "configs/tiny.py", "--workdir", workdir,
            f"--config.data.path={data}", *STEPS, "--no-progress", *more]  # fmt: skip


def test_two_processes_train_what_one_process_trains(data, tmp_path):
    """2 steps of configs/tiny.py as 2 processes × 2 devices, and in this process on 4
    devices (meanwhile); then the 2-process checkpoint, resumed by 1 process on its 4 devices
    (nothing left to do: the restored state is the result), equals the 1-process state."""
    two = tmp_path / "two"
    # With snapshots (process 0 samples alone at steps 0 and 2 while process 1 waits).
    procs = launch(2, _train_argv(data, two, "--config.run.snapshot_kimg=0.008"))
    try:
        cfg = load_config_file("configs/tiny.py", [f"--config.data.path={data}", *STEPS])
        mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
        one = loop.train(cfg, tmp_path / "one", mesh=mesh, progress=False)
    finally:
        results = finish(procs, timeout=400)
    for i, (code, text) in enumerate(results):
        assert code == 0, f"process {i} exited {code}:\n{text[-3000:]}"
    assert "finished at step 2" in results[0][1]
    resumed = loop.train(cfg, two, resume=True, mesh=mesh, progress=False)
    assert (one.step, resumed.step) == (2, 2)
    a = jax.tree_util.tree_leaves_with_path(jax.device_get(one.state))
    b = jax.tree.leaves(jax.device_get(resumed.state))
    for (path, x), y in zip(a, b, strict=True):
        np.testing.assert_allclose(y, x, **TOL, err_msg=f"state{jax.tree_util.keystr(path)}")
    # Process 0 alone wrote the config, the logs and the snapshots.
    assert (two / "config.json").is_file() and any((two / "tb").iterdir())
    snaps = sorted(p.name for p in (two / "snapshots").iterdir())
    assert snaps == ["00000.000kimg.png", "00000.008kimg.png"]


def test_a_dead_process_ends_the_others(data, tmp_path):
    """Process 1 killed once the run has started: process 0 exits non-zero, saying so,
    within the heartbeat timeout (5 s) plus a margin, never hangs."""
    workdir = tmp_path / "run"
    procs = launch(2, _train_argv(data, workdir, "--heartbeat-timeout", "5"))
    try:
        start = time.monotonic()
        while not (workdir / "config.json").exists():  # written once all processes joined
            assert time.monotonic() - start < 300, "the run did not start"
            assert all(p.poll() is None for p in procs), finish(procs, 10)
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        [(code, text)] = finish(procs[:1], timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        finish(procs, 10)
    assert code != 0
    assert "another task died" in text, text[-3000:]


def test_unreachable_coordinator_is_one_error_in_bounded_time(data, tmp_path):
    """Process 1 of 2 and no process 0: exit 2 after --distributed-timeout, naming the
    settings; nothing created."""
    workdir = tmp_path / "run"
    argv = ["train", "--config", "configs/tiny.py", "--workdir", workdir, "--distributed",
            f"--config.data.path={data}", "--distributed-timeout", "2"]  # fmt: skip
    env = dict(ENV, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID="1")  # fmt: skip
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "styleavatar_jax.cli", *map(str, argv)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2, r.stderr[-3000:]
    assert time.monotonic() - t < 40
    assert "not all processes joined within 2 s" in r.stderr
    assert "JAX_COORDINATOR_ADDRESS=127.0.0.1:" in r.stderr
    assert not workdir.exists()


def test_processes_that_disagree_on_the_count_stop(data, tmp_path):
    port = free_port()
    argv = ["train", "--config", "configs/tiny.py", "--workdir", tmp_path / "run",
            f"--config.data.path={data}", "--distributed-timeout", "60",
            "--coordinator", f"127.0.0.1:{port}", "--num-processes"]  # fmt: skip
    cmd = [sys.executable, "-m", "styleavatar_jax.cli", *map(str, argv)]
    procs = [subprocess.Popen(cmd + [n, "--process-id", i], cwd=ROOT, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for n, i in (("2", "0"), ("3", "1"))]  # fmt: skip
    for code, text in finish(procs, timeout=120):
        assert code == 2, text[-3000:]
        assert "the processes were started with different counts (process 0: 2, process " \
            "1: 3;" in text  # fmt: skip
    assert not (tmp_path / "run").exists()


# What `train --distributed` does before its first step, in a script: join, then one sum
# over a global mesh of every process's devices (process i contributes rows of i + 1).
JOIN_AND_SUM = """
from styleavatar_jax import distributed
distributed.initialize(timeout_s=60)
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()), ("data",))
rows = np.full((jax.local_device_count(),), jax.process_index() + 1.0, np.float32)
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), rows)
print("joined", jax.process_index(), jax.process_count(), float(jax.jit(jnp.sum)(x)))
"""


def _slurm_port() -> tuple[int, int]:
    """A SLURM_JOB_ID whose derived coordinator port (jax: 61440 + id mod 4096) is free."""
    for job in np.random.default_rng().permutation(4096):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 61440 + int(job)))
            except OSError:
                continue
        return 4096 * 25 + int(job), 61440 + int(job)
    raise RuntimeError("every port of jax's SLURM range 61440-65535 is taken on 127.0.0.1")


def test_slurm_environment_joins():
    """The SLURM recipe's code path: 2 processes given only srun's variables (no flags, no
    JAX_*) find the coordinator, count and id, and sum over all 4 devices."""
    job, port = _slurm_port()
    jax_vars = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
    env = {k: v for k, v in ENV.items() if k not in jax_vars}
    env |= dict(SLURM_JOB_ID=str(job), SLURM_STEP_NODELIST="127.0.0.1", SLURM_NTASKS="2",
                SLURM_STEP_NUM_NODES="1")  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", JOIN_AND_SUM], cwd=ROOT, text=True,
                              env=dict(env, SLURM_PROCID=str(i), SLURM_LOCALID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]  # fmt: skip
    out = finish(procs, timeout=120)
    for i, (code, text) in enumerate(out):
        assert code == 0, text[-3000:]
        assert f"joined {i} 2 6.0" in text, text[-3000:]  # 2 devices × 1 + 2 devices × 2


def test_settings_name_the_bad_one():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": "1"}  # fmt: skip
    assert distributed.settings(environ={}) is None  # TPU / SLURM: jax finds them
    got = distributed.settings(environ=env)
    assert {k: v for k, (v, _) in got.items()} == dict(
        coordinator="10.0.0.1:1234", num_processes=2, process_id=1
    )
    assert distributed.settings(process_id=0, environ=env)["process_id"] == (0, "--process-id=0")
    bad = [
        (dict(env, JAX_PROCESS_ID="2"), r"JAX_PROCESS_ID=2: expected a process id in \[0, 2\)"),
        (dict(env, JAX_NUM_PROCESSES="two"), r"JAX_NUM_PROCESSES='two': expected an integer"),
        (dict(env, JAX_COORDINATOR_ADDRESS="10.0.0.1"), r"JAX_COORDINATOR_ADDRESS=10\.0\.0\.1: "
         "expected HOST:PORT"),
        ({"JAX_NUM_PROCESSES": "2"}, "needs JAX_COORDINATOR_ADDRESS or --coordinator, "
         "JAX_PROCESS_ID or --process-id too"),
    ]  # fmt: skip
    for environ, message in bad:
        with pytest.raises(ValueError, match=message):
            distributed.settings(environ=environ)


def test_bad_flag_is_a_cli_error(cli_error, data, tmp_path):
    err = cli_error(["train", "--config", "configs/tiny.py", "--workdir", tmp_path / "run",
                     f"--config.data.path={data}", "--coordinator", "127.0.0.1:1",
                     "--num-processes", "2", "--process-id", "5"])  # fmt: skip
    assert "error: --process-id=5: expected a process id in [0, 2) (--num-processes=2)" in err
