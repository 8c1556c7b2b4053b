"""StyleAvatar3D at 256² for one 16–24 GB GPU: EG3D's 256² layout (backbone 256², SR
SuperresolutionHybrid4X 128² -> 256²), neural rendering
64², batch 16 as 4 micro-batches of 4 (gradient accumulation), bfloat16 backbone and SR.

    styleavatar-jax train --config configs/avatar256.py --workdir runs/avatar256 \\
        --config.data.path=data/avatars256.zip
"""

from styleavatar_jax.models.discriminator import DiscriminatorConfig
from styleavatar_jax.models.triplane import GeneratorConfig
from styleavatar_jax.train.config import RunConfig, TrainConfig, make_config
from styleavatar_jax.train.pose_labels import PoseLabelConfig


def get_config():
    g = GeneratorConfig(
        img_resolution=256,
        sr_kind="SuperresolutionHybrid4X",
        backbone_bf16=True,
        sr_bf16=True,
    )
    d = DiscriminatorConfig(img_resolution=256, bf16=True)
    train = TrainConfig(
        batch_size=16,
        accum_steps=4,
        r1_gamma=1.0,
        neural_res_initial=64,
        blur_fade_kimg=100.0,  # EG3D: blur_fade_kimg · batch / 32
        ema_kimg=5.0,  # EG3D: 10 · batch / 32
        total_kimg=25000.0,
    )
    pose = PoseLabelConfig(mode="coarse_to_fine")
    return make_config(generator=g, discriminator=d, train=train, pose=pose, run=RunConfig())
