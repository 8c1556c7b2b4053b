"""W-space diffusion (StyleAvatar3D): prior transformer over w, cosine schedule with 1000
steps, x₀ prediction (DESIGN §11), condition dropout 0.1, DDIM 50 steps with guidance λ = 3.

    styleavatar-jax wdiff-train --config configs/wdiff.py --data PAIRS.npz --workdir runs/wd

arg 'demo': sized for the CPU demo GAN (512-d w from 2.9k pairs; ~8 min on 2 cores);
arg 'tiny': for tests.
"""

from styleavatar_jax.wdiff.config import (
    DiffusionConfig,
    SampleConfig,
    WDiffRunConfig,
    WDiffTrainConfig,
    make_config,
)


def get_config(arg: str = ""):
    if arg == "":
        return make_config(
            model=dict(width=1024, depth=8, heads=16),
            train=WDiffTrainConfig(batch_size=512, lr=3e-4, total_steps=100_000),
            run=WDiffRunConfig(log_steps=100, checkpoint_steps=2000),
        )
    if arg == "demo":
        return make_config(
            model=dict(width=128, depth=4, heads=4),
            train=WDiffTrainConfig(
                batch_size=256, lr=1e-3, warmup_steps=200, total_steps=3000, ema_decay=0.999
            ),
            run=WDiffRunConfig(log_steps=100, checkpoint_steps=1000),
        )
    if arg == "tiny":
        return make_config(
            model=dict(width=32, depth=2, heads=2, mlp_ratio=2),
            diffusion=DiffusionConfig(num_train_steps=100),
            train=WDiffTrainConfig(
                batch_size=16, lr=1e-3, warmup_steps=5, total_steps=8, ema_decay=0.9, heldout=0.25
            ),
            sample=SampleConfig(steps=5, guidance=2.0),
            run=WDiffRunConfig(log_steps=2, checkpoint_steps=4, keep_checkpoints=2),
        )
    raise ValueError(f"configs/wdiff.py: unknown variant {arg!r}; expected '', 'demo' or 'tiny'")
