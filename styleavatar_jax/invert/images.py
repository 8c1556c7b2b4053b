"""Reading a user's picture (a portrait to invert) as the generator's image: RGB, square, R².

Any mode Pillow reads becomes RGB: grayscale is repeated, palette images are expanded, and
transparency (RGBA, LA, a palette with a transparent index) is composited on white. A
non-square picture is centre-cropped to a square, then resized with Lanczos.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

BACKGROUND = (255, 255, 255)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image -> mode 'RGB', transparency composited on white."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode != "RGB" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        a = np.asarray(image, np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or a.max() > 255 else 255.0
        image = Image.fromarray(np.clip(a / peak * 255 + 0.5, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def center_square(image: Image.Image) -> Image.Image:
    """Crop the largest centred square."""
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image.crop((left, top, left + s, top + s))


def load_image(path: str | os.PathLike, resolution: int) -> np.ndarray:
    """PNG/JPEG/... file -> float32 [R, R, 3] in [−1, 1] (x/127.5 − 1, EG3D's range)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()
            image = to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not an image Pillow can read (PNG, JPEG, ...): {e}") from e
    image = center_square(image)
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(image, np.float32) / 127.5 - 1.0
