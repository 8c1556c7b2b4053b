"""OpenPose drawing: pinned against OpenCV's output of ControlNet's annotator, and by hand."""

from pathlib import Path

import numpy as np
import pytest

from styleavatar_jax.heads import openpose as op

REF = Path(__file__).parent / "fixtures" / "openpose_ref.npz"

# A T-pose on a 200×200 canvas, in pixels (x, y); limbs' midpoints are clear of other marks.
T_POSE = {
    "nose": (100, 40), "neck": (100, 70), "r_shoulder": (70, 70), "r_elbow": (40, 70),
    "r_wrist": (15, 70), "l_shoulder": (130, 70), "l_elbow": (160, 70), "l_wrist": (185, 70),
    "r_hip": (85, 130), "r_knee": (85, 160), "r_ankle": (85, 190), "l_hip": (115, 130),
    "l_knee": (115, 160), "l_ankle": (115, 190), "r_eye": (92, 34), "l_eye": (108, 34),
    "r_ear": (82, 38), "l_ear": (118, 38),
}  # fmt: skip


def _uv(pixels, h, w):
    """Pixel (x, y) -> normalised uv at that pixel's centre."""
    return (np.asarray(pixels, np.float64) + 0.5) / np.array([w, h])


def _t_pose(size=200):
    return _uv([T_POSE[n] for n in op.BODY_NAMES], size, size), np.ones(18, bool)


def test_layout_constants():
    assert op.BODY_NAMES[:2] == ("nose", "neck") and op.BODY_NAMES[16:] == ("r_ear", "l_ear")
    assert len(op.BODY_NAMES) == len(op.COLORS) == 18 and len(op.LIMBS) == 17
    assert op.COLORS[0] == (255, 0, 0) and op.COLORS[6] == (0, 255, 0)
    assert op.COLORS[12] == (0, 0, 255) and op.COLORS[17] == (255, 0, 85)
    assert op.LIMBS[0] == (1, 2) and op.LIMBS[12] == (1, 0) and op.LIMBS[16] == (15, 17)
    assert len(op.FACE_NAMES) == len(set(op.FACE_NAMES)) == op.NUM_FACE == 70
    flat = [i for idx in op.FACE_GROUPS.values() for i in idx]
    assert flat == list(range(70))
    assert op.FACE_NAMES[30] == "nose_bridge_3" and op.FACE_NAMES[68:] == ("r_pupil", "l_pupil")


def test_opencv_circle_and_ellipse_rules():
    # Row half-widths of cv2.circle(..., thickness=-1), radii 4 and 3.
    np.testing.assert_array_equal(op.circle_half_widths(4), [0, 2, 3, 3, 4, 3, 3, 2, 0])
    np.testing.assert_array_equal(op.circle_half_widths(3), [0, 2, 2, 3, 2, 2, 0])
    poly = op.ellipse_polygon((50, 50), (30, 4), 0)
    assert poly[0].tolist() == [80, 50] and len(poly) == len(np.unique(poly, axis=0)) + 1
    assert poly[:, 0].min() == 20 and poly[:, 1].min() == 46 and poly[:, 1].max() == 54


@pytest.mark.parametrize("version, key", [("1.1", "image_v11"), ("1.0", "image_v10")])
def test_matches_opencv_annotator(version, key):
    """Random poses and faces (64×96), drawn by the annotator's code with OpenCV 4.14
    (tests/fixtures/make_openpose_ref.py): every pixel equal."""
    ref = np.load(REF)
    out = op.draw_poses(
        ref["body_uv"], ref["body_visible"], ref["face_uv"], ref["face_visible"],
        height=64, width=96, version=version,
    )  # fmt: skip
    assert out.dtype == np.uint8 and out.shape == (4, 64, 96, 3)
    np.testing.assert_array_equal(out, ref[key])


def test_colours_at_keypoints_and_limb_midpoints():
    uv, vis = _t_pose()
    img = op.draw_pose(uv, vis, height=200, width=200)
    assert img.dtype == np.uint8 and img.shape == (200, 200, 3)
    for i, name in enumerate(op.BODY_NAMES):
        x, y = T_POSE[name]
        assert tuple(img[y, x]) == op.COLORS[i], name
    for i, (a, b) in enumerate(op.LIMBS[:13]):  # the head's short limbs sit under circles
        (xa, ya), (xb, yb) = T_POSE[op.BODY_NAMES[a]], T_POSE[op.BODY_NAMES[b]]
        x, y = int((xa + xb + 1) / 2), int((ya + yb + 1) / 2)
        assert tuple(img[y, x]) == tuple(int(c * 0.6) for c in op.COLORS[i]), i
    assert tuple(img[70, 85]) == (153, 0, 0)  # neck–r_shoulder: 0.6 · red
    assert tuple(img[175, 85]) == (0, 153, 102)  # r_knee–r_ankle, limb 8: 0.6 · (0, 255, 170)
    assert not img[:10].any() and not img[:, :5].any()  # background black


def test_person_right_is_image_left():
    uv, vis = _t_pose()
    img = op.draw_pose(uv, vis, height=200, width=200)
    assert tuple(img[70, 70]) == op.COLORS[op.BODY_INDEX["r_shoulder"]]  # x = 70 < 100


def test_limb_needs_both_ends():
    uv, vis = _t_pose()
    vis[op.BODY_INDEX["r_wrist"]] = False
    img = op.draw_pose(uv, vis, height=200, width=200)
    assert not img[70, 15].any()  # the wrist
    assert not img[70, 27].any()  # the elbow–wrist limb's midpoint
    assert tuple(img[70, 40]) == op.COLORS[op.BODY_INDEX["r_elbow"]]
    assert tuple(img[70, 55]) == (153, 102, 0)  # shoulder–elbow: 0.6 · (255, 170, 0)


def test_stick_width():
    """Half-width 4: 9 px across a horizontal limb, ≈ 9 px across a diagonal one."""
    size = 128
    vis = np.zeros(18, bool)
    vis[[1, 2]] = True  # neck, r_shoulder: limb 0 only
    for (x0, y0), (x1, y1) in [((30, 60), (90, 60)), ((30, 30), (90, 90))]:
        uv = np.zeros((18, 2))
        uv[1], uv[2] = _uv([x0, y0], size, size), _uv([x1, y1], size, size)
        img = op.draw_pose(uv, vis, height=size, width=size)
        limb = np.all(img == (153, 0, 0), axis=-1)
        ys, xs = np.nonzero(limb)
        d = np.array([x1 - x0, y1 - y0], np.float64) / np.hypot(x1 - x0, y1 - y0)
        rel = np.stack([xs - (x0 + x1) / 2, ys - (y0 + y1) / 2], -1)
        along, across = rel @ d, rel @ np.array([-d[1], d[0]])
        near_mid = np.abs(along) < 1
        width = across[near_mid].max() - across[near_mid].min()
        assert 7.5 <= width <= 9.5, width
        if y0 == y1:
            assert limb[:, 60].sum() == 9 and limb[56:65, 60].all()


def test_face_dots_white_radius_3_drawn_last():
    uv, vis = _t_pose()
    face = np.zeros((70, 2))
    face_vis = np.zeros(70, bool)
    face[30], face_vis[30] = _uv([150, 110], 200, 200), True  # on the bare canvas
    face[31], face_vis[31] = _uv([100, 70], 200, 200), True  # over the neck's circle
    face[32], face_vis[32] = _uv([0, 50], 200, 200), True  # column 0: the annotator skips it
    img = op.draw_pose(uv, vis, face, face_vis, height=200, width=200)
    white = np.all(img == 255, axis=-1)
    assert white[107:114, 147:154].sum() == 29 and white[110, 147:154].all()
    assert not img[110, 146].any() and not img[106, 150].any()
    assert white[70, 100]
    assert not white[:, :4].any()


def test_version_10_blends_limbs_over_circles():
    """ControlNet 1.0 draws circles first, then blends each limb 0.4 : 0.6 over them."""
    size = 64
    uv = np.zeros((18, 2))
    vis = np.zeros(18, bool)
    vis[[1, 2]] = True
    uv[1], uv[2] = _uv([20, 30], size, size), _uv([40, 30], size, size)
    new = op.draw_pose(uv, vis, height=size, width=size, version="1.1")
    old = op.draw_pose(uv, vis, height=size, width=size, version="1.0")
    assert tuple(new[30, 20]) == (255, 85, 0)  # the neck's circle on top
    assert tuple(old[30, 20]) == (255, 34, 0)  # rint(0.4·(255, 85, 0) + 0.6·(255, 0, 0))
    assert tuple(old[30, 30]) == tuple(new[30, 30]) == (153, 0, 0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"body_uv \(17, 2\)"):
        op.draw_pose(np.zeros((17, 2)), np.ones(17, bool), height=8, width=8)
    with pytest.raises(ValueError, match="version"):
        op.draw_pose(np.zeros((18, 2)), np.ones(18, bool), height=8, width=8, version="2")
