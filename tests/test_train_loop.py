"""The training loop: kill-and-resume is bit-exact, checkpoints are run directories, bad
input fails before any work, a NaN stops the run with the last good checkpoint kept."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from styleavatar_jax import cameras, checkpoint
from styleavatar_jax.data.eg3d_format import EG3DWriter
from styleavatar_jax.train import loop
from styleavatar_jax.typed_config import load_config_file


@pytest.fixture(scope="module", autouse=True)
def _fast(fast_compile):
    """Compile-bound module: see conftest.fast_compile."""


def _mesh(n):
    return Mesh(np.array(jax.devices()[:n]), ("data",))


def _write_dataset(path, n=16, res=64, seed=0):
    """Random smooth images with valid 360° cameras (the loop does not care what they show)."""
    rng = np.random.default_rng(seed)
    labels = cameras.random_labels(seed, n)
    w = EG3DWriter(path)
    for i in range(n):
        img = np.kron(rng.integers(0, 256, (res // 8, res // 8, 3)), np.ones((8, 8, 1)))
        w.write(i, img.astype(np.uint8), labels[i], {})
    return w.finish()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(_write_dataset(tmp_path_factory.mktemp("data") / "ds").parent)


def _cfg(data, *more):
    return load_config_file(
        "configs/tiny.py",
        [f"--config.data.path={data}", "--config.train.total_kimg=0.016",  # 4 steps of 4
         "--config.run.checkpoint_kimg=1", "--config.run.snapshot_kimg=0", *more],
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """An uninterrupted 4-step run, and one SIGTERMed after step 2 then resumed."""
    root = tmp_path_factory.mktemp("runs")
    full = loop.train(_cfg(data, "--config.run.snapshot_kimg=0.008"), root / "full",
                      mesh=_mesh(2), progress=False)  # fmt: skip

    def kill_at_2(step, state, metrics):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    first = loop.train(_cfg(data), root / "killed", mesh=_mesh(2), progress=False,
                       callbacks=[kill_at_2])  # fmt: skip
    resumed = loop.train(_cfg(data), root / "killed", mesh=_mesh(2), progress=False,
                         resume=True)  # fmt: skip
    return full, first, resumed


def test_kill_and_resume_is_bit_exact(runs):
    full, first, resumed = runs
    assert (full.status, full.step) == ("finished", 4)
    assert (first.status, first.step) == ("interrupted", 2)
    assert (resumed.status, resumed.step) == ("finished", 4)
    a = jax.tree_util.tree_leaves_with_path(jax.device_get(full.state))
    b = jax.tree.leaves(jax.device_get(resumed.state))
    for (path, x), y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=f"state{jax.tree_util.keystr(path)}")
    # The killed run saved step 2; the resumed run step 4 (keep_checkpoints=2).
    steps = sorted(int(p.name) for p in (first.workdir / "checkpoints").iterdir())
    assert steps == [2, 4]


def test_a_signal_during_logging_still_saves_the_step_it_reports(data, tmp_path, monkeypatch):
    """The signal handler is a thread: a SIGTERM landing after the loop decided not to save
    this step (here: while it logs) must not end the run unsaved. It stops after the next
    step, with that step saved."""
    log_scalars = loop._log_scalars

    def log_then_signal(run, pos, *args):
        log_scalars(run, pos, *args)
        if pos.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)  # the flag is set while this step is still being handled

    monkeypatch.setattr(loop, "_log_scalars", log_then_signal)
    r = loop.train(_cfg(data, "--config.run.log_steps=1"), tmp_path / "run", mesh=_mesh(2),
                   progress=False)  # fmt: skip
    assert (r.status, r.step) == ("interrupted", 2)
    assert checkpoint.list_steps(r.workdir) == [2]


def test_the_fade_compiles_each_resolution_ahead_and_trains_the_same(data, tmp_path):
    """Neural resolution 16 -> 18 over two steps (EG3D's fade, compressed): the programs
    step 1 runs at 18 are compiled in the background while step 0 runs, none twice, nothing
    past the run's end, and the run equals one that compiles each resolution on first use."""
    fade = ["--config.train.neural_res_final=24", "--config.train.neural_res_fade_kimg=0.016",
            "--config.train.total_kimg=0.008"]  # fmt: skip
    ahead = loop.train(_cfg(data, *fade), tmp_path / "ahead", mesh=_mesh(1), progress=False)
    # res 16: its step-0 phases (all four) + finish; 18: step 1's Gmain and Dmain, ahead.
    assert ahead.compile_stats["compiled"] == 4 + 1 + 2
    plain = loop.train(_cfg(data, *fade, "--config.run.compile_ahead=false"), tmp_path / "plain",
                       mesh=_mesh(1), progress=False)  # fmt: skip
    assert plain.compile_stats["compiled"] == 0  # every program was already in the table
    for a, b in zip(jax.tree.leaves(ahead.state), jax.tree.leaves(plain.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_restart_with_the_compile_cache_does_not_compile_the_phases(data, tmp_path):
    """`train --compile-cache DIR`: the first run stores its programs, a second run of the
    same config (a restart) loads every training phase from DIR."""
    cache = tmp_path / "xla"
    argv = [sys.executable, "-m", "styleavatar_jax.cli", "train", "--config", "configs/tiny.py",
            "--compile-cache", str(cache), "--no-progress", f"--config.data.path={data}",
            "--config.train.total_kimg=0.004", "--config.run.snapshot_kimg=0"]  # fmt: skip
    # Keep every program (by default only those that took ≥ 1 s to compile are kept).
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1", XLA_FLAGS="",  # one device
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # fmt: skip
    first = subprocess.run([*argv, "--workdir", str(tmp_path / "a")], env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert any(p.name.startswith("jit__phase") for p in cache.iterdir())
    env["JAX_LOG_COMPILES"] = "1"  # logs persistent-cache hits and misses
    out = subprocess.run([*argv, "--workdir", str(tmp_path / "b")], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    hits = re.findall(r"Persistent compilation cache hit for '(jit__phase)'", out.stderr)
    misses = re.findall(r"Persistent compilation cache miss for '(jit__phase)'", out.stderr)
    assert len(hits) == 5 and not misses  # Gmain, Greg, Dmain, Dreg, finish


def test_run_directory_serves_sample_and_logs(runs):
    full = runs[0]
    nets = checkpoint.load_networks(full.workdir, ["G_ema", "D"])
    assert "params" in nets["G_ema"] and "buffers" in nets["G_ema"]
    cfg = checkpoint.load_config(full.workdir)
    assert cfg.model.generator.sr_kind == "SuperresolutionCPU2X"
    snaps = sorted(p.name for p in (full.workdir / "snapshots").iterdir())
    assert snaps == ["00000.000kimg.png", "00000.008kimg.png", "00000.016kimg.png"]
    assert any((full.workdir / "tb").iterdir())


def test_existing_run_needs_resume_and_same_config(runs, data):
    workdir = runs[1].workdir
    with pytest.raises(FileExistsError, match="--resume"):
        loop.train(_cfg(data), workdir, mesh=_mesh(2), progress=False)
    with pytest.raises(ValueError, match=r"config\.train\.lr_d: 0\.002 in the run, 0\.003 given"):
        loop.train(_cfg(data, "--config.train.lr_d=0.003"), workdir, resume=True, mesh=_mesh(2))
    # total_kimg and run.* may change on resume: this one has nothing left to do.
    r = loop.train(_cfg(data, "--config.run.log_steps=1"), workdir, resume=True, mesh=_mesh(2),
                   progress=False)  # fmt: skip
    assert (r.status, r.step) == ("finished", 4)


def test_damaged_checkpoint_is_a_clear_error(runs, data, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(runs[1].workdir, workdir)
    for f in (workdir / "checkpoints" / "4" / "D").rglob("*"):
        if f.is_file() and "ocdbt" in str(f.relative_to(workdir)):
            f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"step 4 .* its item D cannot be read.*previous step, 2"):
        loop.train(_cfg(data), workdir, resume=True, mesh=_mesh(2), progress=False)


def test_nan_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    real_step = loop.Trainer.step

    def poisoned(self, state, batch, key, sched, **kw):
        state, metrics = real_step(self, state, batch, key, sched, **kw)
        if int(state.step) == 3:
            metrics = {**metrics, "G/loss": metrics["G/loss"] * np.nan}
        return state, metrics

    monkeypatch.setattr(loop.Trainer, "step", poisoned)
    cfg = _cfg(data, "--config.run.checkpoint_kimg=0.004", "--config.run.log_steps=1",
               "--config.run.keep_checkpoints=5")  # fmt: skip
    with pytest.raises(loop.TrainingDiverged, match=r"step 3: losses \['G/loss'\]"):
        loop.train(cfg, tmp_path / "run", mesh=_mesh(2), progress=False)
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()) == [1, 2]


def test_bad_input_fails_before_work(data, tmp_path):
    with pytest.raises(ValueError, match="config.data.path is empty"):
        loop.train(_cfg(""), tmp_path / "a", mesh=_mesh(2))
    with pytest.raises(ValueError, match="unknown config key 'lr_gg'"):
        _cfg(data, "--config.train.lr_gg=1")
    small = _write_dataset(tmp_path / "small", n=4, res=32).parent
    with pytest.raises(ValueError, match=r"images are 32², but config\.model\.discriminator"):
        loop.train(_cfg(small), tmp_path / "b", mesh=_mesh(2))
    with pytest.raises(ValueError, match=r"batch_size=4 must be divisible by the 8 devices"):
        loop.train(_cfg(data), tmp_path / "c", mesh=_mesh(8))
    with pytest.raises(ValueError, match=r"config\.train: .*batch_size=0"):
        loop.train(_cfg(data, "--config.train.batch_size=0"), tmp_path / "d", mesh=_mesh(2))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_init_from_eg3d_snapshot(converted):
    from styleavatar_jax.train.config import training_configs
    from styleavatar_jax.train.state import init_state, make_networks
    from tests.conftest import PKL

    tc = training_configs(load_config_file("configs/eg3d_ffhq512.py:tiny"))
    nets = make_networks(tc.generator, tc.discriminator, tc.train, tc.pose)
    fresh = init_state(nets, jax.random.key(0))
    state = loop._init_from(str(PKL), nets, fresh)
    _, networks, _ = converted
    for name, ours in (("G", state.g), ("G_ema", state.g_ema), ("D", state.d)):
        for a, b in zip(jax.tree.leaves(ours["params"]), jax.tree.leaves(networks[name]["params"]),
                        strict=True):  # fmt: skip
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Adam starts from zero moments for the loaded weights.
    assert all(float(np.abs(x).max()) == 0 for x in jax.tree.leaves(state.g_opt) if x.ndim)
    tc2 = training_configs(load_config_file("configs/tiny.py"))
    other = make_networks(tc2.generator, tc2.discriminator, tc2.train, tc2.pose)
    with pytest.raises(
        ValueError, match=r"generator differs from config\.model\.generator in .*z_dim"
    ):
        loop._init_from(str(PKL), other, fresh)


def test_a_step_saved_with_one_adam_count_resumes_with_it_per_parameter(tmp_path):
    """Steps saved before Adam kept a count per parameter (one `count` leaf per optimizer)
    restore: every parameter gets that count; moments and weights are the saved ones."""
    from styleavatar_jax.train.config import training_configs
    from styleavatar_jax.train.state import init_state, make_networks

    tc = training_configs(load_config_file("configs/tiny.py"))
    nets = make_networks(tc.generator, tc.discriminator, tc.train, tc.pose)
    state = init_state(nets, jax.random.key(0))
    moved = lambda opt: (opt[0]._replace(mu=jax.tree.map(lambda m: m + 0.5, opt[0].mu)), *opt[1:])
    state = state.replace(g_opt=moved(state.g_opt), d_opt=moved(state.d_opt))
    old = state.replace(g_opt=loop._one_count(state.g_opt), d_opt=loop._one_count(state.d_opt))
    old = old.replace(g_opt=(old.g_opt[0]._replace(count=np.int32(7)), *old.g_opt[1:]),
                      d_opt=(old.d_opt[0]._replace(count=np.int32(5)), *old.d_opt[1:]))  # fmt: skip
    mngr = checkpoint.open_manager(tmp_path, keep=2)
    loop.save_state(mngr, old, {"kimg": 0.0})
    assert loop._single_adam_count(mngr, int(old.step))
    back, _ = loop.restore_state(mngr, int(old.step), state)
    for got, want in ((back.g_opt, 7), (back.d_opt, 5)):
        assert jax.tree.structure(got[0].count) == jax.tree.structure(got[0].mu)
        assert {int(c) for c in jax.tree.leaves(got[0].count)} == {want}
    for a, b in zip(jax.tree.leaves(back.g_opt[0].mu), jax.tree.leaves(state.g_opt[0].mu),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Each count its own buffer: the train step donates the state (a shared buffer would be
    # donated twice, which XLA refuses).
    bump = jax.jit(lambda o: jax.tree.map(lambda x: x + 1, o), donate_argnums=0)
    assert {int(c) for c in jax.tree.leaves(bump(back.g_opt)[0].count)} == {8}
    mngr.close()
