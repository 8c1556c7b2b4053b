"""EG3D's tri-plane generator (training/triplane.py) in Flax.

(z, c) -> mapping -> StyleGAN2 backbone -> three 32-channel planes -> OSG decoder + volume
rendering at the neural resolution -> super-resolution. Channels last throughout.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from styleavatar_jax.models.mapping import MappingNetwork
from styleavatar_jax.models.superres import SR_SPECS, SuperResolution
from styleavatar_jax.models.synthesis import SynthesisNetwork
from styleavatar_jax.nn.layers import FullyConnected
from styleavatar_jax.render.planes import materialize, sample_planes
from styleavatar_jax.render.rays import pixel_rays
from styleavatar_jax.render.renderer import RenderConfig, RenderUniforms, draw_uniforms, render

LABEL_DIM = 25  # 16 cam2world + 9 intrinsics


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Hyperparameters of the tri-plane generator; defaults are EG3D FFHQ-512."""

    z_dim: int = 512
    c_dim: int = LABEL_DIM
    w_dim: int = 512
    img_resolution: int = 512  # after super-resolution
    backbone_resolution: int = 256  # plane resolution
    plane_channels: int = 32
    channel_base: int = 32768
    channel_max: int = 512
    conv_clamp: float | None = None
    mapping_layers: int = 2
    embed_features: int | None = None  # None = w_dim
    layer_features: int | None = None  # None = w_dim
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    c_scale: float = 1.0  # generator pose conditioning: c · c_scale
    c_gen_conditioning_zero: bool = False  # True = no pose conditioning (c zeroed)
    decoder_hidden: int = 64
    decoder_lr_multiplier: float = 1.0
    sr_kind: str = "SuperresolutionHybrid8XDC"
    sr_antialias: bool = True
    sr_noise_mode: str = "none"  # EG3D rendering_kwargs['superresolution_noise_mode']
    sr_use_noise: bool = True
    backbone_bf16: bool = False  # bfloat16 compute in the backbone (params stay float32)
    sr_bf16: bool = False
    render: RenderConfig = RenderConfig()

    def __post_init__(self):
        if self.sr_kind not in SR_SPECS:
            raise ValueError(f"sr_kind={self.sr_kind!r}: expected one of {sorted(SR_SPECS)}")
        if SR_SPECS[self.sr_kind].img_resolution != self.img_resolution:
            raise ValueError(
                f"img_resolution={self.img_resolution} does not match {self.sr_kind}, which "
                f"outputs {SR_SPECS[self.sr_kind].img_resolution}"
            )
        if self.w_dim != 512:  # EG3D's SR blocks hard-code w_dim=512
            raise ValueError(f"w_dim={self.w_dim}: EG3D's super-resolution needs w_dim=512")


class OSGDecoder(nn.Module):
    """features [B, 3, M, C] -> rgb [B, M, out] in (−0.001, 1.001), sigma [B, M, 1] (raw).

    Mean over planes -> FC 64, softplus -> FC 1 + out (EG3D triplane.py; no view directions).
    """

    hidden: int = 64
    out_features: int = 32
    lr_multiplier: float = 1.0

    @nn.compact
    def __call__(self, features: jax.Array):
        # Mean of the planes as explicit adds: XLA:CPU reduces a non-minor axis ~50x slower.
        x = sum(features[:, i] for i in range(features.shape[1])) / features.shape[1]
        x = FullyConnected(self.hidden, lr_multiplier=self.lr_multiplier, name="fc0")(x)
        x = jax.nn.softplus(x)
        x = FullyConnected(1 + self.out_features, lr_multiplier=self.lr_multiplier, name="fc1")(x)
        rgb = jax.nn.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001  # MipNeRF's widened sigmoid
        return rgb, x[..., :1]


class Backbone(nn.Module):
    """StyleGAN2 generator whose image is the 3 stacked planes: .mapping and .synthesis."""

    cfg: GeneratorConfig

    def setup(self):
        cfg = self.cfg
        self.synthesis = SynthesisNetwork(
            img_resolution=cfg.backbone_resolution,
            img_channels=3 * cfg.plane_channels,
            channel_base=cfg.channel_base,
            channel_max=cfg.channel_max,
            conv_clamp=cfg.conv_clamp,
            dtype=jnp.bfloat16 if cfg.backbone_bf16 else jnp.float32,
        )
        self.mapping = MappingNetwork(
            z_dim=cfg.z_dim,
            c_dim=cfg.c_dim,
            w_dim=cfg.w_dim,
            num_ws=self.synthesis.num_ws,
            num_layers=cfg.mapping_layers,
            embed_features=cfg.embed_features,
            layer_features=cfg.layer_features,
            lr_multiplier=cfg.mapping_lr_multiplier,
            w_avg_beta=cfg.w_avg_beta,
        )

    def __call__(self, z, c):
        return self.synthesis(self.mapping(z, c))


class TriPlaneGenerator(nn.Module):
    """(z [B, z_dim], c [B, 25]) -> images; see `__call__`.

    PRNG streams: 'render' (renderer uniforms, unless given), 'noise' (noise_mode='random').
    noise_mode='given' reads the noise from the `noise_inputs` collection instead
    (`noise_layers`, `synthesis.draw_noise`).
    """

    cfg: GeneratorConfig = GeneratorConfig()

    def setup(self):
        cfg = self.cfg
        self.backbone = Backbone(cfg)
        self.superresolution = SuperResolution(
            kind=cfg.sr_kind,
            antialias=cfg.sr_antialias,
            use_noise=cfg.sr_use_noise,
            dtype=jnp.bfloat16 if cfg.sr_bf16 else jnp.float32,
        )
        self.decoder = OSGDecoder(cfg.decoder_hidden, cfg.plane_channels, cfg.decoder_lr_multiplier)

    def mapping(
        self, z, c, *, truncation_psi: float = 1.0, truncation_cutoff=None, update_emas=False
    ):
        """z [B, z_dim], c [B, 25] -> ws [B, num_ws, w_dim]."""
        if c is None or c.ndim != 2 or c.shape[1] != self.cfg.c_dim:
            raise ValueError(
                f"c: expected shape [batch, {self.cfg.c_dim}], got {None if c is None else c.shape}"
            )
        c = jnp.zeros_like(c) if self.cfg.c_gen_conditioning_zero else c * self.cfg.c_scale
        return self.backbone.mapping(
            z,
            c,
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            update_emas=update_emas,
        )

    def planes(self, ws, *, noise_mode: str = "random"):
        """ws [B, L, w_dim] -> planes [B, 3, 256, 256, 32]."""
        img = self.backbone.synthesis(ws, noise_mode=noise_mode)  # [B, H, W, 3·C]
        b, h, w, _ = img.shape
        # EG3D: .view(N, 3, 32, H, W) of the NCHW image: channel k -> plane k // 32.
        planes = img.reshape(b, h, w, 3, self.cfg.plane_channels).transpose(0, 3, 1, 2, 4)
        return materialize(planes)

    def render_planes(self, planes, c, *, neural_res: int, uniforms: RenderUniforms | None = None):
        """planes [B, 3, H, W, C], c [B, 25] -> dict of renderer outputs at neural_res²."""
        cam2world = c[:, :16].reshape(-1, 4, 4)
        intrinsics = c[:, 16:25].reshape(-1, 3, 3)
        origins, directions = pixel_rays(cam2world, intrinsics, neural_res)
        if uniforms is None:
            uniforms = draw_uniforms(
                self.make_rng("render"), c.shape[0], neural_res**2, self.cfg.render
            )
        return render(planes, self.decoder, origins, directions, self.cfg.render, uniforms)

    def synthesis(self, ws, c, *, neural_res: int = 64, noise_mode: str = "random", uniforms=None):
        """ws [B, L, w_dim], c [B, 25] -> dict:
        image [B, R, R, 3], image_raw [B, r, r, 3], image_depth [B, r, r, 1],
        feature_image [B, r, r, 32], planes [B, 3, 256, 256, 32] (r = neural_res).
        """
        planes = self.planes(ws, noise_mode=noise_mode)
        given = noise_mode == "given"
        out = self.synthesis_from_planes(planes, ws, c, neural_res=neural_res, uniforms=uniforms,
                                         given_noise=given)  # fmt: skip
        out["planes"] = planes
        return out

    def synthesis_from_planes(
        self, planes, ws, c, *, neural_res: int = 64, uniforms=None, given_noise: bool = False
    ):
        """Render + super-resolve given planes (to render many views of one backbone pass).

        The SR's noise is cfg.sr_noise_mode's; given_noise: its 'random' noise comes from the
        `noise_inputs` collection instead (as the backbone's with noise_mode='given')."""
        out = self.render_planes(planes, c, neural_res=neural_res, uniforms=uniforms)
        b = ws.shape[0]
        feature_image = out["features"].reshape(b, neural_res, neural_res, -1)
        depth_image = out["depth"].reshape(b, neural_res, neural_res, 1)
        rgb = feature_image[..., :3]
        sr_mode = self.cfg.sr_noise_mode
        sr_mode = "given" if given_noise and sr_mode == "random" else sr_mode
        image = self.superresolution(rgb, feature_image, ws, noise_mode=sr_mode)
        return {
            "image": image,
            "image_raw": rgb,
            "image_depth": depth_image,
            "feature_image": feature_image,
        }

    def noise_layers(self, *, planes_only: bool = False) -> tuple[str, ...]:
        """Top-level modules whose layers draw noise in noise_mode='random' (for
        `synthesis.draw_noise`): the backbone, and the SR when cfg.sr_noise_mode is 'random'
        (planes_only: the backbone alone, for a planes-only pass)."""
        sr = self.cfg.sr_noise_mode == "random" and self.cfg.sr_use_noise and not planes_only
        return ("backbone", "superresolution") if sr else ("backbone",)

    def sample_density(self, planes, coords):
        """planes [B, 3, H, W, C], coords [B, M, 3] -> (rgb [B, M, 32], sigma [B, M, 1])."""
        r = self.cfg.render
        return self.decoder(sample_planes(planes, coords, box_warp=r.box_warp, axes=r.plane_axes))

    def __call__(
        self,
        z,
        c,
        *,
        truncation_psi: float = 1.0,
        truncation_cutoff=None,
        neural_res: int = 64,
        noise_mode: str = "random",
        uniforms=None,
        update_emas: bool = False,
    ):
        """z [B, z_dim], c [B, 25] -> the `synthesis` dict plus ws [B, L, w_dim]."""
        ws = self.mapping(
            z,
            c,
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            update_emas=update_emas,
        )
        out = self.synthesis(ws, c, neural_res=neural_res, noise_mode=noise_mode, uniforms=uniforms)
        out["ws"] = ws
        return out


def init_variables(G: TriPlaneGenerator, key: jax.Array, *, neural_res: int = 8):
    """Random EG3D-style initial variables {'params', 'buffers'} of G (jitted init).

    Initialisation runs on a frontal camera at a small neural resolution: the variables do
    not depend on either.
    """
    z = jnp.zeros((1, G.cfg.z_dim), jnp.float32)
    c = jnp.zeros((1, G.cfg.c_dim), jnp.float32)
    c = (
        c.at[0, :16].set(jnp.eye(4).ravel()).at[0, 16:].set(jnp.eye(3).ravel())
        if G.cfg.c_dim == LABEL_DIM
        else c
    )
    k_params, k_render, k_noise = jax.random.split(key, 3)
    init = jax.jit(
        lambda k1, k2, k3: G.init(
            {"params": k1, "render": k2, "noise": k3},
            z,
            c,
            neural_res=neural_res,
            noise_mode="const",
        )
    )
    return init(k_params, k_render, k_noise)
