"""A picture of where a dataset's cameras are: top and side views drawn with PIL."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND, INK, HEAD = (255, 255, 255), (40, 40, 40), (200, 200, 200)


def plot_scale(labels: np.ndarray, size: int) -> float:
    """Pixels per world unit so every camera fits a panel of `size` pixels."""
    extent = max(float(np.abs(np.asarray(labels)[:, [3, 7, 11]]).max()), 0.5)
    return 0.42 * size / extent


def panel_xy(points: np.ndarray, axes: tuple[int, int], signs: tuple[int, int], size: int,
             scale: float) -> np.ndarray:  # fmt: skip
    """World points [N, 3] -> panel pixels [N, 2]: (axis a → right, axis b → down)."""
    a, b = axes
    return np.stack([size / 2 + signs[0] * scale * points[:, a],
                     size / 2 + signs[1] * scale * points[:, b]], -1)  # fmt: skip


# (title, world axes shown right and down, their signs): top view looks down −y with the face
# (+z) towards the bottom; side view looks from +x with the face to the right, y up.
PANELS = (("top view: x to the right, z down (the face looks down)", (0, 2), (1, 1)),
          ("side view: z to the right, y up (the face looks right)", (2, 1), (1, -1)))  # fmt: skip


def camera_plot(labels: np.ndarray, size: int = 512) -> np.ndarray:
    """labels [N, 25] -> uint8 [size, 2·size, 3]: each camera a dot, coloured by yaw, with a
    tick along its viewing direction; the head a circle with a nose mark at +z."""
    labels = np.asarray(labels, np.float64)
    m = labels[:, :16].reshape(-1, 4, 4)
    origin, forward = m[:, :3, 3], m[:, :3, 2]
    yaw = np.arctan2(origin[:, 0], origin[:, 2])
    scale = plot_scale(labels, size)
    image = Image.new("RGB", (2 * size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for p, (title, axes, signs) in enumerate(PANELS):
        x0 = p * size
        c = np.array([x0 + size / 2, size / 2])
        r = 0.15 * scale
        draw.ellipse([*(c - r), *(c + r)], fill=HEAD, outline=INK)
        nose = panel_xy(np.array([[0.0, 0.0, 0.2]]), axes, signs, size, scale)[0] + [x0, 0]
        draw.line([*c, *nose], fill=INK, width=3)
        xy = panel_xy(origin, axes, signs, size, scale) + [x0, 0]
        tip = panel_xy(origin + 0.25 * forward, axes, signs, size, scale) + [x0, 0]
        for (px, py), (tx, ty), a in zip(xy, tip, yaw, strict=True):
            rgb = colorsys.hsv_to_rgb(((a / (2 * np.pi)) % 1.0), 0.85, 0.85)
            color = tuple(int(255 * v) for v in rgb)
            draw.line([px, py, tx, ty], fill=color, width=1)
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        draw.text((x0 + 8, 6), title, fill=INK)
        draw.line([x0, 0, x0, size], fill=INK)
    draw.text((8, size - 16), f"{len(labels)} cameras, colour = yaw", fill=INK)
    return np.asarray(image)
