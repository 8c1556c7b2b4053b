"""Record one official EG3D training iteration: every random draw, each phase's loss and
gradients, and the state after it (the torch side of the step parity check; the format is
styleavatar_jax/train/eg3d_parity.py's).

    t = build_from_snapshot(src, snapshot, batch=4, ...)   # EG3D's training objects
    ref = record_iteration(t, image_u8, label, gen_z, gen_c)  # flat dict of numpy arrays

Used by tests/fixtures/make_eg3d_fixtures.py (the committed fixture) and
bench/eg3d_step_parity.py (any snapshot). Needs torch and EG3D's source.

Draws are recorded by wrapping torch.rand, torch.randn, torch.rand_like and torch.randn_like
for the iteration: each call's caller (file, function, line), the nn.Module it was made in
(by name) and its value, in call order. `replace(record)` may return an array to give EG3D
instead of torch's draw (same shape and distribution): the fixture replaces large draws by
seeded numpy draws so that only their seeds need storing.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

_BENCH = Path(__file__).resolve().parent
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

from eg3d_train_step import (  # noqa: E402
    EG3DTraining,
    build_eg3d_training_from_kwargs,
    eg3d_train_iteration,
)

RANDOM_FNS = ("rand", "randn", "rand_like", "randn_like")
DIST = {"rand": "uniform", "rand_like": "uniform", "randn": "normal", "randn_like": "normal"}
EG3D_PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


class DrawRecorder:
    """Context manager: torch's random functions record (and maybe replace) their draws."""

    def __init__(self, torch, names: dict[int, str], replace: Callable | None = None):
        self.torch, self.names, self.replace = torch, names, replace
        self.phase: str | None = None
        self.records: list[dict] = []
        self._orig: dict[str, Callable] = {}

    def __enter__(self):
        self._orig = {fn: getattr(self.torch, fn) for fn in RANDOM_FNS}
        for fn, orig in self._orig.items():
            setattr(self.torch, fn, self._wrap(fn, orig))
        return self

    def __exit__(self, *exc):
        for fn, orig in self._orig.items():
            setattr(self.torch, fn, orig)

    def _wrap(self, fn: str, orig: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            out = orig(*args, **kwargs)
            frame = sys._getframe(1)
            code = frame.f_code
            rec = {
                "index": len(self.records),
                "phase": self.phase,
                "fn": fn,
                "shape": list(out.shape),
                "caller": f"{Path(code.co_filename).name}:{code.co_name}:{frame.f_lineno}",
                "module": self.names.get(id(frame.f_locals.get("self"))),
                "dist": DIST[fn],
            }
            new = self.replace(rec) if self.replace is not None else None
            if new is not None:
                rec["numpy"] = self.replace.seed(rec)
                out = self.torch.from_numpy(np.asarray(new, np.float32)).to(out.device, out.dtype)
            rec["value"] = out.detach().cpu().numpy().copy()
            self.records.append(rec)
            return out

        return wrapper


class _Hooks:
    """eg3d_train_iteration's hooks: name the phase for the recorder, capture the loss EG3D
    reports (training_stats.report; Greg's TVloss through l1_loss) and the gradients; save
    each phase's starting G and D state into `save_starts`, or load it from `load_starts`."""

    def __init__(self, t: EG3DTraining, recorder: DrawRecorder, save_starts=None,
                 load_starts=None):  # fmt: skip
        self.torch, self.recorder = t.torch, recorder
        self.density_reg = float(t.G.rendering_kwargs.get("density_reg", 0))
        self.nets = {"G": t.G, "D": t.D}
        self.save_starts, self.load_starts = save_starts, load_starts
        self.losses: dict[str, float] = {}
        self.grads: dict[str, dict[str, np.ndarray]] = {}
        self.reports: dict[str, list] = {}

    def before_phase(self, name: str) -> None:
        self.recorder.phase = name
        self.reports = {}
        if self.save_starts is not None:
            self.save_starts[name] = {
                k: {n: v.detach().clone() for n, v in net.state_dict().items()}
                for k, net in self.nets.items()
            }
        if self.load_starts is not None:
            for k, net in self.nets.items():
                net.load_state_dict(self.load_starts[name][k])  # casts to net's dtype

    def after_phase(self, name: str, module) -> None:
        wanted = {"Gmain": "Loss/G/loss", "Dmain": "Loss/D/loss", "Dreg": "Loss/r1_penalty"}
        if name == "Greg":
            values = [v * self.density_reg for v in self.reports.get("l1_loss", [])]
        else:
            values = self.reports.get(wanted.get(name, ""), [])
        if len(values) != 1:
            raise RuntimeError(f"{name}: expected one loss report, got {len(values)}")
        self.losses[name] = float(values[0])
        self.grads[name] = {
            k: p.grad.detach().cpu().numpy().copy()
            for k, p in module.named_parameters()
            if p.grad is not None
        }

    @contextlib.contextmanager
    def capture(self):
        """Patch EG3D's stats reporter and l1_loss to keep the values of this phase."""
        from torch_utils import training_stats

        F = self.torch.nn.functional
        report, l1 = training_stats.report, F.l1_loss

        def report_hook(name, value):
            if isinstance(value, self.torch.Tensor):
                self.reports.setdefault(name, []).append(value.detach().float().mean().item())
            return report(name, value)

        def l1_hook(*args, **kwargs):
            out = l1(*args, **kwargs)
            self.reports.setdefault("l1_loss", []).append(out.detach().item())
            return out

        training_stats.report, F.l1_loss = report_hook, l1_hook
        try:
            yield
        finally:
            training_stats.report, F.l1_loss = report, l1


def build_from_snapshot(src: str, snap, *, batch: int, cur_nimg: int, **kwargs) -> EG3DTraining:
    """EG3D's G, D, G_ema (its weights, buffers and rendering kwargs from `snap`, a
    safe_pickle Snapshot), StyleGAN2Loss and lazily regularised Adams at cur_nimg, as
    training_loop.py resumes from a pickle (kwargs: build_eg3d_training_from_kwargs')."""
    neural_res = int(snap.G.attributes.get("neural_rendering_resolution", 64))
    states = {"G": snap.G.state_dict, "G_ema": snap.G_ema.state_dict, "D": snap.D.state_dict}
    rk = snap.G.init_kwargs["rendering_kwargs"]
    kwargs.setdefault("gpc_reg_prob", None if rk.get("c_gen_conditioning_zero") else
                      rk.get("gpc_reg_prob"))  # fmt: skip
    return build_eg3d_training_from_kwargs(
        src,
        snap.G.init_kwargs,
        snap.D.init_kwargs,
        neural_res=neural_res,
        batch=batch,
        states=states,
        start_nimg=cur_nimg,
        **kwargs,
    )


def record_iteration(
    t: EG3DTraining,
    image_u8,
    label,
    gen_z,
    gen_c,
    *,
    replace: Callable | None = None,
    save_starts: dict | None = None,
    load_starts: dict | None = None,
) -> dict[str, np.ndarray]:
    """Run one EG3D iteration (all its phases) on the real batch image_u8 [B, R, R, 3] uint8 /
    label [B, 25] with each phase's gen_z / gen_c (dicts by phase name) and record it in
    eg3d_parity.py's format (meta holds the phases; the caller adds its settings).
    save_starts: a dict that gets each phase's starting G and D state dicts (by phase);
    load_starts: such a dict, loaded into G and D as each phase starts (`float64_reference`).
    Inputs go in as float32 values in torch's default dtype; losses are kept in it."""
    torch = t.torch
    names = {id(m): name for name, m in t.G.named_modules() if name}
    names[id(t.D)] = "D"
    phases = tuple(p.name for p in t.phases)
    if set(phases) != set(EG3D_PHASES):
        raise ValueError(f"EG3D runs {phases}: the check needs {EG3D_PHASES} (lazy "
                         "regularisation on for both G and D)")  # fmt: skip
    settings = dict(t.settings, cur_nimg=t.cur_nimg, torch_version=torch.__version__)
    dtype = torch.get_default_dtype()
    to = lambda x: torch.from_numpy(np.array(x, np.float32)).to(t.device, dtype)  # noqa: E731
    real = torch.from_numpy(np.asarray(image_u8, np.float32).transpose(0, 3, 1, 2)) / 127.5 - 1
    real = real.to(t.device, dtype)  # rounded to float32 first, as the float32 run's
    zs = [to(gen_z[p]) for p in phases]
    cs = [to(gen_c[p]) for p in phases]
    recorder = DrawRecorder(torch, names, replace)
    hooks = _Hooks(t, recorder, save_starts, load_starts)
    with recorder, hooks.capture():
        eg3d_train_iteration(t, EG3D_PHASES, real, to(label), zs, cs, hooks=hooks)

    out: dict[str, np.ndarray] = {
        "inputs/image": np.asarray(image_u8, np.uint8),
        "inputs/label": np.asarray(label, np.float32),
    }
    for p in phases:
        out[f"inputs/gen_z/{p}"] = np.asarray(gen_z[p], np.float32)
        out[f"inputs/gen_c/{p}"] = np.asarray(gen_c[p], np.float32)
    order = []
    for r in recorder.records:
        r = dict(r)
        value = r.pop("value")
        if "numpy" not in r:
            r["stored"] = f"rng/{r['index']:03d}"
            out[r["stored"]] = value
        order.append(r)
    out["rng/order"] = np.array(json.dumps(order))
    for p in phases:
        out[f"loss/{p}"] = np.asarray(hooks.losses[p], str(dtype).split(".")[-1])
        out.update({f"grad/{p}/{k}": v for k, v in hooks.grads[p].items()})
    for name, net in (("G", t.G), ("G_ema", t.G_ema), ("D", t.D)):
        for k, v in net.state_dict().items():
            if k == "dataset_label_std" or k.endswith("resample_filter"):
                continue  # constants our networks do not hold
            out[f"after/{name}/{k}"] = v.detach().cpu().numpy().copy()
    for name, phase in (("G_opt", t.phases[0]), ("D_opt", t.phases[2])):
        for k, p in phase.module.named_parameters():
            st = phase.opt.state.get(p)
            if st:
                out[f"after/{name}/{k}/exp_avg"] = st["exp_avg"].cpu().numpy().copy()
                out[f"after/{name}/{k}/exp_avg_sq"] = st["exp_avg_sq"].cpu().numpy().copy()
    out["meta"] = np.array(json.dumps({"phases": list(phases), "settings": settings}))
    return out


class NumpyDraws:
    """A `replace` policy: draws with more than `min_size` elements become float32 draws of
    np.random.default_rng([seed, index]) (uniform [0, 1) or standard normal, as torch's),
    stored as their seed."""

    def __init__(self, seed: int, min_size: int = 4096):
        self.seed_, self.min_size = seed, min_size

    def seed(self, rec: dict) -> list[int]:
        return [self.seed_, rec["index"]]

    def __call__(self, rec: dict):
        if int(np.prod(rec["shape"])) <= self.min_size:
            return None
        from styleavatar_jax.train.eg3d_parity import numpy_draw

        return numpy_draw(self.seed(rec), rec["dist"], tuple(rec["shape"]))


def subsample(ref: dict[str, np.ndarray], cap: int) -> dict[str, np.ndarray]:
    """Keep at most ~cap evenly strided elements of every grad/after tensor larger than
    cap, recording [shape, stride, max|x|] in meta['subsampled'] (eg3d_parity.py). A
    subsampled gradient also keeps the sign of every element, as `gradsign/<phase>/<name>`
    (eg3d_parity.pack_signs: 2 bits an element), so the parity check can step the unstored
    elements in EG3D's direction."""
    from styleavatar_jax.train.eg3d_parity import pack_signs

    meta = json.loads(str(ref["meta"]))
    sub = meta.setdefault("subsampled", {})
    out = {}
    for k, v in ref.items():
        if k.split("/")[0] in ("grad", "after") and v.size > cap:
            stride = -(-v.size // cap)
            sub[k] = [list(v.shape), stride, float(np.abs(v).max())]
            if k.startswith("grad/"):
                out["gradsign/" + k[len("grad/") :]] = pack_signs(v)
            v = np.ascontiguousarray(v.ravel()[::stride])
        out[k] = v
    out["meta"] = np.array(json.dumps(meta))
    return out


class Replay:
    """A `replace` policy: every draw is the same draw of a recorded iteration (records with
    'value', eg3d_parity.record_values), checked to come from the same call."""

    def __init__(self, records: list[dict]):
        self.records = records

    def seed(self, rec: dict) -> None:
        return None

    def __call__(self, rec: dict):
        r = self.records[rec["index"]] if rec["index"] < len(self.records) else {}
        if (r.get("fn"), list(r.get("shape", ())), r.get("caller")) != (
            rec["fn"],
            rec["shape"],
            rec["caller"],
        ):
            raise RuntimeError(f"replay: draw {rec['index']} ({rec['fn']} {rec['shape']} at "
                               f"{rec['caller']}) is not the recorded one")  # fmt: skip
        return r["value"]


class _Float64Torch:
    """The torch module as EG3D's modules see it in float64: float32 is float64."""

    def __init__(self, torch):
        self._torch = torch

    def __getattr__(self, name):
        if name in ("float32", "float"):
            return self._torch.float64
        return getattr(self._torch, name)


@contextlib.contextmanager
def eg3d_float64(src: str):
    """EG3D's code computing in float64 while inside: torch's default dtype float64, every
    EG3D module (training.*, torch_utils.*) reading torch.float32 as float64 (its mapping's
    z/c casts, blocks' dtype, upfirdn2d's filters and dtype asserts, the renderer's linspace
    and pixel grid) and Tensor.float() as double() (the renderer's grid_sample coordinates)."""
    from generator import load_eg3d

    torch = load_eg3d(src, "cpu")[0]
    import training.dual_discriminator  # noqa: F401
    import training.loss  # noqa: F401
    from torch_utils import misc, training_stats  # noqa: F401
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix  # noqa: F401

    proxy = _Float64Torch(torch)
    mods = [m for name, m in list(sys.modules.items())
            if name.split(".")[0] in ("training", "torch_utils")
            and getattr(m, "torch", None) is torch]  # fmt: skip
    default, to_float = torch.get_default_dtype(), torch.Tensor.float
    try:
        for m in mods:
            m.torch = proxy
        torch.set_default_dtype(torch.float64)
        torch.Tensor.float = torch.Tensor.double
        yield
    finally:
        torch.Tensor.float = to_float
        torch.set_default_dtype(default)
        for m in mods:
            m.torch = torch


def float64_reference(
    src: str, snap, ref: dict, starts: dict, inputs: tuple, **build_kwargs
) -> dict[str, np.ndarray]:
    """EG3D's losses and gradients of `ref`'s iteration (record_iteration's float32 record,
    full tensors) computed in float64: each phase from the float32 run's exact starting G and
    D (`starts`, its save_starts), with its draws and inputs (float32 values). -> {loss/...,
    grad/...} float64: the float32 rounding of EG3D's own numbers is ref − this."""
    from styleavatar_jax.train.eg3d_parity import record_values

    with eg3d_float64(src):
        t = build_from_snapshot(src, snap, **build_kwargs)
        for net in (t.G, t.D, t.G_ema):
            net.double()  # parameters keep their objects: the Adams still hold them
        out = record_iteration(t, *inputs, replace=Replay(record_values(ref)), load_starts=starts)
    for k, v in out.items():
        if k.split("/")[0] == "grad" and v.dtype != np.float64:
            raise RuntimeError(f"{k}: EG3D computed it in {v.dtype}, not float64")
    return {k: v for k, v in out.items() if k.split("/")[0] in ("loss", "grad")}


def noise_floors(ref: dict, ref64: dict) -> dict[str, np.ndarray]:
    """noise/<key>: max|ref − ref64| of every loss and gradient of `ref` (full tensors): how
    far EG3D's float32 numbers are from its float64 ones (eg3d_parity.NOISE_K)."""
    out = {}
    for k, v in ref.items():
        if k.split("/")[0] in ("loss", "grad"):
            d = np.abs(np.asarray(v, np.float64) - ref64[k]).max(initial=0.0)
            out[f"noise/{k}"] = np.float32(d)
    return out
