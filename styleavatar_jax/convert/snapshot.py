"""EG3D snapshot (or state dict + config) -> our config and Flax variables of G, G_ema, D."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from styleavatar_jax import typed_config
from styleavatar_jax.convert import eg3d
from styleavatar_jax.convert.safe_pickle import load_eg3d_pickle, load_state_dict

EG3D_FOV_DEGREES = 18.837  # gen_samples.py / gen_videos.py intrinsics for FFHQ


def convert_pickle(path: str | os.PathLike):
    """network-snapshot-*.pkl -> (config, {'G': vars, 'G_ema': vars, 'D': vars}, (G, D) modules)."""
    path = Path(path)
    snap = load_eg3d_pickle(path)
    if snap.G_ema is None:
        raise ValueError(f"{path}: the snapshot holds no G_ema")
    if snap.G_ema.class_name != eg3d.G_CLASS:
        raise ValueError(f"{path}: G_ema is a {snap.G_ema.class_name}; expected {eg3d.G_CLASS}")
    if snap.D is not None and snap.D.class_name not in eg3d.D_CLASSES:
        raise ValueError(f"{path}: D is a {snap.D.class_name}; expected one of {eg3d.D_CLASSES}")
    g_cfg = eg3d.generator_config(snap.G_ema.init_kwargs)
    d_cfg = eg3d.discriminator_config(snap.D.init_kwargs) if snap.D is not None else None
    neural_res = int(getattr(snap.G_ema, "attributes", {}).get("neural_rendering_resolution", 64))
    G, g_tmpl, D, d_tmpl = eg3d.build_networks(g_cfg, d_cfg, neural_res)
    networks, extras = {}, {}
    for name, net, tmpl in (
        ("G_ema", snap.G_ema, g_tmpl),
        ("G", snap.G, g_tmpl),
        ("D", snap.D, d_tmpl),
    ):
        if net is None:
            continue
        networks[name], extra = eg3d.load_variables(
            net.state_dict, tmpl, source=f"{path.name}:{name}"
        )
        extras.update({f"{name}_{k}": v.tolist() for k, v in extra.items()})
    rk = snap.G_ema.init_kwargs["rendering_kwargs"]
    camera = dict(
        radius=float(rk.get("avg_camera_radius", 2.7)),
        fov_degrees=EG3D_FOV_DEGREES,
        pivot=tuple(float(v) for v in rk.get("avg_camera_pivot", (0, 0, 0.2))),
    )
    source = dict(path=str(path.absolute()), format="eg3d-pickle", kimg=_kimg(path), **extras)
    if snap.training_set_kwargs:
        source["training_set_kwargs"] = _plain(snap.training_set_kwargs)
    cfg = eg3d.run_config(g_cfg, d_cfg, neural_res=neural_res, camera=camera, source=source)
    return cfg, networks, (G, D)


def convert_state_dict(path: str | os.PathLike, cfg: ml_collections.ConfigDict):
    """An EG3D state dict (.pt/.pth/.npz) whose architecture `cfg.model` gives.

    Keys may be prefixed by the network ('G_ema.', 'G.', 'D.'); unprefixed keys are G_ema's.
    """
    path = Path(path)
    sd = load_state_dict(path)
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in sd.items():
        head, _, rest = key.partition(".")
        if head in ("G_ema", "G", "D") and rest:
            groups.setdefault(head, {})[rest] = value
        else:
            groups.setdefault("G_ema", {})[key] = value
    if "G_ema" not in groups:
        raise ValueError(f"{path}: no G_ema weights (keys are unprefixed or start with 'G_ema.')")
    g_cfg = typed_config.generator_config(cfg.model.generator)
    d_cfg = typed_config.discriminator_config(cfg.model.discriminator) if "D" in groups else None
    neural_res = int(cfg.model.neural_res)
    G, g_tmpl, D, d_tmpl = eg3d.build_networks(g_cfg, d_cfg, neural_res)
    networks = {}
    for name, tmpl in (("G_ema", g_tmpl), ("G", g_tmpl), ("D", d_tmpl)):
        if name in groups:
            networks[name], _ = eg3d.load_variables(
                groups[name], tmpl, source=f"{path.name}:{name}"
            )
    camera = (
        cfg.camera.to_dict()
        if "camera" in cfg
        else dict(radius=2.7, fov_degrees=EG3D_FOV_DEGREES, pivot=(0, 0, 0.2))
    )
    source = dict(path=str(path.absolute()), format="state-dict")
    out_cfg = eg3d.run_config(g_cfg, d_cfg, neural_res=neural_res, camera=camera, source=source)
    return out_cfg, networks, (G, D)


def _kimg(path: Path) -> int | None:
    m = re.search(r"(\d+)\.pkl$", path.name)
    return int(m.group(1)) if m else None


def _plain(x: Any) -> Any:
    """JSON-able copy of pickled kwargs (tuples -> lists, numpy scalars -> Python)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return repr(x)
