"""data_gen on Ray (data_gen.cluster), on a local Ray with 2 CPUs and the tiny random models
of test_data_gen: the Ray run writes the single-process run's folder byte for byte, also when
an actor dies in the middle of a chunk or the driver is killed and run again; bad --ray input
fails before anything loads."""

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
ray = pytest.importorskip("ray")

from data_gen import cluster  # noqa: E402
from data_gen import run as R  # noqa: E402
from data_gen.guidance import render_guidance  # noqa: E402
from tests import test_data_gen as single  # noqa: E402

models, head = single.models, single.head  # its fixtures: tiny models, a small mesh head
ROOT = Path(__file__).resolve().parents[1]
N = 8  # images, in chunks of 2 (_argv's --batch)


@pytest.fixture(scope="module")
def address():
    """A local Ray for this module (2 CPUs) -> its address, for drivers in subprocesses."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _args(models, head, out, *extra) -> list[str]:
    return single._argv(models, out, ("pose",), N, "--head-mesh", str(head), *extra)


def _files(out: Path) -> dict[str, bytes]:
    """Every file under `out` (images, guidance, dataset.json, manifest, ...) -> its bytes."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}  # fmt: skip


def _on_ray(models, head, out, actors: int = 2, **kwargs) -> R.Summary:
    job, opts = R.job_from_args(R.build_parser().parse_args(_args(models, head, out)))
    return cluster.make_dataset(job, out, N, actors=actors, progress=False, **opts, **kwargs)


@pytest.fixture(scope="module")
def reference(models, head, tmp_path_factory) -> dict[str, bytes]:
    """The single-process run's folder."""
    out = tmp_path_factory.mktemp("reference")
    assert R.main(_args(models, head, out)) == 0
    return _files(out)


def test_ray_run_equals_the_single_process_run_despite_a_dead_actor(
    address, models, head, reference, tmp_path
):
    """The actor making chunk [2, 3] writes image 2, then dies before image 3; Ray restarts
    it and retries the chunk, which writes image 3 only. Two actors share the folder."""
    out, marker = tmp_path / "set", tmp_path / "actor-exited"
    summary = _on_ray(models, head, out, exit_at=(3, str(marker)))
    assert marker.exists()  # the actor did die
    assert (summary.generated, summary.skipped, summary.gaps) == (N, 0, [])
    assert _files(out) == reference


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(0.05)


def test_interrupted_or_killed_driver_resumes(address, models, head, reference, tmp_path):
    """A driver in a subprocess killed outright once it has written an image, then a rerun:
    it makes the missing images only, and the folder is the single-process one. (Ctrl-C
    timed on the first image raced with a run finishing first on CI: to be redone with a
    deterministic interrupt.)"""
    out = tmp_path / "set"
    images = lambda: sorted(out.glob("0*/img*.png"))
    seen = len(images())
    cmd = [sys.executable, "-m", "data_gen.run", *_args(models, head, out), "--ray", address]
    driver = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait(lambda: len(images()) > seen or driver.poll() is not None, 180, "new image")
        os.killpg(driver.pid, signal.SIGKILL)
        output = driver.communicate(timeout=60)[0]
    finally:
        driver.kill()
    assert driver.returncode == -signal.SIGKILL, output
    kept = {p: p.stat().st_mtime_ns for p in images()}
    assert len(kept) < N and not (out / "dataset.json").exists()

    summary = _on_ray(models, head, out, actors=1)
    assert summary.skipped >= len(kept) and summary.generated + summary.skipped == N
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # none made again
    assert _files(out) == reference


def test_bad_ray_input_fails_before_anything_loads(models, head, tmp_path, capsys, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "set"
    cases = [
        (["--ray", f"127.0.0.1:{port}"], f"--ray 127.0.0.1:{port}: no Ray cluster answers there"),
        (["--ray", "head-node"], "--ray head-node: expected HOST:PORT"),
        (["--actors", "2"], "--actors 2: only with --ray"),
    ]
    for extra, message in cases:
        assert R.main(_args(models, head, out, *extra)) == 2
        assert f"error: {message}" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as without the [ray] extra
    assert R.main(_args(models, head, out, "--ray")) == 2
    err = capsys.readouterr().err
    assert (
        "error: --ray: Ray is not installed" in err and "pip install 'styleavatar-jax[ray]'" in err
    )
    assert not out.exists()


def test_a_used_mesh_head_travels_to_actors(models, head):
    """Jobs are pickled to the actors: a mesh head whose trimesh caches are built (an rtree
    that trimesh pickles empty) must render the same guidance after the trip."""
    job, _ = R.job_from_args(R.build_parser().parse_args(_args(models, head, "unused")))
    first = render_guidance(job.cfg.cameras, ("pose",), np.arange(2), job.head)
    again = pickle.loads(pickle.dumps(job.head))
    np.testing.assert_array_equal(
        render_guidance(job.cfg.cameras, ("pose",), np.arange(2), again)["pose"], first["pose"]
    )
