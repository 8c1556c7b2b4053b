"""W-space diffusion (StyleAvatar3D §3.3): (w, CLIP embedding) pairs from a trained GAN,
a prior-transformer denoiser trained on them, and image/text -> w -> 3D avatar."""
