"""EG3D's FFHQ-512 architecture (train.py --cfg=ffhq). arg 'tiny': the CPU-sized test
architecture of tests/fixtures/eg3d_tiny.pkl (z 64, cbase 2048, cmax 16, 2X SR to 128,
12+12 depth samples, neural res 32).

    styleavatar-jax sample --config=configs/eg3d_ffhq512.py:tiny --seeds 0-3 --out out/
"""

import dataclasses

import ml_collections

from styleavatar_jax.models.discriminator import DiscriminatorConfig
from styleavatar_jax.models.triplane import GeneratorConfig
from styleavatar_jax.render.renderer import RenderConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    g = GeneratorConfig()
    d = DiscriminatorConfig()
    neural_res = 128  # EG3D's final neural rendering resolution at 512²
    if arg == "tiny":
        g = dataclasses.replace(
            g,
            z_dim=64,
            img_resolution=128,
            channel_base=2048,
            channel_max=16,
            embed_features=64,
            layer_features=64,
            sr_kind="SuperresolutionHybrid2X",
            render=RenderConfig(depth_resolution=12, depth_resolution_importance=12),
        )
        d = dataclasses.replace(
            d, img_resolution=128, channel_base=2048, channel_max=16, conv_clamp=None
        )
        neural_res = 32
    elif arg:
        raise ValueError(f"configs/eg3d_ffhq512.py: unknown variant {arg!r}; expected '' or 'tiny'")
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0
    cfg.model = ml_collections.ConfigDict()
    cfg.model.generator = dataclasses.asdict(g)
    cfg.model.discriminator = dataclasses.asdict(d)
    cfg.model.neural_res = neural_res
    # Camera of the generator's pose conditioning and of the views (EG3D gen_samples.py).
    cfg.camera = dict(radius=2.7, fov_degrees=18.837, pivot=(0.0, 0.0, 0.2))
    cfg.sample = dict(truncation_psi=1.0, truncation_cutoff=14, noise_mode="const")
    return cfg
