"""convert-eg3d end to end, and every kind of bad input it must name clearly."""

import json
import pickle

import numpy as np
import pytest

from styleavatar_jax import checkpoint
from styleavatar_jax.cli import main
from styleavatar_jax.convert import eg3d
from styleavatar_jax.convert.snapshot import convert_state_dict

from .conftest import IO, PKL


def test_convert_with_check_writes_a_loadable_run_dir(tmp_path, capsys, converted):
    out = tmp_path / "run"
    assert main(["convert-eg3d", str(PKL), str(out), "--check", str(IO)]) == 0
    text = capsys.readouterr().out
    assert "FAIL" not in text and "image " in text and "logits" in text
    cfg = checkpoint.load_config(out)
    assert cfg.model.neural_res == 32 and cfg.model.generator.sr_kind == "SuperresolutionHybrid2X"
    assert cfg.model.generator.render.depth_resolution == 12 and cfg.camera.radius == 2.7
    nets = checkpoint.load_networks(out, ["G_ema", "G", "D"])
    _, ref, _ = converted
    for name in ("G_ema", "G", "D"):
        for a, b in zip(_leaves(nets[name]), _leaves(ref[name]), strict=True):
            np.testing.assert_array_equal(a, b)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_check_writes_nothing(tmp_path, capsys):
    io = dict(np.load(IO))
    io["image"] = io["image"] + 0.01  # a reference our conversion cannot match
    bad = tmp_path / "bad_io.npz"
    np.savez(bad, **io)
    out = tmp_path / "run"
    assert main(["convert-eg3d", str(PKL), str(out), "--check", str(bad)]) == 1
    assert "image" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [bad]


def test_refuses_non_empty_out_dir(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["convert-eg3d", str(PKL), str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_refuses_pickle_with_foreign_global(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": Evil()}))
    assert main(["convert-eg3d", str(bad), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "evil.pkl" in err and "system" in err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run").exists()


def test_refuses_truncated_pickle(tmp_path, capsys):
    bad = tmp_path / "cut.pkl"
    bad.write_bytes(PKL.read_bytes()[: len(PKL.read_bytes()) // 2])
    assert main(["convert-eg3d", str(bad), str(tmp_path / "run")]) == 2
    assert "cut.pkl" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _state_dict_npz(tmp_path, edit=None):
    io = np.load(IO)
    sd = {k: io[k] for k in io.files if k.startswith(("G_ema/", "D/"))}
    sd = {k.replace("/", ".", 1): v for k, v in sd.items()}
    if edit:
        edit(sd)
    path = tmp_path / "sd.npz"
    np.savez(path, **sd)
    return path


def test_state_dict_with_config_equals_pickle(tmp_path, converted):
    _, ref, _ = converted
    from styleavatar_jax.typed_config import load_config_file

    cfg = load_config_file("configs/eg3d_ffhq512.py:tiny")
    out_cfg, nets, _ = convert_state_dict(_state_dict_npz(tmp_path), cfg)
    assert set(nets) == {"G_ema", "D"}
    for name in ("G_ema", "D"):
        for a, b in zip(_leaves(nets[name]), _leaves(ref[name]), strict=True):
            np.testing.assert_array_equal(a, b)


def test_state_dict_needs_config(tmp_path, capsys):
    assert main(["convert-eg3d", str(_state_dict_npz(tmp_path)), str(tmp_path / "run")]) == 2
    assert "needs --config" in capsys.readouterr().err


def test_missing_key_is_named(tmp_path, capsys):
    path = _state_dict_npz(tmp_path, lambda sd: sd.pop("G_ema.decoder.net.0.weight"))
    rc = main(
        [
            "convert-eg3d",
            str(path),
            str(tmp_path / "run"),
            "--config",
            "configs/eg3d_ffhq512.py:tiny",
        ]
    )
    assert rc == 2
    assert "missing key 'decoder.net.0.weight'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_shape_mismatch_is_named(tmp_path, capsys):
    def edit(sd):
        sd["G_ema.backbone.mapping.fc0.weight"] = np.zeros((3, 3), np.float32)

    rc = main(
        [
            "convert-eg3d",
            str(_state_dict_npz(tmp_path, edit)),
            str(tmp_path / "run"),
            "--config",
            "configs/eg3d_ffhq512.py:tiny",
        ]
    )
    assert rc == 2
    assert "'backbone.mapping.fc0.weight' has shape (3, 3)" in capsys.readouterr().err


def test_architecture_overrides_are_checked(tmp_path, capsys):
    rc = main(
        [
            "convert-eg3d",
            str(_state_dict_npz(tmp_path)),
            str(tmp_path / "run"),
            "--config",
            "configs/eg3d_ffhq512.py:tiny",
            "--config.model.generator.channel_max=32",
        ]
    )
    assert rc == 2  # the weights are for channel_max 16
    assert "has shape" in capsys.readouterr().err


def test_unknown_init_kwargs_are_named():
    kwargs = json.loads(str(np.load(IO)["init_kwargs"]))["G"]
    with pytest.raises(ValueError, match=r"unsupported EG3D init kwargs \['bogus'\]"):
        eg3d.generator_config({**kwargs, "bogus": 1})


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)
