"""pytorch-fid's Inception weights (`pt_inception-2015-12-05-6726825d.pth`) -> Flax variables.

The .pth is a torch state dict with torchvision names (`Mixed_5b.branch1x1.conv.weight`,
`....bn.{weight,bias,running_mean,running_var}`, `fc.{weight,bias}`). It is read with the
torch-free, allow-listing unpickler (`convert/safe_pickle.py`); no torch needed. A key
maps to the Flax path of the same names: conv `weight` [O, I, kh, kw] -> `kernel`
[kh, kw, I, O]; bn `weight`/`bias` -> params `scale`/`bias`; `running_mean`/`running_var`
-> batch_stats `mean`/`var`. `num_batches_tracked` and the classifier `fc.*` (unused by
FID) are dropped. `save_npz` writes the result as a flat .npz ('params/Mixed_5b/...'),
which `load_inception` also reads.

    styleavatar-jax convert-inception pt_inception-2015-12-05-6726825d.pth inception.npz
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import flax
import jax
import numpy as np

from styleavatar_jax.convert import safe_pickle
from styleavatar_jax.files import load_npz, write_npz
from styleavatar_jax.models import inception

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_NAME
)
NO_WEIGHTS_METRICS = ("swd", "consistency")
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}  # fmt: skip
_IGNORED = ("num_batches_tracked", "fc.weight", "fc.bias")


def weights_help() -> str:
    return (
        f"FID and KID need pytorch-fid's Inception weights: download {WEIGHTS_URL} (then give "
        f"the .pth, or convert it once with `styleavatar-jax convert-inception {WEIGHTS_NAME} "
        f"inception.npz`). Metrics that need no weights: {', '.join(NO_WEIGHTS_METRICS)}"
    )


def missing_weights_message(path: str | os.PathLike, flag: str = "--inception") -> str:
    return f"{flag} {path}: no such file. {weights_help()}"


def _flax_key(name: str) -> tuple[str, ...]:
    """'Mixed_5b.branch1x1.conv.weight' -> ('params', 'Mixed_5b', 'branch1x1', 'conv', 'kernel')."""
    *module, leaf = name.split(".")
    if module and module[-1] == "conv" and leaf == "weight":
        return ("params", *module, "kernel")
    if module and module[-1] == "bn" and leaf in _BN:
        collection, new = _BN[leaf]
        return (collection, *module, new)
    return ("?", name)


def from_state_dict(state_dict: dict[str, np.ndarray], where: str) -> dict:
    """torchvision-named Inception state dict -> {'params': ..., 'batch_stats': ...} float32.

    Every variable of `inception.InceptionV3` must be present with its shape; extra keys
    (other than `num_batches_tracked` and `fc.*`) are refused, naming them."""
    expected = flax.traverse_util.flatten_dict(inception.variable_shapes())
    flat, unknown = {}, []
    for name, value in state_dict.items():
        if name.endswith(_IGNORED):
            continue
        key = _flax_key(name)
        if key not in expected:
            unknown.append(name)
            continue
        value = np.asarray(value, np.float32)
        if key[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{where}: {name} has shape {value.shape} after conversion, expected "
                f"{expected[key].shape} for pytorch-fid's FID Inception"
            )
        flat[key] = value
    missing = [".".join(k[1:]) for k in expected if k not in flat]
    if unknown or missing:
        raise ValueError(
            f"{where}: not pytorch-fid's FID Inception state dict ({WEIGHTS_NAME}): "
            f"unexpected keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''}, "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    return flax.traverse_util.unflatten_dict(flat)


def _from_npz(path: Path, flag: str) -> dict:
    """A `save_npz` file -> variables (checked like a state dict)."""
    flat = {tuple(k.split("/")): v for k, v in load_npz(path, flag).items()}
    expected = flax.traverse_util.flatten_dict(inception.variable_shapes())
    wrong = sorted(
        "/".join(k) for k in set(flat) | set(expected)
        if k not in flat or k not in expected or flat[k].shape != expected[k].shape
    )  # fmt: skip
    if wrong:
        raise ValueError(
            f"{path}: not a converted FID Inception .npz (made by convert-inception): "
            f"{len(wrong)} variables missing, unexpected or misshapen, e.g. {wrong[:3]}"
        )
    return flax.traverse_util.unflatten_dict({k: v.astype(np.float32) for k, v in flat.items()})


def load_inception(path: str | os.PathLike, flag: str = "--inception") -> dict:
    """pytorch-fid's .pth (or a torch.save of the same state dict) or our converted .npz ->
    Flax variables of `inception.InceptionV3`. A missing file -> FileNotFoundError saying
    where to get it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_weights_message(path, flag))
    if path.suffix == ".npz":
        return _from_npz(path, flag)
    return from_state_dict(safe_pickle.load_state_dict(path), str(path))


def save_npz(variables: dict, out: str | os.PathLike) -> Path:
    """variables -> flat .npz ('params/Mixed_5b/branch1x1/conv/kernel', ...), atomically."""
    flat = flax.traverse_util.flatten_dict(jax.device_get(variables))
    return write_npz(out, **{"/".join(k): np.asarray(v, np.float32) for k, v in flat.items()})


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (recorded with every FID so results name their weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
