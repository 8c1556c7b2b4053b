"""Offline dataset synthesis (PyTorch, diffusers): multi-view stylised avatar images from
Stable Diffusion + ControlNet, guided by pose/depth images of a 3D head at known cameras.
`python -m data_gen.run --help`; data_gen/README.md. Never imported by styleavatar_jax.
"""
