"""Image grids written as PNG, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from styleavatar_jax.files import write_atomic


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [−1, 1] (EG3D's range) -> uint8, as EG3D's gen_samples (x·127.5 + 128)."""
    return np.clip(np.asarray(images, np.float32) * 127.5 + 128, 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray) -> np.ndarray:
    """images [rows, cols, H, W, C] -> one image [rows·H, cols·W, C]."""
    rows, cols, h, w, c = images.shape
    return images.transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write uint8 [H, W, 3|1] to path atomically."""
    pixels = image.squeeze(-1) if image.shape[-1] == 1 else image
    return write_atomic(path, lambda f: Image.fromarray(pixels).save(f, format="PNG"))
