"""Outputs: image grids, turntable frames and videos, meshes, latent walks, camera plots."""
