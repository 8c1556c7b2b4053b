"""StyleGAN2 synthesis network (skip architecture), EG3D's `networks_stylegan2.py`.

Channels last: activations [B, H, W, C], images [B, H, W, img_channels]. Noise inputs come
from the `noise` PRNG stream ('random'), the `buffers/noise_const` maps ('const'), the
`noise_inputs` collection ('given': the standard-normal maps 'random' would draw, made
outside by `draw_noise`, or EG3D's recorded ones) or nowhere ('none').
"""

from __future__ import annotations

import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core.scope import LazyRng

from styleavatar_jax.nn.layers import FullyConnected, bias_act, modulated_conv2d
from styleavatar_jax.nn.resample import setup_filter, upsample2d

NOISE_MODES = ("random", "const", "given", "none")
NOISE_INPUTS = "noise_inputs"  # collection of 'given' noise: {layer path: {'noise': [B, R, R, 1]}}


def draw_noise(key: jax.Array, buffers, batch: int, prefixes: tuple[str, ...]) -> dict:
    """The noise noise_mode='random' draws with rngs={'noise': key}, as a `noise_inputs`
    collection: for every layer under one of `prefixes` (top-level module names, e.g.
    'backbone') that has a `noise_const` buffer [R, R], normal [batch, R, R, 1].

    A layer's 'random' noise is normal(make_rng('noise')), and Flax derives that key from
    the root key, the layer's path and the layer's first draw (count 1); `LazyRng` is how
    Flax does it, so these are the same numbers (tests/test_models.py pins it).
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(buffers))
    out = {}
    for path, const in flat.items():
        if path[-1] != "noise_const" or path[0] not in prefixes:
            continue
        layer_key = LazyRng.create(key, *path[:-1], 1).as_jax_rng()
        out[(*path[:-1], "noise")] = jax.random.normal(layer_key, (batch, *const.shape, 1))
    return flax.traverse_util.unflatten_dict(out)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise, bias, lrelu.

    x [B, R/up, R/up, I], w [B, w_dim] -> [B, R, R, O].
    """

    features: int
    resolution: int
    up: int = 1
    use_noise: bool = True
    conv_clamp: float | None = None
    kernel_size: int = 3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, w, *, noise_mode: str = "random", gain: float = 1.0):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode={noise_mode!r}: expected one of {NOISE_MODES}")
        in_ch, k, res = x.shape[-1], self.kernel_size, self.resolution
        styles = FullyConnected(in_ch, bias_init=1.0, name="affine")(w)
        weight = self.param("kernel", nn.initializers.normal(1.0), (k, k, in_ch, self.features))
        added = None  # noise · noise_strength, added after the convolution
        if self.use_noise:
            const = self.variable(
                "buffers",
                "noise_const",
                lambda: jax.random.normal(self.make_rng("params"), (res, res)),
            )
            strength = self.param("noise_strength", nn.initializers.zeros, ())
            if noise_mode == "random":
                noise = jax.random.normal(self.make_rng("noise"), (x.shape[0], res, res, 1))
                added = noise * strength
            elif noise_mode == "given":
                noise, want = self.get_variable(NOISE_INPUTS, "noise"), (x.shape[0], res, res, 1)
                if noise is None or noise.shape != want:
                    where = "/".join(self.scope.path)
                    raise ValueError(
                        f"{where}: noise_mode='given' needs the '{NOISE_INPUTS}' collection to "
                        f"hold {where}/noise of shape {want} (draw_noise), got "
                        f"{None if noise is None else noise.shape}"
                    )
                added = noise * strength
            elif noise_mode == "const":
                added = (const.value * strength)[None, :, :, None]
        x = modulated_conv2d(
            x.astype(self.dtype),
            weight,
            styles,
            noise=added,
            up=self.up,
            padding=k // 2,
            resample_filter=setup_filter() if self.up > 1 else None,
            flip_weight=self.up == 1,
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, bias, act="lrelu", gain=math.sqrt(2) * gain, clamp=clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation: x [B, R, R, I], w [B, w_dim] -> [B, R, R, O]."""

    features: int
    conv_clamp: float | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, w):
        in_ch = x.shape[-1]
        styles = FullyConnected(in_ch, bias_init=1.0, name="affine")(w) * (1 / math.sqrt(in_ch))
        weight = self.param("kernel", nn.initializers.normal(1.0), (1, 1, in_ch, self.features))
        x = modulated_conv2d(x.astype(self.dtype), weight, styles, demodulate=False)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return bias_act(x, bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator.

    x [B, R/2, R/2, I] (None for the first block), img [B, R/2, R/2, img_channels] or None,
    ws [B, num_conv + num_torgb, w_dim] -> (x [B, R, R, O], img [B, R, R, img_channels] f32).
    `up=False` is EG3D's `SynthesisBlockNoUp` (superresolution.py): input already at R.
    """

    in_channels: int  # 0 = first block (learned constant input)
    out_channels: int
    resolution: int
    img_channels: int
    is_last: bool
    up: bool = True
    use_noise: bool = True
    conv_clamp: float | None = None
    dtype: jnp.dtype = jnp.float32

    @property
    def num_conv(self) -> int:
        return 1 if self.in_channels == 0 else 2

    @property
    def num_torgb(self) -> int:
        return 1  # skip architecture: every block has a ToRGB

    @nn.compact
    def __call__(self, x, img, ws, *, noise_mode: str = "random"):
        batch = ws.shape[0]
        layer = dict(
            features=self.out_channels,
            resolution=self.resolution,
            use_noise=self.use_noise,
            conv_clamp=self.conv_clamp,
            dtype=self.dtype,
        )
        if self.in_channels == 0:
            const = self.param(
                "const",
                nn.initializers.normal(1.0),
                (self.resolution, self.resolution, self.out_channels),
            )
            x = jnp.broadcast_to(jnp.asarray(const, self.dtype), (batch, *const.shape))
            x = SynthesisLayer(**layer, name="conv1")(x, ws[:, 0], noise_mode=noise_mode)
        else:
            up = 2 if self.up else 1
            x = SynthesisLayer(**layer, up=up, name="conv0")(x, ws[:, 0], noise_mode=noise_mode)
            x = SynthesisLayer(**layer, name="conv1")(x, ws[:, 1], noise_mode=noise_mode)
        if img is not None and self.up:
            img = upsample2d(img, setup_filter())
        y = ToRGB(self.img_channels, self.conv_clamp, self.dtype, name="torgb")(
            x, ws[:, self.num_conv]
        )
        y = y.astype(jnp.float32)
        img = y if img is None else img + y
        return x, img


def block_channels(resolution: int, channel_base: int, channel_max: int) -> int:
    """StyleGAN2's channel rule: min(channel_base // res, channel_max)."""
    return min(channel_base // resolution, channel_max)


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> img [B, R, R, img_channels] (float32)."""

    img_resolution: int
    img_channels: int
    channel_base: int = 32768
    channel_max: int = 512
    conv_clamp: float | None = None
    dtype: jnp.dtype = jnp.float32

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(np.log2(self.img_resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        return 2 * len(self.block_resolutions)  # 1 + 2·(n − 1) convs + the last ToRGB

    @nn.compact
    def __call__(self, ws, *, noise_mode: str = "random"):
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws: expected shape [batch, {self.num_ws}, w_dim], got {ws.shape}")
        ws = ws.astype(jnp.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                in_channels=block_channels(res // 2, self.channel_base, self.channel_max)
                if res > 4
                else 0,
                out_channels=block_channels(res, self.channel_base, self.channel_max),
                resolution=res,
                img_channels=self.img_channels,
                is_last=res == self.img_resolution,
                conv_clamp=self.conv_clamp,
                dtype=self.dtype,
                name=f"b{res}",
            )
            n = block.num_conv + block.num_torgb
            x, img = block(x, img, ws[:, w_idx : w_idx + n], noise_mode=noise_mode)
            w_idx += block.num_conv
        return img
