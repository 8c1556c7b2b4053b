"""Read EG3D network snapshots and torch state dicts without running code from them.

Threat model: a pickle is a program. Loading one with `pickle.load` (or `torch.load`, or
EG3D's `legacy.load_network_pkl`) lets the file call any importable function, and EG3D's
persistence layer goes further: it `exec`s the Python source stored in each snapshot.
Users download `network-snapshot-*.pkl` files from the internet, so we never do either.

Our unpickler resolves globals from an explicit allow-list only; each name maps to a stub
of ours (plain Python + numpy) built fresh for every load, so a hostile file cannot tamper
with the stubs a later load uses. Any other global raises `UnsafePickleError` before it is
called. EG3D's `module_src` is read as a string and dropped. Tensors become numpy arrays:
storages are raw little-endian bytes and strides are bounds-checked before `as_strided`.

Layouts read (EG3D `torch_utils/persistence.py`, `training/training_loop.py`; torch 2.x
`torch/serialization.py`):
- snapshot: `{training_set_kwargs, G, D, G_ema, augment_pipe}`; each network is
  `_reconstruct_persistent_obj(meta)` with `meta.state` its `__dict__`; each tensor is a
  `_rebuild_tensor_v2` of `torch.storage._load_from_bytes(b)`, b a legacy `torch.save`.
- legacy `torch.save`: pickles of magic, protocol 1001, sys_info, the object (storages as
  persistent ids `('storage', type, key, location, numel, view)`), the sorted key list;
  then per key an int64 numel and the raw data.
- zip `torch.save`: `<root>/data.pkl` with the same persistent ids, `<root>/data/<key>`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from styleavatar_jax.files import describe_magic, load_npz

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001
_NETWORKS = ("G", "D", "G_ema")
# persistence meta stores only the bare class name; these are the EG3D files defining them.
_EG3D_MODULES = {
    "TriPlaneGenerator": "training.triplane",
    "DualDiscriminator": "training.dual_discriminator",
    "SingleDiscriminator": "training.dual_discriminator",
    "DummyDualDiscriminator": "training.dual_discriminator",
    "AugmentPipe": "training.augment",
}
# fmt: off
# torch storage type -> dtype of its raw bytes (bfloat16 is read as uint16, see _Tensor).
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "BFloat16Storage": "<u2", "ByteStorage": "u1", "CharStorage": "i1", "BoolStorage": "?",
    "ShortStorage": "<i2", "IntStorage": "<i4", "LongStorage": "<i8",
    "ComplexFloatStorage": "<c8", "ComplexDoubleStorage": "<c16",
}
# Modules EG3D pickles by reference (not persistent): only their __dict__ is kept.
_BY_REFERENCE = (
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict", "torch.nn.modules.linear.Identity",
    "torch.nn.modules.activation.Softplus", "training.triplane.OSGDecoder",
    "training.volumetric_rendering.renderer.ImportanceRenderer",
    "training.volumetric_rendering.ray_marcher.MipRayMarcher2",
    "training.volumetric_rendering.ray_sampler.RaySampler",
)
# What a corrupt or truncated file makes the unpickler or our stubs raise.
_MALFORMED = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
    AttributeError, struct.error, zipfile.BadZipFile, MemoryError, RecursionError,
)
# fmt: on
_TORCH_SAVE = ("a pickle", "a zip archive")  # describe_magic of legacy and zip torch.save files


class UnsafePickleError(ValueError):
    """The file asks for a global outside the allow-list (it may try to run code)."""


class _FileError(ValueError):
    """A problem we diagnosed; its message already names the file."""


@dataclasses.dataclass(frozen=True)
class Network:
    """One pickled EG3D network: what is needed to rebuild it, without its code."""

    class_name: str  # e.g. "training.triplane.TriPlaneGenerator"
    init_kwargs: dict[str, Any]  # as passed to the constructor; EasyDicts -> dicts
    state_dict: dict[str, np.ndarray]  # keys and order as torch's module.state_dict()
    # Public plain attributes of the object, e.g. `neural_rendering_resolution`, which the
    # training loop changes after construction (so init_kwargs cannot tell it).
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """An EG3D `network-snapshot-*.pkl`; a network the file lacks is None."""

    G: Network | None
    D: Network | None
    G_ema: Network | None
    training_set_kwargs: dict[str, Any] | None


# ---------------------------------------------------------------- stubs for allowed globals
@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


class _Storage:
    __slots__ = ("type", "numel", "data")

    def __init__(self, storage_type: _StorageType, numel: int):
        self.type, self.numel, self.data = storage_type, numel, None

    def fill(self, raw: bytes, where: str) -> None:
        if len(raw) != self.numel * self.type.dtype.itemsize:
            raise _FileError(
                f"{where}: {self.type.name} of {self.numel} elements has {len(raw)} bytes of data"
            )
        self.data = np.frombuffer(raw, self.type.dtype)


class _Tensor:
    """A tensor view of a storage, made an array once the storage holds its data."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def numpy(self, where: str) -> np.ndarray:
        data = getattr(self.storage, "data", None)
        size, stride, offset = tuple(self.size), tuple(self.stride), self.offset
        ok = (
            isinstance(data, np.ndarray)
            and data.ndim == 1
            and len(size) == len(stride)
            and all(type(v) is int and v >= 0 for v in (offset, *size, *stride))
        )
        if ok and 0 not in size:
            ok = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) < data.size
        if not ok:
            raise _FileError(
                f"{where}: tensor size {size} stride {stride} offset {offset} "
                f"does not fit its storage"
            )
        strides = [s * data.itemsize for s in stride]
        view = np.lib.stride_tricks.as_strided(data[offset:], size, strides, writeable=False)
        arr = view.astype(data.dtype.newbyteorder("="))  # a copy, in native byte order
        if self.storage.type.name == "BFloat16Storage":  # numpy has no bfloat16: exact f32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr


class _Module:
    """A torch.nn.Module's pickled `__dict__` (persistent or by-reference class)."""

    class_name, persistent = "?", False

    def __setstate__(self, state: dict) -> None:
        self.state = state


class _NpDtype:
    def __init__(self, name: str, align: bool = False, copy: bool = True):
        self.name, self.byteorder = name, "="

    def __setstate__(self, state: tuple) -> None:
        self.byteorder = state[1]


def _persistent_obj(meta: dict, *, where: str) -> _Module:
    if not (isinstance(meta, dict) and isinstance(meta.get("state"), dict)):
        raise _FileError(f"{where}: persistence meta is not a dict with a 'state' dict")
    obj = _Module()  # meta["module_src"] (EG3D's source text) is deliberately never used
    obj.class_name, obj.state, obj.persistent = str(meta.get("class_name")), meta["state"], True
    return obj


def _rebuild_tensor_v2(storage, offset, size, stride, *_unused) -> _Tensor:
    return _Tensor(storage, offset, size, stride)  # requires_grad, hooks, metadata unused


def _np_scalar(dtype: _NpDtype, data: bytes, *, where: str) -> np.generic:
    dt = np.dtype(str(dtype.name))
    if dtype.byteorder in ("<", ">"):
        dt = dt.newbyteorder(dtype.byteorder)
    if dt.hasobject or not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise _FileError(f"{where}: numpy scalar of dtype {dt} is not plain data")
    return np.frombuffer(data, dt).astype(dt.newbyteorder("="))[0]


def _allowed_globals(where: str, network: bool) -> dict[str, Any]:
    """Fresh stubs, by `module.name`: torch tensors only, or also EG3D's snapshot objects."""
    fn = functools.partial
    stubs = {f"torch.{k}": _StorageType(k, np.dtype(v)) for k, v in _STORAGE_DTYPES.items()}
    stubs |= {
        "collections.OrderedDict": collections.OrderedDict,
        "torch._utils._rebuild_tensor_v2": fn(_rebuild_tensor_v2),
        "torch._utils._rebuild_parameter": lambda data, *_: data,  # hooks, state unused
        "torch._utils._rebuild_parameter_with_state": lambda data, *_: data,
        "torch.Size": lambda dims=(): tuple(dims),
        "torch.device": lambda *args: ":".join(map(str, args)),
    }
    if network:
        for name in _BY_REFERENCE:
            stubs[name] = type(name.rsplit(".", 1)[1], (_Module,), {"class_name": name})
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            stubs[f"{mod}.scalar"] = fn(_np_scalar, where=where)
        for mod in ("builtins", "__builtin__"):  # protocol-2 pickles name the latter
            stubs |= {f"{mod}.{t.__name__}": t for t in (set, frozenset, slice)}
        stubs |= {
            "torch_utils.persistence._reconstruct_persistent_obj": fn(_persistent_obj, where=where),
            "torch.storage._load_from_bytes": fn(_load_from_bytes, where=where),
            "dnnlib.util.EasyDict": type("EasyDict", (dict,), {}),
            "numpy.dtype": type("dtype", (_NpDtype,), {}),
        }
    return stubs


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, where: str, *, network: bool = False, storage=None):
        super().__init__(file)
        self._where, self._network, self._storage = where, network, storage
        self._globals = _allowed_globals(where, network)

    def find_class(self, module: str, name: str) -> Any:
        if f"{module}.{name}" in self._globals:
            return self._globals[f"{module}.{name}"]
        kind = "an EG3D network snapshot" if self._network else "a tensor state dict"
        raise UnsafePickleError(
            f"{self._where}: refusing global '{module}.{name}': only allow-listed EG3D/torch "
            f"globals are accepted in {kind} (a pickle can run arbitrary code)"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        ok = isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
        if not (ok and isinstance(pid[1], _StorageType) and self._storage is not None):
            raise _FileError(f"{self._where}: unexpected persistent id {str(pid)[:80]}")
        if len(pid) == 6 and pid[5] is not None:
            raise _FileError(f"{self._where}: storage views (torch < 1.0 files) unsupported")
        return self._storage(pid[1], str(pid[2]), int(pid[4]))


# ---------------------------------------------------------------- torch.save containers
def _read_legacy(f: BinaryIO, where: str, network: bool) -> Any:
    """Legacy (non-zip) torch.save stream -> object with filled storages."""

    def load(storage=None) -> Any:
        return _RestrictedUnpickler(f, where, network=network, storage=storage).load()

    if load() != _LEGACY_MAGIC or load() != _LEGACY_PROTOCOL:
        raise _FileError(f"{where}: not a torch.save file (bad magic number or protocol)")
    if not load().get("little_endian", False):
        raise _FileError(f"{where}: big-endian legacy torch.save files are unsupported")
    storages: dict[str, _Storage] = {}
    obj = load(lambda t, key, numel: storages.setdefault(key, _Storage(t, numel)))
    for key in load():
        (numel,) = struct.unpack("<q", f.read(8))
        if key not in storages or storages[key].numel != numel:
            raise _FileError(f"{where}: storage {key!r} does not match its pickled id")
        storages[key].fill(f.read(numel * storages[key].type.dtype.itemsize), where)
    return obj


def _load_from_bytes(data: bytes, *, where: str) -> Any:
    return _read_legacy(io.BytesIO(data), f"{where} (nested torch.save bytes)", network=True)


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(names) != 1:
            raise _FileError(f"{path}: zip without one <root>/data.pkl: not a torch.save file")
        root = names[0][: -len("data.pkl")]
        if root + "byteorder" in zf.namelist() and zf.read(root + "byteorder") != b"little":
            raise _FileError(f"{path}: big-endian torch.save files are unsupported")
        storages: dict[str, _Storage] = {}

        def storage(storage_type: _StorageType, key: str, numel: int) -> _Storage:
            if key not in storages:
                storages[key] = _Storage(storage_type, numel)
                storages[key].fill(zf.read(f"{root}data/{key}"), str(path))
            return storages[key]

        with zf.open(names[0]) as f:
            return _RestrictedUnpickler(f, str(path), storage=storage).load()


def _guarded(path: Path, what: str, read, holds: tuple[str, ...] = ("a pickle",)) -> Any:
    """Run read(); malformed input (truncated, not a pickle) -> ValueError naming the file,
    and what it holds instead when its first bytes are not those of `holds` (describe_magic
    kinds: a PNG, an HTML page...)."""
    try:
        return read()
    except (UnsafePickleError, FileNotFoundError):
        raise
    except _MALFORMED as err:
        kind = describe_magic(path)
        if kind and kind not in holds:
            raise _FileError(f"{path}: not {holds[0]} (it starts like {kind}); expected {what}; "
                             "check the path, or download the file again") from err  # fmt: skip
        if isinstance(err, _FileError):
            raise
        raise _FileError(
            f"{path}: cannot read as {what} (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from err


# ---------------------------------------------------------------- public API
def _plain(x: Any, where: str) -> Any:
    """EasyDicts -> dicts, numpy scalars -> Python numbers, tensors -> arrays (recursively)."""
    if isinstance(x, dict):
        return {k: _plain(v, where) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_plain(v, where) for v in x)
    if isinstance(x, np.generic):
        return x.item()
    return x.numpy(where) if isinstance(x, _Tensor) else x


def _flatten_module(module: _Module, prefix: str, out: dict, where: str) -> None:
    """torch's Module.state_dict(): own params, own persistent buffers, then children."""
    state = module.state
    skip = state.get("_non_persistent_buffers_set", set())
    named = [*state.get("_parameters", {}).items()]
    named += [(k, v) for k, v in state.get("_buffers", {}).items() if k not in skip]
    for name, tensor in named:
        if tensor is None:
            continue
        if not isinstance(tensor, _Tensor):
            raise _FileError(f"{where}: {prefix}{name} is a {type(tensor).__name__}, not a tensor")
        out[prefix + name] = tensor.numpy(f"{where}: {prefix}{name}")
    for name, child in state.get("_modules", {}).items():
        if child is not None:
            if not isinstance(child, _Module):
                raise _FileError(
                    f"{where}: {prefix}{name} is a {type(child).__name__}, not a module"
                )
            _flatten_module(child, f"{prefix}{name}.", out, where)


def _flatten_tensors(tree: Any, name: str, out: dict, where: str) -> None:
    """Nested dicts of tensors -> out[dotted name] = array, depth first in dict order."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            _flatten_tensors(v, f"{name}.{k}" if name else str(k), out, where)
    elif isinstance(tree, _Tensor | np.ndarray):
        out[name] = tree if isinstance(tree, np.ndarray) else tree.numpy(f"{where}: {name}")
    else:
        raise _FileError(
            f"{where}: entry {name or '<top>'!r} is a {type(tree).__name__}, "
            f"expected tensors (a state_dict)"
        )


def _network(obj: Any, name: str, where: str) -> Network | None:
    if obj is None:
        return None
    if not (isinstance(obj, _Module) and obj.persistent):
        raise _FileError(
            f"{where}: snapshot[{name!r}] is a {type(obj).__name__}, expected an "
            f"EG3D persistent network (torch_utils.persistence)"
        )
    if not isinstance(obj.state.get("_init_kwargs", {}), dict):
        raise _FileError(f"{where}: {name}._init_kwargs is not a dict")
    module = _EG3D_MODULES.get(obj.class_name)
    state_dict: dict[str, np.ndarray] = {}
    _flatten_module(obj, "", state_dict, f"{where}: {name}")
    return Network(
        class_name=f"{module}.{obj.class_name}" if module else obj.class_name,
        init_kwargs=_plain(obj.state.get("_init_kwargs", {}), where),
        state_dict=state_dict,
        attributes={
            k: _plain(v, where)
            for k, v in obj.state.items()
            if not k.startswith("_") and k != "training" and not isinstance(v, _Module)
        },
    )


def load_eg3d_pickle(path: str | Path) -> Snapshot:
    """EG3D `network-snapshot-*.pkl` -> Snapshot, with numpy and no code from the file."""
    path = Path(path)

    def read() -> Any:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, str(path), network=True).load()

    obj = _guarded(path, "an EG3D network snapshot pickle", read)
    if not (isinstance(obj, dict) and any(k in obj for k in _NETWORKS)):
        got = f"dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj)
        raise _FileError(
            f"{path}: expected an EG3D network snapshot (a dict with 'G', 'D', "
            f"'G_ema' as training_loop.py saves), got {got}"
        )
    nets = {
        k: _guarded(path, f"network {k}", lambda k=k: _network(obj.get(k), k, str(path)))
        for k in _NETWORKS
    }
    kwargs = obj.get("training_set_kwargs")
    return Snapshot(
        **nets, training_set_kwargs=None if kwargs is None else _plain(kwargs, str(path))
    )


def load_state_dict(path: str | Path, prefix: str | None = None) -> dict[str, np.ndarray]:
    """`.npz` or `torch.save(state_dict)` file (zip or legacy) -> {name: array}.

    Nested dicts are flattened with dotted names (`{'G_ema': sd}` -> 'G_ema.<name>'). With
    `prefix`, only keys under `prefix.` or `prefix/` are kept, with that prefix stripped.
    """
    path = Path(path)

    def read() -> Any:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with open(path, "rb") as f:
            return _read_legacy(f, str(path), network=False)

    flat: dict[str, np.ndarray] = {}
    if path.suffix == ".npz":
        tree = load_npz(path)
    else:
        tree = _guarded(path, "a torch.save state dict", read, _TORCH_SAVE)
    _guarded(path, "a state dict", lambda: _flatten_tensors(tree, "", flat, str(path)), _TORCH_SAVE)
    if prefix is None:
        return flat
    cut = {
        k[len(prefix) + 1 :]: v
        for k, v in flat.items()
        if k.startswith((f"{prefix}.", f"{prefix}/"))
    }
    if not cut:
        tops = sorted({k.split(".")[0].split("/")[0] for k in flat})[:10]
        raise _FileError(f"{path}: no keys under prefix {prefix!r}; top-level names: {tops}")
    return cut
