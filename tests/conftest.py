"""Test set-up: 8 fake CPU devices (for the sharding tests) and the EG3D fixture."""

import os

# Must happen before jax is imported anywhere: tests of sharded code use 8 host devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# float32 matmuls/convs at full precision on any backend (TF32 would break parity on GPU).
jax.config.update("jax_default_matmul_precision", "highest")

FIXTURES = Path(__file__).parent / "fixtures"
PKL = FIXTURES / "eg3d_tiny.pkl"
IO = FIXTURES / "eg3d_tiny_io.npz"


@pytest.fixture(scope="module")
def fast_compile():
    """XLA with most optimisations off, for modules that compile much and run little (the
    train tests: halves compile time, the few tiny steps run slower). Results stay float
    results of the same math; bit-exactness between two runs is unaffected."""
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture
def cli_error(capsys):
    """cli_error(argv): `styleavatar-jax argv` must fail (exit status 2) -> its message."""
    from styleavatar_jax.cli import main

    def run(argv) -> str:
        capsys.readouterr()
        assert main([str(a) for a in argv]) == 2
        return capsys.readouterr().err

    return run


@pytest.fixture(scope="session")
def io():
    """The official EG3D outputs (tests/fixtures/README.md)."""
    return dict(np.load(IO, allow_pickle=False))


@pytest.fixture(scope="session")
def neural_res(io):
    return int(json.loads(str(io["init_kwargs"]))["G_neural_rendering_resolution"])


@pytest.fixture(scope="session")
def converted():
    """(cfg, networks, (G, D)) from the EG3D pickle through the safe reader."""
    from styleavatar_jax.convert.snapshot import convert_pickle

    return convert_pickle(PKL)


def rand(seed, *shape):
    """Standard normal float32 test data from a seed."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
