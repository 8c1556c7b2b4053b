"""The camera validator names each wrong convention; label statistics invert the sampler."""

import ast

import numpy as np
import pytest

from styleavatar_jax import cameras
from styleavatar_jax.data import camera_check
from styleavatar_jax.export.camera_plot import PANELS, camera_plot, panel_xy, plot_scale

YAW = np.array([0.0, 45.0, 90.0, 135.0, 180.0, -60.0, -150.0])
PITCH = np.array([0.0, 30.0, -30.0, 10.0, -5.0, 25.0, -20.0])


def good_labels(fov=18.837):
    pose = cameras.pose_from_angles(np.deg2rad(YAW), np.deg2rad(PITCH), 2.7, (0.0, 0.0, 0.0))
    return np.asarray(cameras.make_label(pose, cameras.fov_to_intrinsics(fov)), np.float64)


def kinds(labels):
    names = [f"img{i}" for i in range(len(labels))]
    return {p.kind for p in camera_check.validate_labels(labels, names)}


def test_valid_labels_pass_and_stats_invert_the_sampler():
    labels = good_labels(fov=12.0)
    assert kinds(labels) == set()
    stats = camera_check.label_stats(labels)
    np.testing.assert_allclose((stats["yaw"] - YAW + 180) % 360 - 180, 0, atol=1e-3)
    np.testing.assert_allclose(stats["pitch"], PITCH, atol=1e-3)
    np.testing.assert_allclose(stats["radius"], 2.7, atol=1e-5)
    np.testing.assert_allclose(stats["fov"], 12.0, atol=1e-3)


def _edit(fn):
    labels = good_labels()
    m, k = labels[:, :16].reshape(-1, 4, 4), labels[:, 16:].reshape(-1, 3, 3)
    fn(m, k)
    return np.concatenate([m.reshape(-1, 16), k.reshape(-1, 9)], 1)


@pytest.mark.parametrize(
    "edit, kind",
    [
        (lambda m, k: m[:, :3, 1:3].__imul__(-1), "opengl"),
        (lambda m, k: m.__setitem__(slice(None), np.linalg.inv(m)), "world2cam"),
        (lambda m, k: k[:, :2].__imul__(512), "pixel-intrinsics"),
        (lambda m, k: m[:, :3, 0].__imul__(-1), "left-handed"),
        (lambda m, k: m[:, :3, :3].__imul__(1.1), "not-orthonormal"),
        (lambda m, k: m.__setitem__((slice(None), 3, 0), 0.5), "bottom-row"),
        (lambda m, k: m.__setitem__((slice(None), 0, 3), m[:, 0, 3] + 3.0), "not-aimed"),
        (lambda m, k: m.__setitem__((slice(None), 0, 0), np.nan), "not-finite"),
        (lambda m, k: k.__setitem__((slice(None), 0, 2), 0.8), "principal-point"),
        (lambda m, k: m.__setitem__(slice(None), np.swapaxes(m, 1, 2)), "column-major"),
        (
            lambda m, k: m.__setitem__(slice(None), np.linalg.inv(m * [1, -1, -1, 1])),
            "opengl-view",
        ),  # fmt: skip
        (lambda m, k: m[:, :3, 3].__imul__(40.0), "scale"),  # positions in other units
        (lambda m, k: m[:, :3, 3].__iadd__([0.0, 1.6, 0.0]), "off-centre"),  # head not at 0
        (lambda m, k: m.__setitem__(slice(None), np.diag([1.0, -1, -1, 1]) @ m), "world-up"),
    ],
)
def test_each_wrong_convention_is_named(edit, kind):
    found = kinds(_edit(edit))
    assert kind in found, found


def test_summary_groups_and_counts():
    labels = _edit(lambda m, k: m[:, :3, 1:3].__imul__(-1))
    problems = camera_check.validate_labels(labels, [f"img{i}" for i in range(len(labels))])
    text = camera_check.summarize_problems(problems)
    assert f"{len(YAW)} × opengl" in text and "img0, img1, img2 (+4 more)" in text
    hist = camera_check.text_histogram(YAW, 12, (-180, 180))
    assert sum(int(line.split()[-1]) for line in hist.splitlines()) == len(YAW)
    with pytest.raises(ValueError, match=r"\[N, 25\]"):
        camera_check.validate_labels(labels[:, :24], ["a"] * len(labels))


def test_camera_plot_marks_each_camera():
    labels = good_labels()
    image = camera_plot(labels, size=256)
    assert image.shape == (256, 512, 3) and image.dtype == np.uint8
    scale = plot_scale(labels, 256)
    _, axes, signs = PANELS[0]
    origin = labels[:, [3, 7, 11]]
    for x, y in panel_xy(origin, axes, signs, 256, scale).round().astype(int):
        assert tuple(image[y, x]) != (255, 255, 255)


Z_UP = np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # y-up -> z-up
OPENGL = np.array([1.0, -1.0, -1.0, 1.0])  # right-multiplied: flips the camera's y and z axes


@pytest.mark.parametrize("axes", [np.ones(4), OPENGL])
def test_world_up_fix_is_the_one_named(axes):
    """A z-up world (Blender's, with its OpenGL cameras or not): applying the fixes the
    messages give, as written, leaves no problem."""
    labels = _edit(lambda m, k: m.__setitem__(slice(None), Z_UP @ m * axes))
    problems = camera_check.validate_labels(labels, [f"img{i}" for i in range(len(labels))])
    opengl = {"opengl"} if axes[1] < 0 else set()
    assert {p.kind for p in problems} == {"world-up"} | opengl
    up = next(p for p in problems if p.kind == "world-up")
    assert up.name == camera_check.DATASET and "[0.0, 0.0, 1.0]" in up.message
    w = np.array(ast.literal_eval(up.message.split("W = ")[1]))  # the matrix it prints
    np.testing.assert_array_equal(w, np.linalg.inv(Z_UP))
    assert kinds(_edit(lambda m, k: m.__setitem__(slice(None), w @ Z_UP @ m))) == set()


def test_off_centre_names_the_aim_point():
    labels = _edit(lambda m, k: m[:, :3, 3].__iadd__([0.1, 1.6, -0.2]))
    problems = camera_check.validate_labels(labels, [f"img{i}" for i in range(len(labels))])
    (off,) = [p for p in problems if p.kind == "off-centre"]
    assert "[0.1, 1.6, -0.2]" in off.message
    assert camera_check.summarize_problems(problems).startswith("  1 × off-centre")


@pytest.mark.parametrize("pitch", [60.0, -80.0])
def test_one_steep_view_is_not_a_world_up_problem(pitch):
    """At one yaw the right axes fix no plane and the mean up axis leans with the pitch."""
    pose = cameras.pose_from_angles(np.zeros(4), np.deg2rad(np.full(4, pitch)), 2.7, (0, 0, 0))
    assert kinds(np.asarray(cameras.make_label(pose, cameras.fov_to_intrinsics(18.837)))) == set()


def test_rolled_cameras_pass_and_upside_down_ones_do_not():
    a = np.deg2rad(np.linspace(-40, 40, len(YAW)))
    c, s, zero, one = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    roll = np.stack([c, -s, zero, s, c, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    assert kinds(_edit(lambda m, k: m[:, :3, :3].__imatmul__(roll))) == set()
    upside_down = _edit(lambda m, k: m[:, :3, :3].__imatmul__(np.diag([-1.0, -1, 1])))
    assert kinds(upside_down) == kinds(upside_down[:1]) == {"world-up"}


def test_pixel_intrinsics_message_names_the_resolution():
    labels = _edit(lambda m, k: k[:, :2].__imul__(512))
    problems = camera_check.validate_labels(labels, ["a"] * len(labels), resolution=512)
    assert "divide the first two rows by the image size (512)" in problems[0].message
