"""Outputs: image grids (and, later, videos and meshes)."""
