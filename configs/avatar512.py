"""StyleAvatar3D at 512²: EG3D's FFHQ-512 tri-plane architecture on a 360° stylized
multi-view dataset, with the coarse-to-fine pose-aware D (DESIGN §5) and EG3D's losses
and schedules (train.py --cfg=ffhq --batch=32 --gamma=1 --gen_pose_cond=True; neural
rendering 64² fading to 128² over 1000 kimg, the resolution EG3D's 512² models end at).

    styleavatar-jax train --config configs/avatar512.py --workdir runs/avatar512 \\
        --config.data.path=data/avatars512.zip
"""

from styleavatar_jax.models.discriminator import DiscriminatorConfig
from styleavatar_jax.models.triplane import GeneratorConfig
from styleavatar_jax.train.config import RunConfig, TrainConfig, make_config
from styleavatar_jax.train.pose_labels import PoseLabelConfig


def get_config():
    g = GeneratorConfig()  # EG3D FFHQ-512: backbone 256², SR 8X-DC
    d = DiscriminatorConfig()
    train = TrainConfig(
        batch_size=32,
        r1_gamma=1.0,
        neural_res_initial=64,
        neural_res_final=128,
        neural_res_fade_kimg=1000.0,
        total_kimg=25000.0,
    )
    pose = PoseLabelConfig(
        mode="coarse_to_fine"
    )  # exclusive; 12 × 4 fine bins, 4 coarse, p_h .9, p_l .2
    return make_config(generator=g, discriminator=d, train=train, pose=pose, run=RunConfig())
