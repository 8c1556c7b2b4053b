"""EG3D's super-resolution modules (training/superresolution.py).

Each is two StyleGAN2 blocks driven by the last w repeated: the 32-channel feature image
(and its first 3 channels, the raw RGB) resized to the module's input resolution, then
blocks up to the output. `kind` names EG3D's class, except `SuperresolutionCPU2X`: ours, the
same two-block design at 32² -> 64² with 32/16 channels, for CPU-sized runs (tests, demo).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from styleavatar_jax.models.synthesis import SynthesisBlock
from styleavatar_jax.nn.resample import resize_bilinear


@dataclasses.dataclass(frozen=True)
class SRSpec:
    """input_resolution, output resolution, (channels, resolution, up) for block0 and block1."""

    input_resolution: int
    img_resolution: int
    blocks: tuple[tuple[int, int, bool], tuple[int, int, bool]]
    resize_only_up: bool  # EG3D 4X / Deep resize only when smaller; 2X / 8X when different


SR_SPECS = {
    "SuperresolutionHybrid2X": SRSpec(64, 128, ((128, 64, False), (64, 128, True)), False),
    "SuperresolutionHybrid4X": SRSpec(128, 256, ((128, 128, False), (64, 256, True)), True),
    "SuperresolutionHybrid8X": SRSpec(128, 512, ((128, 256, True), (64, 512, True)), False),
    "SuperresolutionHybrid8XDC": SRSpec(128, 512, ((256, 256, True), (128, 512, True)), False),
    "SuperresolutionHybridDeepfp32": SRSpec(128, 256, ((128, 128, False), (64, 256, True)), True),
    "SuperresolutionCPU2X": SRSpec(32, 64, ((32, 32, False), (16, 64, True)), False),  # not EG3D
}
EG3D_SR_KINDS = tuple(k for k in SR_SPECS if k.startswith("SuperresolutionHybrid"))


class SuperResolution(nn.Module):
    """rgb [B, r, r, 3], feature image [B, r, r, C], ws [B, L, w_dim] -> image [B, R, R, 3]."""

    kind: str = "SuperresolutionHybrid8XDC"
    antialias: bool = True  # EG3D sr_antialias (HybridDeepfp32 never antialiases)
    use_noise: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, rgb, x, ws, *, noise_mode: str = "none"):
        """noise_mode 'given': the maps from the `noise_inputs` collection, laid out as
        `noise_shapes(kind, B)` ({'block0': {'conv0': {'noise': [B, r, r, 1]}, ...}, ...})."""
        if self.kind not in SR_SPECS:
            raise ValueError(
                f"superresolution kind {self.kind!r}: expected one of {sorted(SR_SPECS)}"
            )
        spec = SR_SPECS[self.kind]
        ws = jnp.repeat(ws[:, -1:], 3, axis=1)
        size = spec.input_resolution
        if (x.shape[1] < size) if spec.resize_only_up else (x.shape[1] != size):
            antialias = self.antialias and self.kind != "SuperresolutionHybridDeepfp32"
            x = resize_bilinear(x, size, antialias=antialias)
            rgb = resize_bilinear(rgb, size, antialias=antialias)
        img = rgb
        for i, (channels, res, up) in enumerate(spec.blocks):
            x, img = SynthesisBlock(
                in_channels=x.shape[-1],
                out_channels=channels,
                resolution=res,
                img_channels=3,
                is_last=i == 1,
                up=up,
                use_noise=self.use_noise,
                dtype=self.dtype,
                name=f"block{i}",
            )(x, img, ws, noise_mode=noise_mode)
        return img


def sr_output_resolution(kind: str) -> int:
    return SR_SPECS[kind].img_resolution


def noise_shapes(kind: str, batch: int) -> dict[str, dict[str, dict[str, tuple[int, ...]]]]:
    """The shapes of `SuperResolution(kind)`'s noise maps, as its `noise_inputs` collection
    holds them for noise_mode='given' (EG3D draws them in this order: block0.conv0,
    block0.conv1, block1.conv0, block1.conv1)."""
    return {
        f"block{i}": {conv: {"noise": (batch, res, res, 1)} for conv in ("conv0", "conv1")}
        for i, (_, res, _) in enumerate(SR_SPECS[kind].blocks)
    }


__all__ = ["EG3D_SR_KINDS", "SR_SPECS", "SuperResolution", "noise_shapes", "sr_output_resolution"]
