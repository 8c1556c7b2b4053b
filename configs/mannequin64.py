"""The shipped model: a 360° tri-plane avatar GAN on the embedded mannequin data at 64²,
sized to converge on CPUs (and in minutes on a GPU).

Generator: 32² tri-planes of 32 channels (backbone 32², channels ≤ 64), neural rendering
32², then SuperresolutionCPU2X (ours) to 64². D: EG3D's dual discriminator at 64² with the
coarse-to-fine pose label (paper: one label type per image; 12 fine yaw bins that nest in
the 4 view groups). Cameras look at the origin, as the mannequin data's do. Generator pose
conditioning is off: the mannequin images are renders of one 3D head, so appearance does
not depend on the view (EG3D's GPC exists for FFHQ's pose-correlated attributes); the
ablation (BENCHMARKS.md) checks it.

    styleavatar-jax make-dataset mannequin --out data/m64 --num-ids 500 --views-per-id 8 \\
        --res 64 --guidance none
    styleavatar-jax train --config configs/mannequin64.py --workdir runs/mannequin64 \\
        --config.data.path=data/m64 --resume
"""

from styleavatar_jax.models.discriminator import DiscriminatorConfig
from styleavatar_jax.models.triplane import GeneratorConfig
from styleavatar_jax.render.renderer import RenderConfig
from styleavatar_jax.train.config import RunConfig, TrainConfig, make_config
from styleavatar_jax.train.pose_labels import PoseLabelConfig

CAMERA = dict(radius=2.7, fov_degrees=18.837, pivot=(0.0, 0.0, 0.0))  # the mannequin orbit


def get_config():
    g = GeneratorConfig(
        z_dim=64,
        img_resolution=64,
        backbone_resolution=32,
        channel_base=4096,
        channel_max=64,
        embed_features=64,
        layer_features=64,
        sr_kind="SuperresolutionCPU2X",
        c_gen_conditioning_zero=True,  # no generator pose conditioning (module docstring)
        render=RenderConfig(depth_resolution=12, depth_resolution_importance=12),
    )
    d = DiscriminatorConfig(
        img_resolution=64, channel_base=4096, channel_max=64, conv_clamp=None, mapping_layers=2
    )
    train = TrainConfig(
        batch_size=4,  # 2.9× faster per step than 8 on 2 cores (configs/demo.py)
        lr_g=0.0025,
        lr_d=0.002,
        r1_gamma=1.0,
        density_reg_points=256,
        blur_init_sigma=2.0,
        blur_fade_kimg=4.0,
        neural_res_initial=32,
        ema_kimg=1.25,  # EG3D: 10 · batch / 32
        ema_rampup=0.05,
        total_kimg=1000.0,
    )
    pose = PoseLabelConfig(mode="coarse_to_fine", fine_yaw_bins=12, fine_pitch_bins=2)
    run = RunConfig(checkpoint_kimg=2.0, keep_checkpoints=2, log_steps=50, snapshot_kimg=2.0,
                    workers=2)  # fmt: skip
    return make_config(generator=g, discriminator=d, train=train, pose=pose, run=run,
                       camera=CAMERA)  # fmt: skip
