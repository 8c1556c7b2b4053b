"""EG3D's dual discriminator (training/dual_discriminator.py) in Flax.

The SR image and the raw neural render, resized to the same resolution, are stacked into
6 channels and judged by a StyleGAN2 resnet D whose output is projected on a mapped camera
label (c -> cmap).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core.scope import LazyRng

from styleavatar_jax.models.mapping import MappingNetwork
from styleavatar_jax.models.synthesis import block_channels
from styleavatar_jax.nn.layers import Conv2d, FullyConnected, minibatch_std
from styleavatar_jax.nn.resample import resize_bilinear


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """Defaults are EG3D FFHQ-512."""

    c_dim: int = 25
    img_resolution: int = 512
    img_channels: int = 3  # per image; D sees twice as many (image ‖ raw)
    channel_base: int = 32768
    channel_max: int = 512
    conv_clamp: float | None = 256  # EG3D ffhq: 256 (with d_num_fp16_res 4), None for fp32 runs
    cmap_dim: int | None = None  # None = channels at 4²
    mapping_layers: int = 8
    mbstd_group_size: int | None = 4
    mbstd_num_channels: int = 1
    disc_c_noise: float = 0.0  # std of noise added to c (× per-dim std of the batch)
    bf16: bool = False  # bfloat16 compute in the blocks (params and epilogue float32)


class DiscriminatorBlock(nn.Module):
    """Resnet D block: (x [B, R, R, tmp] | None, img [B, R, R, 6]) -> x [B, R/2, R/2, out]."""

    in_channels: int  # 0 = first block (from RGB)
    tmp_channels: int
    out_channels: int
    conv_clamp: float | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, img):
        if self.in_channels == 0:
            x = Conv2d(self.tmp_channels, 1, "lrelu", conv_clamp=self.conv_clamp, name="fromrgb")(
                img.astype(self.dtype)
            )
        x = x.astype(self.dtype)
        g = math.sqrt(0.5)
        y = Conv2d(self.out_channels, 1, use_bias=False, down=2, name="skip")(x, gain=g)
        x = Conv2d(self.tmp_channels, 3, "lrelu", conv_clamp=self.conv_clamp, name="conv0")(x)
        x = Conv2d(self.out_channels, 3, "lrelu", down=2, conv_clamp=self.conv_clamp, name="conv1")(
            x, gain=g
        )
        return y + x


class DiscriminatorEpilogue(nn.Module):
    """x [B, 4, 4, C], cmap [B, cmap_dim] -> logits [B, 1] (float32)."""

    cmap_dim: int
    mbstd_group_size: int | None = 4
    mbstd_num_channels: int = 1
    conv_clamp: float | None = None

    @nn.compact
    def __call__(self, x, cmap):
        channels = x.shape[-1]
        x = x.astype(jnp.float32)
        if self.mbstd_num_channels > 0:
            x = minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = Conv2d(channels, 3, "lrelu", conv_clamp=self.conv_clamp, name="conv")(x)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # EG3D flattens NCHW
        x = FullyConnected(channels, activation="lrelu", name="fc")(x)
        x = FullyConnected(self.cmap_dim or 1, name="out")(x)
        if self.cmap_dim:
            x = jnp.sum(x * cmap, axis=1, keepdims=True) * (1 / math.sqrt(self.cmap_dim))
        return x


def draw_c_noise(key: jax.Array, batch: int, c_dim: int) -> jax.Array:
    """The standard normal [batch, c_dim] DualDiscriminator draws with rngs={'c_noise': key}
    (disc_c_noise > 0), as its `c_noise=` argument takes it: the module's first draw of the
    stream, whose key Flax derives with `LazyRng` (as `synthesis.draw_noise`), so these are
    the same numbers (tests/test_train_step.py pins it)."""
    return jax.random.normal(LazyRng.create(key, 1).as_jax_rng(), (batch, c_dim))


class DualDiscriminator(nn.Module):
    """image [B, R, R, 3], image_raw [B, r, r, 3], c [B, c_dim] -> logits [B, 1].

    PRNG stream 'c_noise' only when disc_c_noise > 0 and no `c_noise` is given.
    """

    cfg: DiscriminatorConfig = DiscriminatorConfig()

    @nn.compact
    def __call__(self, image, image_raw, c, *, c_noise=None):
        """c_noise: None, or the standard-normal draw [B, c_dim] that disc_c_noise > 0 would
        take from the 'c_noise' stream (EG3D: c += randn_like(c)·c.std(0)·disc_c_noise)."""
        cfg = self.cfg
        res = cfg.img_resolution
        if image.shape[1:] != (res, res, cfg.img_channels):
            raise ValueError(
                f"image: expected [batch, {res}, {res}, {cfg.img_channels}], got {image.shape}"
            )
        # EG3D filtered_resizing(filter_mode='antialiased'): bilinear with antialias.
        raw = resize_bilinear(image_raw.astype(jnp.float32), res, antialias=True)
        img = jnp.concatenate([image.astype(jnp.float32), raw], axis=-1)

        chans = lambda r: block_channels(r, cfg.channel_base, cfg.channel_max)
        dtype = jnp.bfloat16 if cfg.bf16 else jnp.float32
        x = None
        log2 = int(math.log2(res))
        for r in (2**i for i in range(log2, 2, -1)):
            x = DiscriminatorBlock(
                in_channels=chans(r) if r < res else 0,
                tmp_channels=chans(r),
                out_channels=chans(r // 2),
                conv_clamp=cfg.conv_clamp,
                dtype=dtype,
                name=f"b{r}",
            )(x, img)

        cmap_dim = (cfg.cmap_dim or chans(4)) if cfg.c_dim > 0 else 0
        cmap = None
        if cfg.c_dim > 0:
            if c is None or c.shape[-1] != cfg.c_dim:
                raise ValueError(
                    f"c: expected shape [batch, {cfg.c_dim}], got {None if c is None else c.shape}"
                )
            if c_noise is not None and (cfg.disc_c_noise <= 0 or c_noise.shape != c.shape):
                raise ValueError(
                    f"c_noise {c_noise.shape}: needs disc_c_noise > 0 (got {cfg.disc_c_noise}) "
                    f"and the shape of c {c.shape}"
                )
            if cfg.disc_c_noise > 0:
                if c_noise is None:
                    c_noise = jax.random.normal(self.make_rng("c_noise"), c.shape)
                c = c + c_noise * jnp.std(c, axis=0, ddof=1) * cfg.disc_c_noise
            cmap = MappingNetwork(
                z_dim=0,
                c_dim=cfg.c_dim,
                w_dim=cmap_dim,
                num_ws=None,
                num_layers=cfg.mapping_layers,
                w_avg_beta=None,
                name="mapping",
            )(None, c)
        return DiscriminatorEpilogue(
            cmap_dim, cfg.mbstd_group_size, cfg.mbstd_num_channels, cfg.conv_clamp, name="b4"
        )(x, cmap)
