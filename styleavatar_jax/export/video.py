"""Animated outputs: frames -> GIF (Pillow, no ffmpeg needed), written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from styleavatar_jax.export.files import write_atomic


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 12.0) -> Path:
    """frames uint8 [T, H, W, 3] -> looping GIF at `fps` (adaptive palette per frame)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    images = [Image.fromarray(f) for f in frames]
    duration = max(20, round(1000 / fps))  # ms; browsers clamp below 20

    def write(f):
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                       duration=duration, loop=0, optimize=False)  # fmt: skip

    return write_atomic(path, write)
