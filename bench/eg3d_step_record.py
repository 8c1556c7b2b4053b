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
    reports (training_stats.report; Greg's TVloss through l1_loss) and the gradients."""

    def __init__(self, torch, recorder: DrawRecorder, density_reg: float):
        self.torch, self.recorder, self.density_reg = torch, recorder, density_reg
        self.losses: dict[str, float] = {}
        self.grads: dict[str, dict[str, np.ndarray]] = {}
        self.reports: dict[str, list] = {}

    def before_phase(self, name: str) -> None:
        self.recorder.phase = name
        self.reports = {}

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
    t: EG3DTraining, image_u8, label, gen_z, gen_c, *, replace: Callable | None = None
) -> dict[str, np.ndarray]:
    """Run one EG3D iteration (all its phases) on the real batch image_u8 [B, R, R, 3] uint8 /
    label [B, 25] with each phase's gen_z / gen_c (dicts by phase name) and record it in
    eg3d_parity.py's format (meta holds the phases; the caller adds its settings)."""
    torch = t.torch
    names = {id(m): name for name, m in t.G.named_modules() if name}
    names[id(t.D)] = "D"
    phases = tuple(p.name for p in t.phases)
    if set(phases) != set(EG3D_PHASES):
        raise ValueError(f"EG3D runs {phases}: the check needs {EG3D_PHASES} (lazy "
                         "regularisation on for both G and D)")  # fmt: skip
    settings = dict(t.settings, cur_nimg=t.cur_nimg, torch_version=torch.__version__)
    to = lambda x: torch.from_numpy(np.array(x, np.float32)).to(t.device)  # noqa: E731
    real = to(np.asarray(image_u8).transpose(0, 3, 1, 2)) / 127.5 - 1
    zs = [to(gen_z[p]) for p in phases]
    cs = [to(gen_c[p]) for p in phases]
    recorder = DrawRecorder(torch, names, replace)
    hooks = _Hooks(torch, recorder, float(t.G.rendering_kwargs.get("density_reg", 0)))
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
        out[f"loss/{p}"] = np.float32(hooks.losses[p])
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
    cap, recording [shape, stride, max|x|] in meta['subsampled'] (eg3d_parity.py)."""
    meta = json.loads(str(ref["meta"]))
    sub = meta.setdefault("subsampled", {})
    out = {}
    for k, v in ref.items():
        if k.split("/")[0] in ("grad", "after") and v.size > cap:
            stride = -(-v.size // cap)
            sub[k] = [list(v.shape), stride, float(np.abs(v).max())]
            v = np.ascontiguousarray(v.ravel()[::stride])
        out[k] = v
    out["meta"] = np.array(json.dumps(meta))
    return out
