"""Bad input fails before any heavy work: exit code 2, one stderr line that names the flag,
field or file, and nothing created. No test here compiles a model."""

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from styleavatar_jax import checkpoint, cli
from styleavatar_jax.train import loop
from styleavatar_jax.train.config import training_configs
from styleavatar_jax.typed_config import load_config_file

TINY = str(Path(__file__).resolve().parent.parent / "configs" / "tiny.py")


def fails(capsys, *argv, names: str) -> str:
    """cli.main(argv) exits 2 with one error line containing `names`."""
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert names in err, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def readonly(tmp_path):
    """A folder this process cannot write in (skipped when running as root can anyway)."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(d, os.W_OK) and Path("/sys").is_dir():
        d = Path("/sys")  # root: a read-only file system instead
    yield d
    (tmp_path / "ro").chmod(stat.S_IRWXU)


def test_sample_out_not_writable(capsys, readonly):
    fails(capsys, "sample", "--config", TINY, "--out", readonly / "s", names="--out=")
    assert not (readonly / "s").exists()


def test_sample_out_inside_a_file(capsys, tmp_path):
    (tmp_path / "file.pkl").write_bytes(b"x")
    err = fails(capsys, "sample", "--config", TINY, "--out", tmp_path / "file.pkl" / "s",
                names="--out=")  # fmt: skip
    assert "is a file" in err


def test_preview_out_not_writable_and_wrong_suffix(capsys, tmp_path, readonly):
    fails(capsys, "preview", tmp_path, "--out", readonly / "p.png", names="--out=")
    fails(capsys, "preview", tmp_path, "--out", tmp_path / "x.jpg", names=".png")
    assert not (tmp_path / "x.jpg").exists()


def test_train_workdir_not_creatable(capsys, tmp_path):
    fails(capsys, "train", "--config", TINY, "--workdir", "/proc/nope/wd", names="--workdir=")


@pytest.mark.parametrize("field,value", [("total_kimg", "-1"), ("r1_gamma", "nan"),
                                         ("lr_g", "inf"), ("lr_d", "0"), ("g_reg_interval", "-1"),
                                         ("d_reg_interval", "-1")])  # fmt: skip
def test_train_bad_config_field_leaves_no_workdir(capsys, tmp_path, field, value):
    wd = tmp_path / "wd"
    fails(capsys, "train", "--config", TINY, "--workdir", wd,
          f"--config.train.{field}={value}", names=f"config.train.{field}=")  # fmt: skip
    assert not wd.exists()


def test_config_spec_arg_not_taken(capsys, tmp_path):
    fails(capsys, "sample", "--config", TINY + ":foo", "--out", tmp_path / "s",
          names="get_config() takes no argument")  # fmt: skip


@pytest.mark.parametrize("argv,flag", [
    (["sample", "--neural-res=-8"], "--neural-res"),
    (["sample", "--neural-res", "0"], "--neural-res"),
    (["sample", "--batch", "0"], "--batch"),
    (["video", "--fps", "0"], "--fps"),
    (["video", "--frames", "0"], "--frames"),
    (["mesh", "--seed=-1"], "--seed"),
    (["make-dataset", "mannequin", "--num-ids", "0"], "--num-ids"),
])  # fmt: skip
def test_numeric_flags(capsys, tmp_path, argv, flag):
    out = tmp_path / ("o.ply" if argv[0] == "mesh" else "o.mp4")
    fails(capsys, *argv, "--config", TINY, "--out", out, names=f"argument {flag}")
    assert not out.exists()


def test_make_dataset_refuses_a_run_directory(capsys, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    fails(capsys, "make-dataset", "mannequin", "--out", run, names="training run directory")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json"]


def test_ckpt_pkl_points_to_convert(capsys, tmp_path):
    pkl = tmp_path / "net.pkl"
    pkl.write_bytes(b"x")
    fails(capsys, "sample", "--ckpt", pkl, "--out", tmp_path / "s", names="convert-eg3d")


def test_convert_snapshot_is_a_folder(capsys, tmp_path):
    err = fails(capsys, "convert-eg3d", tmp_path, tmp_path / "out", names="SNAPSHOT=")
    assert "is a folder" in err and not (tmp_path / "out").exists()


def test_run_dir_mode_follows_umask(tmp_path):
    nets = {"G": {"params": {"w": np.zeros(2, np.float32)}}}
    out = checkpoint.write_new_run_dir(tmp_path / "run", load_config_file(TINY), nets)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o777 & ~mask  # out: an epath.Path


def test_dataset_resolution_hint():
    tc = training_configs(load_config_file(TINY))
    source = SimpleNamespace(path="d", resolution=32, labels=np.zeros((8, 25)))
    with pytest.raises(ValueError, match="make-dataset --res 64") as e:
        loop.check_dataset(source, tc)
    assert "convert-dataset" not in str(e.value)


def test_version_and_help(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("styleavatar-jax ")
    assert cli.main(["--help"]) == 0
    assert "ConfigDicts" not in capsys.readouterr().out
    assert cli.main(["video", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 24.0)" in text and "frames per second" in text
    assert cli.main(["mesh", "--help"]) == 0
    assert "the head to mesh" in capsys.readouterr().out


def test_config_json_unchanged_by_validation(tmp_path):
    """The typed checks accept the shipped tiny config."""
    cfg = load_config_file(TINY)
    training_configs(cfg)
    assert json.loads(cfg.to_json_best_effort())["train"]["total_kimg"] > 0


def test_damaged_checkpoint_is_one_paragraph(capsys, tmp_path):
    nets = {"G_ema": {"params": {f"w{i}": np.full((8, 8), i, np.float32) for i in range(4)}}}
    run = checkpoint.write_new_run_dir(tmp_path / "run", load_config_file(TINY), nets)
    checkpoint.save_networks(run, nets, step=5)
    for f in (run / "checkpoints" / "5" / "G_ema").rglob("d/*"):
        f.write_bytes(b"")  # a data file emptied
    err = fails(capsys, "sample", "--ckpt", run, "--out", tmp_path / "s", names="step 5")
    assert "its item G_ema" in err and "previous step, 0" in err
    assert f"rm -r {run / 'checkpoints' / '5'}" in err and "--debug" in err
    assert len(err.splitlines()) == 1 and "tensorstore_spec" not in err
    assert not (tmp_path / "s").exists()
    with pytest.raises(checkpoint.DamagedCheckpoint):
        cli.main(["--debug", "sample", "--ckpt", str(run), "--out", str(tmp_path / "s")])


@pytest.mark.parametrize("argv,flag", [
    (["wdiff-data", "--gan", "G", "--clip", "C", "--num", "4", "--out", "p.txt"], "--out="),
    (["train-view-classifier", "--data", "D", "--heldout", "H", "--out", "vc.pt"], "--out="),
    (["convert-inception", "x.pth", "inc.txt"], "OUT="),
    (["eval", "--ckpt", "R", "--batch", "0"], "argument --batch"),
    (["invert", "p.png", "--ckpt", "R", "--steps-w=-1"], "argument --steps-w"),
    (["dataset-info", "D", "--plot", "cams.jpg"], "--plot="),
])  # fmt: skip
def test_more_commands_check_first(capsys, tmp_path, monkeypatch, argv, flag):
    monkeypatch.chdir(tmp_path)
    fails(capsys, *argv, names=flag)
    assert list(tmp_path.iterdir()) == []


def test_demo_reads_the_repositorys_config(cli_error, tmp_path):
    """The README's first command finds configs/demo.py (a moved module once looked for it
    inside the package): a bad override of it is reported, so the file was read."""
    out = tmp_path / "demo"
    msg = cli_error(["demo", "--out", out, "--config.train.total_kimg=-1"])
    assert "total_kimg" in msg and "no such file" not in msg, msg
    assert not out.exists()


def test_overrides_parse_as_the_fields_type():
    """A string field takes the text as it is: `pose.mode=none` is the mode "none" (it was
    None once, and refused); other fields take none/null as None."""
    from styleavatar_jax.typed_config import apply_overrides, load_config_file

    overrides = ["--config.pose.mode=none", "--config.pose.label_mix=coarse_always",
                 "--config.train.r1_gamma=2", "--config.sample.truncation_cutoff=none"]  # fmt: skip
    cfg = apply_overrides(load_config_file("configs/mannequin64.py"), overrides)
    assert cfg.pose.mode == "none" and cfg.pose.label_mix == "coarse_always"
    assert cfg.train.r1_gamma == 2.0 and cfg.sample.truncation_cutoff is None
