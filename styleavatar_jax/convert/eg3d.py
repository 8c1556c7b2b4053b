"""EG3D state dicts and init kwargs -> our configs and Flax variables.

Our module tree mirrors EG3D's attribute names, so a parameter's torch key is its Flax
path joined by '.', with `kernel` for `weight` (dense kernels transposed to [in, out],
conv kernels to HWIO, the constant input to HWC) and the decoder's `fc0/fc1` for
`net.0/net.2`. Every Flax leaf must find its tensor with the right shape and every tensor
must be used (the fixed FIR filters are checked instead), else a ValueError names the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax
import jax
import ml_collections
import numpy as np

from styleavatar_jax.models.discriminator import DiscriminatorConfig, DualDiscriminator
from styleavatar_jax.models.superres import EG3D_SR_KINDS
from styleavatar_jax.models.triplane import GeneratorConfig, TriPlaneGenerator
from styleavatar_jax.nn.resample import setup_filter
from styleavatar_jax.render.renderer import RenderConfig

G_CLASS = "training.triplane.TriPlaneGenerator"
D_CLASSES = ("training.dual_discriminator.DualDiscriminator",)
_RENAMES = {"decoder.fc0": "decoder.net.0", "decoder.fc1": "decoder.net.2"}


def _known(kwargs: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: unsupported EG3D init kwargs {unknown}; known: {sorted(allowed)}"
        )


def generator_config(kwargs: Mapping[str, Any]) -> GeneratorConfig:
    """EG3D TriPlaneGenerator init kwargs (as pickled) -> GeneratorConfig."""
    _known(
        kwargs,
        {
            "z_dim",
            "c_dim",
            "w_dim",
            "img_resolution",
            "img_channels",
            "sr_num_fp16_res",
            "mapping_kwargs",
            "rendering_kwargs",
            "sr_kwargs",
            "channel_base",
            "channel_max",
            "num_fp16_res",
            "conv_clamp",
            "fused_modconv_default",
        },
        "G init_kwargs",
    )
    rk = dict(kwargs["rendering_kwargs"])
    mk = dict(kwargs.get("mapping_kwargs", {}))
    _known(
        mk,
        {
            "num_layers",
            "embed_features",
            "layer_features",
            "lr_multiplier",
            "w_avg_beta",
            "activation",
        },
        "G mapping_kwargs",
    )
    if mk.get("activation", "lrelu") != "lrelu":
        raise ValueError(
            f"G mapping_kwargs.activation={mk['activation']!r}: only 'lrelu' is supported"
        )
    sr_kind = rk["superresolution_module"].rsplit(".", 1)[-1]
    if sr_kind not in EG3D_SR_KINDS:
        raise ValueError(
            f"rendering_kwargs.superresolution_module={rk['superresolution_module']!r}: "
            f"expected one of {sorted(EG3D_SR_KINDS)}"
        )
    if rk.get("clamp_mode", "softplus") != "softplus":
        raise ValueError(
            f"rendering_kwargs.clamp_mode={rk['clamp_mode']!r}: only 'softplus' exists"
        )
    auto = rk["ray_start"] == "auto"
    render = RenderConfig(
        ray_start=None if auto else float(rk["ray_start"]),
        ray_end=None if auto else float(rk["ray_end"]),
        depth_resolution=int(rk["depth_resolution"]),
        depth_resolution_importance=int(rk["depth_resolution_importance"]),
        box_warp=float(rk["box_warp"]),
        disparity_space_sampling=bool(rk.get("disparity_space_sampling", False)),
        white_back=bool(rk.get("white_back", False)),
    )
    return GeneratorConfig(
        z_dim=int(kwargs["z_dim"]),
        c_dim=int(kwargs["c_dim"]),
        w_dim=int(kwargs["w_dim"]),
        img_resolution=int(kwargs["img_resolution"]),
        channel_base=int(kwargs.get("channel_base", 32768)),
        channel_max=int(kwargs.get("channel_max", 512)),
        conv_clamp=kwargs.get("conv_clamp"),
        mapping_layers=int(mk.get("num_layers", 8)),
        embed_features=mk.get("embed_features"),
        layer_features=mk.get("layer_features"),
        mapping_lr_multiplier=float(mk.get("lr_multiplier", 0.01)),
        w_avg_beta=float(mk.get("w_avg_beta", 0.998)),
        c_scale=float(rk.get("c_scale", 0.0)),  # EG3D's .get default
        c_gen_conditioning_zero=bool(rk["c_gen_conditioning_zero"]),
        decoder_lr_multiplier=float(rk.get("decoder_lr_mul", 1.0)),
        sr_kind=sr_kind,
        sr_antialias=bool(rk.get("sr_antialias", True)),
        sr_noise_mode=rk.get("superresolution_noise_mode", "none"),
        render=render,
    )


def discriminator_config(kwargs: Mapping[str, Any]) -> DiscriminatorConfig:
    """EG3D DualDiscriminator init kwargs -> DiscriminatorConfig."""
    _known(
        kwargs,
        {
            "c_dim",
            "img_resolution",
            "img_channels",
            "architecture",
            "channel_base",
            "channel_max",
            "num_fp16_res",
            "conv_clamp",
            "cmap_dim",
            "disc_c_noise",
            "block_kwargs",
            "mapping_kwargs",
            "epilogue_kwargs",
        },
        "D init_kwargs",
    )
    if kwargs.get("architecture", "resnet") != "resnet":
        raise ValueError(f"D architecture={kwargs['architecture']!r}: only 'resnet' is supported")
    mk = dict(kwargs.get("mapping_kwargs", {}))
    _known(mk, {"num_layers"}, "D mapping_kwargs")
    ek = dict(kwargs.get("epilogue_kwargs", {}))
    _known(ek, {"mbstd_group_size", "mbstd_num_channels"}, "D epilogue_kwargs")
    bk = dict(kwargs.get("block_kwargs", {}))
    if bk.get("freeze_layers", 0):
        raise ValueError("D block_kwargs.freeze_layers > 0 is not supported")
    return DiscriminatorConfig(
        c_dim=int(kwargs["c_dim"]),
        img_resolution=int(kwargs["img_resolution"]),
        img_channels=int(kwargs["img_channels"]),
        channel_base=int(kwargs.get("channel_base", 32768)),
        channel_max=int(kwargs.get("channel_max", 512)),
        conv_clamp=kwargs.get("conv_clamp", 256),
        cmap_dim=kwargs.get("cmap_dim"),
        mapping_layers=int(mk.get("num_layers", 8)),
        mbstd_group_size=ek.get("mbstd_group_size", 4),
        mbstd_num_channels=int(ek.get("mbstd_num_channels", 1)),
        disc_c_noise=float(kwargs.get("disc_c_noise", 0.0)),
    )


def torch_key(path: tuple[str, ...]) -> str:
    """Flax leaf path (without the collection) -> EG3D state_dict key."""
    *mods, leaf = path
    prefix = ".".join(mods)
    for ours, theirs in _RENAMES.items():
        if prefix == ours or prefix.startswith(ours + "."):
            prefix = theirs + prefix[len(ours) :]
    leaf = "weight" if leaf == "kernel" else leaf
    return f"{prefix}.{leaf}" if prefix else leaf


def to_flax_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """A torch tensor in our layout.

    Dense [out, in] -> [in, out], conv OIHW -> HWIO, const CHW -> HWC.
    """
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if leaf == "const":
        return value.transpose(1, 2, 0)
    return value


def to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """Inverse of `to_flax_layout`: our array in torch's layout (for comparisons with EG3D)."""
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    if leaf == "const":
        return value.transpose(2, 0, 1)
    return value


# Buffers EG3D's training loop registers outside the architecture (training_loop.py).
EXTRA_KEYS = ("dataset_label_std",)


def load_variables(
    state_dict: Mapping[str, np.ndarray], template: Any, *, source: str = "state_dict"
):
    """Fill `template` (a pytree of arrays or ShapeDtypeStructs from init / eval_shape, with
    'params' and 'buffers' collections) from an EG3D state dict.

    Returns (variables, extras): numpy variables, and the EXTRA_KEYS found (as metadata).
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(template))
    used: set[str] = set()
    out = {}
    for path, spec in flat.items():
        key = torch_key(path[1:])
        if key not in state_dict:
            raise ValueError(
                f"{source}: missing key {key!r} (for {'/'.join(path)}, shape {tuple(spec.shape)})"
            )
        value = to_flax_layout(path[-1], np.asarray(state_dict[key], np.float32))
        if value.shape != tuple(spec.shape):
            raise ValueError(
                f"{source}: {key!r} has shape {np.shape(state_dict[key])}, expected "
                f"{tuple(spec.shape)} in our layout (for {'/'.join(path)})"
            )
        out[path] = value
        used.add(key)
    fir = setup_filter()
    extras = {}
    for key, value in state_dict.items():
        if key in used:
            continue
        if key in EXTRA_KEYS:
            extras[key] = np.asarray(value)
            continue
        if key.endswith("resample_filter"):
            if not np.allclose(np.asarray(value), fir, atol=1e-7):
                raise ValueError(f"{source}: {key!r} is not EG3D's [1,3,3,1] filter")
            continue
        raise ValueError(
            f"{source}: unexpected key {key!r} (shape {np.shape(value)}) with no place in the model"
        )
    return flax.traverse_util.unflatten_dict(out), extras


def variables_template(model, *inputs, **kwargs):
    """Shapes of model.init(...) without computing anything."""
    keys = {k: jax.random.key(0) for k in ("params", "render", "noise")}
    return jax.eval_shape(lambda *xs: model.init(keys, *xs, **kwargs), *inputs)


def build_networks(g_cfg: GeneratorConfig, d_cfg: DiscriminatorConfig | None, neural_res: int):
    """(G, G template, D, D template): the Flax modules and their variable shapes."""
    G = TriPlaneGenerator(g_cfg)
    z = jax.ShapeDtypeStruct((1, g_cfg.z_dim), np.float32)
    c = jax.ShapeDtypeStruct((1, g_cfg.c_dim), np.float32)
    g_tmpl = variables_template(G, z, c, neural_res=neural_res, noise_mode="const")
    if d_cfg is None:
        return G, g_tmpl, None, None
    D = DualDiscriminator(d_cfg)
    r = d_cfg.img_resolution
    img = jax.ShapeDtypeStruct((4, r, r, d_cfg.img_channels), np.float32)
    raw = jax.ShapeDtypeStruct((4, neural_res, neural_res, d_cfg.img_channels), np.float32)
    d_tmpl = jax.eval_shape(lambda *xs: D.init(jax.random.key(0), *xs), img, raw, c)
    return G, g_tmpl, D, d_tmpl


def run_config(
    g_cfg: GeneratorConfig,
    d_cfg: DiscriminatorConfig | None,
    *,
    neural_res: int,
    camera: Mapping[str, Any],
    source: Mapping[str, Any],
):
    """The ml_collections config a converted run directory carries."""
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0
    cfg.model = ml_collections.ConfigDict()
    cfg.model.generator = dataclasses.asdict(g_cfg)
    cfg.model.discriminator = dataclasses.asdict(d_cfg) if d_cfg is not None else None
    cfg.model.neural_res = int(neural_res)
    cfg.camera = dict(camera)
    cfg.sample = dict(truncation_psi=1.0, truncation_cutoff=14, noise_mode="const")
    cfg.source = dict(source)
    return cfg
