"""The safe EG3D/torch pickle reader: bit-equal to the official state dicts, and refuses code.

tests/fixtures/torch_state_dict_small.pt (zip format) and torch_state_dict_small_legacy.pt
(`_use_new_zipfile_serialization=False`) were written by real torch 2.13.0+cpu, outside
this repo, with:

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(12, dtype=torch.float32).reshape(3, 4) / 8)
        net[0].bias.copy_(torch.tensor([-1.0, 0.5, 2.0]))
        net[1].running_mean.copy_(torch.tensor([0.25, -0.25, 1.0]))
        net[1].num_batches_tracked.fill_(7)
    sd = net.state_dict()
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) - 3.5
    sd["extra.transposed"] = base.t()           # stride (1, 6)
    sd["extra.sliced"] = base[1:3, 2:5]          # storage offset 8, stride (6, 1)
    sd["extra.half"] = torch.tensor([1.5, -2.25, 65504.0], dtype=torch.float16)
    sd["extra.bf16"] = torch.tensor([1.0, -3.0, 0.15625], dtype=torch.bfloat16)
    sd["extra.mask"] = torch.tensor([True, False, True])
    sd["extra.scalar"] = torch.tensor(3, dtype=torch.int32)
    torch.save(sd, "torch_state_dict_small.pt")
    torch.save(sd, "torch_state_dict_small_legacy.pt", _use_new_zipfile_serialization=False)

`expected_small()` rebuilds the same values with numpy (torch.load of both files agrees).
"""

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from styleavatar_jax.convert.safe_pickle import (
    UnsafePickleError,
    load_eg3d_pickle,
    load_state_dict,
)

FIXTURES = Path(__file__).parent / "fixtures"
PKL = FIXTURES / "eg3d_tiny.pkl"
IO = FIXTURES / "eg3d_tiny_io.npz"
PT = FIXTURES / "torch_state_dict_small.pt"
PT_LEGACY = FIXTURES / "torch_state_dict_small_legacy.pt"


@pytest.fixture(scope="module")
def snap():
    return load_eg3d_pickle(PKL)


def _section(io: dict, net: str) -> dict:
    return {k[len(net) + 1 :]: v for k, v in io.items() if k.startswith(f"{net}/")}


def assert_bit_equal(got: dict, want: dict) -> None:
    assert list(got) == list(want)  # same keys, in torch's state_dict order
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert np.array_equal(got[k], v), k


@pytest.mark.parametrize("net", ["G_ema", "D"])
def test_state_dict_bit_equal_to_official(snap, io, net):
    """io: the official EG3D state dicts and outputs (conftest.py)."""
    assert_bit_equal(getattr(snap, net).state_dict, _section(io, net))


def test_init_kwargs_and_attributes(snap, io):
    kwargs = json.loads(str(io["init_kwargs"]))
    for net in ("G", "G_ema", "D"):
        key = net[0]
        assert json.loads(json.dumps(getattr(snap, net).init_kwargs)) == kwargs[key], net
        assert getattr(snap, net).class_name == kwargs[f"{key}_class"]
    res = kwargs["G_neural_rendering_resolution"]
    assert snap.G_ema.attributes["neural_rendering_resolution"] == res == 32
    assert snap.G_ema.attributes["rendering_kwargs"] == kwargs["G"]["rendering_kwargs"]
    assert snap.training_set_kwargs["class_name"] == "training.dataset.ImageFolderDataset"


def test_G_differs_from_G_ema(snap):
    assert list(snap.G.state_dict) == list(snap.G_ema.state_dict)
    differ = [
        k for k, v in snap.G.state_dict.items() if not np.array_equal(v, snap.G_ema.state_dict[k])
    ]
    assert differ  # the fixture perturbs G after copying it to G_ema


def test_npz_state_dict_with_prefix(snap):
    assert_bit_equal(load_state_dict(IO, prefix="D"), snap.D.state_dict)


def test_npz_small_and_object_arrays(tmp_path):
    np.savez(tmp_path / "w.npz", **{"a.weight": np.eye(2, dtype=np.float32)})
    assert_bit_equal(load_state_dict(tmp_path / "w.npz"), {"a.weight": np.eye(2, dtype=np.float32)})
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="obj.npz"):
        load_state_dict(tmp_path / "obj.npz")


def expected_small() -> dict:
    base = np.arange(24, dtype=np.float32).reshape(4, 6) - 3.5
    f32 = lambda *v: np.array(v, np.float32)
    return {
        "0.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 8,
        "0.bias": f32(-1, 0.5, 2),
        "1.weight": f32(1, 1, 1),
        "1.bias": f32(0, 0, 0),
        "1.running_mean": f32(0.25, -0.25, 1),
        "1.running_var": f32(1, 1, 1),
        "1.num_batches_tracked": np.array(7, np.int64),
        "extra.transposed": base.T,
        "extra.sliced": base[1:3, 2:5],
        "extra.half": np.array([1.5, -2.25, 65504], np.float16),
        "extra.bf16": f32(1, -3, 0.15625),  # numpy has no bfloat16: widened exactly
        "extra.mask": np.array([True, False, True]),
        "extra.scalar": np.array(3, np.int32),
    }


@pytest.mark.parametrize("path", [PT, PT_LEGACY], ids=["zip", "legacy"])
def test_real_torch_save(path):
    assert_bit_equal(load_state_dict(path), expected_small())


def _torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    """A torch.save-style zip: <root>/data.pkl, <root>/data/<key>."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        for key, raw in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def test_nested_state_dict_flattened_and_prefix(tmp_path):
    with zipfile.ZipFile(PT) as src:
        files = {n[len("torch_state_dict_small/data/") :]: src.read(n) for n in src.namelist()}
        data_pkl = src.read("torch_state_dict_small/data.pkl")
    assert data_pkl[:2] == b"\x80\x02" and data_pkl[-1:] == b"."
    # {'G_ema': <the original OrderedDict>}: EMPTY_DICT, key, original body, SETITEM, STOP.
    nested = b"\x80\x02}X\x05\x00\x00\x00G_ema" + data_pkl[2:-1] + b"s."
    path = _torch_zip(
        tmp_path / "nested.pt", nested, {k: v for k, v in files.items() if k.isdigit()}
    )
    flat = load_state_dict(path)
    assert list(flat) == [f"G_ema.{k}" for k in expected_small()]
    assert_bit_equal(load_state_dict(path, prefix="G_ema"), expected_small())
    with pytest.raises(ValueError, match="no keys under prefix 'G'"):
        load_state_dict(path, prefix="G")


class _Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def test_refuses_os_system_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    crafted = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # protocol 0: GLOBAL, REDUCE
    # The same, hidden in a snapshot's nested torch.save bytes (torch.storage._load_from_bytes).
    nested = (
        b"\x80\x04}\x8c\x01G\x8c\rtorch.storage\x8c\x10_load_from_bytes\x93"
        + b"B"
        + len(crafted).to_bytes(4, "little")
        + crafted
        + b"\x85Rs."
    )
    cases = {
        "crafted.pkl": crafted,
        "nested.pkl": nested,
        "reduce.pkl": pickle.dumps(_Evil(f"touch {marker}")),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        requested = "posix.system" if name == "reduce.pkl" else "os.system"  # os.system.__module__
        with pytest.raises(UnsafePickleError, match=rf"{name}.*'{requested}'.*only allow-listed"):
            load_eg3d_pickle(tmp_path / name)
    with pytest.raises(UnsafePickleError, match="'os.system'"):
        load_state_dict(tmp_path / "crafted.pkl")
    assert not marker.exists()


def test_refuses_pickled_module_and_eg3d_globals_in_state_dict(tmp_path):
    module = b"\x80\x02ctorch.nn.modules.linear\nLinear\nq\x00)\x81q\x01}b."
    path = _torch_zip(tmp_path / "module.pt", module)
    with pytest.raises(UnsafePickleError, match="module.pt.*'torch.nn.modules.linear.Linear'"):
        load_state_dict(path)
    with pytest.raises(
        UnsafePickleError, match="torch_utils.persistence._reconstruct_persistent_obj"
    ):
        load_state_dict(PKL)


def test_strides_outside_storage_are_rejected(tmp_path):
    # One FloatStorage of 12 elements viewed as [3, 4] with stride (4, 5): reaches element 23.
    tensor = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
        b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x0ctQK\x00K\x03K\x04\x86K\x04K\x05\x86\x89}tR."
    )
    path = _torch_zip(
        tmp_path / "strided.pt",
        b"\x80\x02}X\x01\x00\x00\x00w" + tensor[2:-1] + b"s.",
        {"0": bytes(48)},
    )
    with pytest.raises(ValueError, match=r"strided.pt: w: tensor size \(3, 4\) stride \(4, 5\)"):
        load_state_dict(path)


def test_truncated_snapshot(tmp_path):
    path = tmp_path / "truncated.pkl"
    path.write_bytes(PKL.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"truncated.pkl: cannot read as an EG3D network snapshot"):
        load_eg3d_pickle(path)


@pytest.mark.parametrize(
    "data, message",
    [
        (
            pickle.dumps({"state_dict": [1, 2], "step": 3}),
            r"expected an EG3D network snapshot \(a dict with 'G', 'D', 'G_ema'",
        ),
        (pickle.dumps([1, 2, 3]), "expected an EG3D network snapshot"),
        (b"not a pickle at all", r"not a pickle \(it starts like text\); expected an EG3D"),
    ],
)
def test_foreign_files(tmp_path, data, message):
    path = tmp_path / "foreign.pkl"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=f"foreign.pkl: {message}"):
        load_eg3d_pickle(path)


def test_reader_imports_no_torch_nor_eg3d_code():
    code = (
        "import sys; from styleavatar_jax.convert.safe_pickle import load_eg3d_pickle; "
        f"load_eg3d_pickle({str(PKL)!r}); "
        "bad = {'torch', 'dnnlib', 'torch_utils', 'training'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
