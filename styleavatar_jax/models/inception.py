"""Inception-v3 as pytorch-fid uses it for FID (mseitzer/pytorch-fid `inception.py`), in Flax.

`fid_inception_v3` is torchvision's Inception3 with the TensorFlow FID graph's quirks:
the A, C and first E blocks average-pool without counting the zero padding
(`count_include_pad=False`, as TensorFlow does), and the last E block max-pools. The
output is the 2048-d global average pool (pytorch-fid block 3, "pool3"). Input: images
in [0, 1], resized bilinearly to 299² (`F.interpolate(..., align_corners=False)`, no
antialiasing) and mapped to [−1, 1].

Module names are torchvision's (`Mixed_5b/branch1x1/conv`), so a state-dict key is its
Flax path joined by '.' (`convert/inception.py`). NHWC, kernels HWIO; BatchNorm's running
statistics live in the `batch_stats` collection.
"""

from __future__ import annotations

import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
FEATURES = 2048
BN_EPS = 0.001  # torchvision BasicConv2d


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] float32 weights of torch's bilinear resize along one axis
    (`align_corners=False`, no antialias): source x = (i + 0.5)·in/out − 0.5, clamped at 0,
    between pixels floor(x) and min(floor(x) + 1, in − 1); in float32 arithmetic as torch."""
    f32 = np.float32
    x = (np.arange(out_size, dtype=f32) + f32(0.5)) * f32(in_size / out_size) - f32(0.5)
    x = np.maximum(x, f32(0))
    lo = np.minimum(np.floor(x).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = x - lo.astype(f32)
    m = np.zeros((out_size, in_size), f32)
    np.add.at(m, (np.arange(out_size), lo), f32(1) - frac)
    np.add.at(m, (np.arange(out_size), hi), frac)
    return m


def resize_bilinear(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """[B, H, W, C] -> [B, size, size, C], as torch F.interpolate(mode='bilinear',
    align_corners=False): two matmuls with `resize_matrix` weights."""
    _, h, w, _ = images.shape
    if (h, w) == (size, size):
        return images
    mh, mw = jnp.asarray(resize_matrix(h, size)), jnp.asarray(resize_matrix(w, size))
    x = jnp.einsum("oh,bhwc->bowc", mh, images, precision="highest")
    return jnp.einsum("pw,bowc->bopc", mw, x, precision="highest")


def _pads(padding) -> list[tuple[int, int]]:
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return [(ph, ph), (pw, pw)]


class BasicConv2d(nn.Module):
    """torchvision BasicConv2d: conv (no bias) -> BatchNorm (eps 0.001, running stats) -> relu."""

    features: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: int | tuple[int, int] = 0

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=_pads(self.padding),
                    use_bias=False, name="conv")(x)  # fmt: skip
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x):
    """3×3, stride 1, pad 1, zeros not counted (TensorFlow's average pool)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)  # fmt: skip


def _max_pool_3x3(x, stride: int, pad: int):
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
    """Mixed_5b/c/d (FIDInceptionA) [B, 35, 35, Cin] -> [B, 35, 35, 224 + pool_features]."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv2d(64, (5, 5), padding=2, name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, (3, 3), padding=1, name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, (3, 3), padding=1, name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a (torchvision InceptionB) [B, 35, 35, 288] -> [B, 17, 17, 768]."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, (3, 3), padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b..e (FIDInceptionC) [B, 17, 17, 768] -> [B, 17, 17, 768]."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a (torchvision InceptionD) [B, 17, 17, 768] -> [B, 8, 8, 1280]."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv2d(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (FIDInceptionE_1, average pool) / Mixed_7c (FIDInceptionE_2, max pool):
    [B, 8, 8, Cin] -> [B, 8, 8, 2048]."""

    max_pool: bool

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
        ], axis=-1)  # fmt: skip
        bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, (3, 3), padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
        ], axis=-1)  # fmt: skip
        # The FID graph max-pools in its last block (pytorch-fid: "likely an error").
        pooled = _max_pool_3x3(x, 1, 1) if self.max_pool else _avg_pool_3x3(x)
        bp = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """pytorch-fid InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True)."""

    @nn.compact
    def __call__(self, images):
        """images [B, H, W, 3] float in [0, 1] -> pool3 features [B, 2048]."""
        x = resize_bilinear(images.astype(jnp.float32)) * 2.0 - 1.0  # [B, 299, 299, 3]
        x = BasicConv2d(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)  # [B, 149, 149, 32]
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)  # [B, 147, 147, 32]
        x = BasicConv2d(64, (3, 3), padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3(x, 2, 0)  # [B, 73, 73, 64]
        x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)  # [B, 71, 71, 192]
        x = _max_pool_3x3(x, 2, 0)  # [B, 35, 35, 192]
        x = InceptionA(32, name="Mixed_5b")(x)  # [B, 35, 35, 256]
        x = InceptionA(64, name="Mixed_5c")(x)  # 288
        x = InceptionA(64, name="Mixed_5d")(x)  # 288
        x = InceptionB(name="Mixed_6a")(x)  # [B, 17, 17, 768]
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)  # [B, 8, 8, 1280]
        x = InceptionE(max_pool=False, name="Mixed_7b")(x)  # [B, 8, 8, 2048]
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))  # adaptive average pool to 1×1


def init_variables(key: jax.Array) -> dict:
    """Random variables {'params', 'batch_stats'} of `InceptionV3` for tests and benchmarks
    (not meaningful for FID): He-normal conv kernels (std √(2 / fan_in), so activations
    stay O(1) through the relus), BatchNorm scale 1, bias 0, mean 0, var 1. Built from the
    shapes, without running the network."""
    flat = flax.traverse_util.flatten_dict(variable_shapes())
    kernels = [k for k in flat if k[-1] == "kernel"]
    sizes = [math.prod(flat[k].shape) for k in kernels]
    noise = np.asarray(jax.random.normal(key, (sum(sizes),), jnp.float32))
    fill = {"scale": 1.0, "bias": 0.0, "mean": 0.0, "var": 1.0}
    out = {k: np.full(v.shape, fill[k[-1]], np.float32) for k, v in flat.items() if k[-1] in fill}
    for k, chunk in zip(kernels, np.split(noise, np.cumsum(sizes)[:-1]), strict=True):
        kh, kw, cin, _ = flat[k].shape
        out[k] = chunk.reshape(flat[k].shape) * np.float32(math.sqrt(2.0 / (kh * kw * cin)))
    return flax.traverse_util.unflatten_dict(out)


def variable_shapes() -> dict:
    """The variables' tree of ShapeDtypeStructs, without computing anything."""
    x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    return jax.eval_shape(InceptionV3().init, jax.random.key(0), x)
