"""EG3D's FFHQ-512 reference settings (train.py --cfg=ffhq --batch=32 --gamma=1
--gen_pose_cond=True --mirror=1): its architecture, its 25-d camera label for D (no
coarse-to-fine), its losses and schedules. arg 'tiny': the CPU-sized architecture of
tests/fixtures/eg3d_tiny.pkl (z 64, cbase 2048, cmax 16, 2X SR to 128, 12+12 depth
samples, neural res 32). arg '128': FFHQ-512 channels with SR 2X to 128² and neural 64²
(a mid-sized benchmark point that a CPU can still train).

    styleavatar-jax sample --config=configs/eg3d_ffhq512.py:tiny --seeds 0-3 --out out/
    styleavatar-jax train --config configs/eg3d_ffhq512.py --workdir runs/ffhq \
        --config.data.path=FFHQ_512.zip [--init-from ffhq512-128.pkl]
"""

import dataclasses

import ml_collections

from styleavatar_jax.models.discriminator import DiscriminatorConfig
from styleavatar_jax.models.triplane import GeneratorConfig
from styleavatar_jax.render.renderer import RenderConfig
from styleavatar_jax.train.config import RunConfig, TrainConfig, make_config
from styleavatar_jax.train.pose_labels import PoseLabelConfig


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
    elif arg == "128":
        g = dataclasses.replace(g, img_resolution=128, sr_kind="SuperresolutionHybrid2X")
        d = dataclasses.replace(d, img_resolution=128)
        neural_res = 64
    elif arg:
        raise ValueError(
            f"configs/eg3d_ffhq512.py: unknown variant {arg!r}; expected '', 'tiny' or '128'"
        )
    # EG3D: neural rendering 64² for the first stage; 512² models end at 128² (second stage).
    train = TrainConfig(batch_size=32, r1_gamma=1.0, neural_res_initial=min(64, neural_res))
    return make_config(
        generator=g,
        discriminator=d,
        train=train,
        pose=PoseLabelConfig(mode="camera"),
        run=RunConfig(),
        neural_res=neural_res,
        # Camera of the generator's pose conditioning and of the views (EG3D gen_samples.py).
        camera=dict(radius=2.7, fov_degrees=18.837, pivot=(0.0, 0.0, 0.2)),
    )
