"""The smallest trainable tri-plane GAN, for tests: 64² images (ours: SuperresolutionCPU2X),
16² planes, neural rendering 16², 6 + 6 samples per ray, coarse-to-fine D, batch 4.

    styleavatar-jax train --config configs/tiny.py --workdir runs/tiny --config.data.path=DATA
"""

from styleavatar_jax.models.discriminator import DiscriminatorConfig
from styleavatar_jax.models.triplane import GeneratorConfig
from styleavatar_jax.render.renderer import RenderConfig
from styleavatar_jax.train.config import RunConfig, TrainConfig, make_config
from styleavatar_jax.train.pose_labels import PoseLabelConfig


def get_config():
    g = GeneratorConfig(
        z_dim=32,
        img_resolution=64,
        backbone_resolution=16,
        channel_base=512,
        channel_max=16,
        embed_features=32,
        layer_features=32,
        decoder_hidden=16,
        sr_kind="SuperresolutionCPU2X",
        render=RenderConfig(depth_resolution=6, depth_resolution_importance=6),
    )
    d = DiscriminatorConfig(
        img_resolution=64, channel_base=512, channel_max=16, conv_clamp=None, mapping_layers=2
    )
    train = TrainConfig(
        batch_size=4,
        density_reg_points=64,
        blur_init_sigma=2.0,
        blur_fade_kimg=0.1,
        gpc_reg_fade_kimg=0.1,
        neural_res_initial=16,
        ema_kimg=0.01,
        total_kimg=0.1,
    )
    pose = PoseLabelConfig(mode="coarse_to_fine", fine_yaw_bins=12, fine_pitch_bins=2)
    run = RunConfig(checkpoint_kimg=0.05, keep_checkpoints=2, log_steps=5, snapshot_kimg=0.05,
                    snapshot_seeds=(0, 1), snapshot_yaws=(0.0, 90.0, 180.0), workers=2)  # fmt: skip
    camera = dict(radius=2.7, fov_degrees=18.837, pivot=(0.0, 0.0, 0.0))  # as the mannequins'
    return make_config(generator=g, discriminator=d, train=train, pose=pose, run=run,
                       camera=camera)  # fmt: skip
