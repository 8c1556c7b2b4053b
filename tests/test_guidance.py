"""Depth guidance: MiDaS-style normalised inverse depth from an exact depth map."""

import numpy as np
import pytest

from styleavatar_jax.heads.guidance import depth_guidance, inverse_depth


def test_near_bright_far_dark_background_black():
    depth = np.full((2, 4, 5), np.inf)
    mask = np.zeros((2, 4, 5), bool)
    depth[0, 1, 1:4], mask[0, 1, 1:4] = [2.0, 2.5, 3.0], True
    depth[1, 2, :2], mask[1, 2, :2] = [1.0, 4.0], True
    img = depth_guidance(depth, mask, floor=0.0)
    assert img.dtype == np.uint8 and img.shape == (2, 4, 5, 3)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all()
    g = img[..., 0]
    assert g[0, 1, 1] == 255 and g[0, 1, 3] == 0  # per-image range hit exactly
    assert g[1, 2, 0] == 255 and g[1, 2, 1] == 0
    # 1/2.5 sits at (0.4 − 1/3) / (0.5 − 1/3) = 0.4 of the range: int(0.4 · 255) = 101 or 102
    assert g[0, 1, 2] in (101, 102) and g[0, 1, 1] > g[0, 1, 2] > g[0, 1, 3]
    # The default floor keeps the farthest foreground point apart from the background.
    floored = depth_guidance(depth, mask)[..., 0]
    assert floored[0, 1, 1] == 255 and floored[0, 1, 3] == 51 and floored[0, 0, 0] == 0
    assert not g[~mask].any()


def test_degenerate_images():
    depth = np.full((3, 3), 2.0)
    one_depth = inverse_depth(depth, np.ones((3, 3), bool))
    np.testing.assert_array_equal(one_depth, 1.0)
    np.testing.assert_array_equal(depth_guidance(depth, np.zeros((3, 3), bool)), 0)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="positive ray distances"):
        depth_guidance(np.full((2, 2), np.inf), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="equal"):
        depth_guidance(np.ones((2, 2)), np.ones((2, 3), bool))
