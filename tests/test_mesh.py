"""User meshes: loading, ray-cast depth, keypoint projection and visibility, bad inputs."""

import json
import math

import numpy as np
import pytest
import trimesh

from styleavatar_jax import cameras
from styleavatar_jax.heads import mesh as M
from styleavatar_jax.heads import openpose as op

R = 0.25  # sphere radius
RES = 65  # odd: the middle pixel's ray is the optical axis


def _labels(yaws, pitch=0.0):
    yaw = np.asarray(yaws, np.float32)
    c2w = cameras.pose_from_angles(yaw, np.full_like(yaw, pitch), cameras.RADIUS, (0.0, 0.0, 0.0))
    k = cameras.fov_to_intrinsics(np.full_like(yaw, cameras.FOV_DEGREES))
    return np.asarray(cameras.make_label(c2w, k))


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=3, radius=R)


def _write_keypoints(path, body, face=None):
    data = {"body": body} if face is None else {"body": body, "face": face}
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_load_round_trip(tmp_path, sphere, suffix):
    path = tmp_path / f"head{suffix}"
    sphere.export(path)
    mesh = M.load_mesh(path)
    assert len(mesh.faces) == len(sphere.faces)
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=1), R, atol=1e-5)


def test_load_glb_scene_joins_meshes_with_transforms(tmp_path, sphere):
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    scene = trimesh.Scene()
    scene.add_geometry(sphere, node_name="head")
    scene.add_geometry(box, node_name="hat", transform=trimesh.transformations.translation_matrix(
        (0.0, 0.4, 0.0)))  # fmt: skip
    path = tmp_path / "head.glb"
    scene.export(path)
    mesh = M.load_mesh(path)
    assert len(mesh.faces) == len(sphere.faces) + len(box.faces)
    np.testing.assert_allclose(mesh.bounds[1, 1], 0.45, atol=1e-5)


def test_render_sphere_depth_mask_normal(sphere):
    out = M.render_mesh(sphere, _labels([0.0, math.pi]), RES)
    assert out["depth"].shape == (2, RES, RES) and out["normal"].shape == (2, RES, RES, 3)
    mid = RES // 2
    np.testing.assert_allclose(out["depth"][:, mid, mid], cameras.RADIUS - R, atol=1e-3)
    # The silhouette of a sphere seen from distance D: a disk of angular radius asin(R/D).
    focal = float(np.asarray(cameras.fov_to_intrinsics(cameras.FOV_DEGREES))[0, 0])
    radius_px = math.tan(math.asin(R / cameras.RADIUS)) * focal * RES
    area = out["mask"].sum(axis=(1, 2))
    np.testing.assert_allclose(area, math.pi * radius_px**2, rtol=0.02)
    front, back = out["normal"][0, mid, mid], out["normal"][1, mid, mid]
    assert front @ np.array([0, 0, 1.0]) > 0.99 and back @ np.array([0, 0, -1.0]) > 0.99
    bg = ~out["mask"]
    assert np.isinf(out["depth"][bg]).all() and not out["normal"][bg].any()
    assert (out["face"][bg] == -1).all() and (out["face"][~bg] >= 0).all()
    assert np.isfinite(out["depth"][~bg]).all()


def test_render_matches_trimesh_ray_caster():
    """Nearest hits of an occluding pair, against trimesh's own (slow) ray caster."""
    back = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    front = trimesh.creation.box((0.2, 0.2, 0.2))
    front.apply_translation((0.1, 0.05, 0.35))
    mesh = trimesh.util.concatenate([back, front])
    c = _labels([0.4], pitch=0.2)
    res = 14
    out = M.render_mesh(mesh, c, res)
    from styleavatar_jax.render.rays import pixel_rays

    origins, dirs = (np.asarray(a[0], np.float64) for a in pixel_rays(*cameras.split_label(c), res))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    tri, ray, loc = mesh.ray.intersects_id(origins, dirs, multiple_hits=False,
                                           return_locations=True)  # fmt: skip
    ref = np.full(res * res, np.inf)
    ref[ray] = np.linalg.norm(loc - origins[ray], axis=1)
    np.testing.assert_array_equal(out["mask"][0].ravel(), np.isfinite(ref))
    np.testing.assert_allclose(out["depth"][0].ravel(), ref, rtol=1e-6)
    assert np.isin(out["face"][0].ravel()[ray], np.arange(len(back.faces), len(mesh.faces))).any()


def test_keypoint_visible_from_front_not_from_behind(tmp_path, sphere):
    p = np.array([0.08, 0.1, 0.0])
    p[2] = math.sqrt(R**2 - p[0] ** 2 - p[1] ** 2)  # on the sphere, towards the viewer
    face = [None] * 70
    face[30] = p.tolist()
    body = {"nose": p.tolist(), "neck": [0, 0, 0]}
    kp = M.load_keypoints(_write_keypoints(tmp_path / "k.json", body, face))
    c = _labels([0.0, math.pi])
    depth = M.render_mesh(sphere, c, RES)["depth"]
    body_uv, body_vis, face_uv, face_vis = M.mesh_keypoints_2d(sphere, kp, c, depth)
    assert body_uv.shape == (2, 18, 2) and face_vis.shape == (2, 70)
    nose = op.BODY_INDEX["nose"]
    assert body_vis[0, nose] and face_vis[0, 30]
    assert not body_vis[1, nose] and not face_vis[1, 30]
    # Front camera at (0, 0, D): x right = +x, y down = −y, so uv = 0.5 + f·(x, −y)/(D − z).
    focal = float(np.asarray(cameras.fov_to_intrinsics(cameras.FOV_DEGREES))[0, 0])
    expected = 0.5 + focal * np.array([p[0], -p[1]]) / (cameras.RADIUS - p[2])
    np.testing.assert_allclose(body_uv[0, nose], expected, atol=1e-5)
    col, row = (expected * RES).astype(int)
    assert depth[0, row, col] < cameras.RADIUS  # the keypoint's pixel is on the sphere
    # The neck at the centre (depth R under the surface) is a joint: seen from both sides.
    assert body_vis[:, op.BODY_INDEX["neck"]].all()
    # Absent points are never visible.
    assert body_vis[:, 2:14].sum() == 0 and face_vis[:, :30].sum() == 0


def test_facing_hides_face_points_on_a_thin_surface(tmp_path):
    """A one-sided quad at z = 0 facing +z: from behind, the depth test alone passes."""
    quad = trimesh.Trimesh(
        [[-0.3, -0.3, 0], [0.3, -0.3, 0], [0.3, 0.3, 0], [-0.3, 0.3, 0]], [[0, 1, 2], [0, 2, 3]]
    )
    face = [None] * 70
    face[30] = [0.0, 0.05, 0.0]
    body = {"nose": [0.0, 0.0, 0.0], "neck": [0.0, -0.1, 0.05]}  # neck: off the surface
    kp = M.parse_keypoints({"body": body, "face": face}, tmp_path / "k.json")
    c = _labels([0.0, math.pi])
    depth = M.render_mesh(quad, c, 33)["depth"]
    _, body_vis, _, face_vis = M.mesh_keypoints_2d(quad, kp, c, depth)
    assert face_vis[0, 30] and not face_vis[1, 30]
    assert body_vis[0, 0] and not body_vis[1, 0]  # the nose lies on the surface: faced
    assert body_vis[:, 1].all()  # a joint 0.05 off the surface skips the facing test


def test_load_head_and_missing_keypoints(tmp_path, sphere):
    path = tmp_path / "bust.obj"
    sphere.export(path)
    with pytest.raises(FileNotFoundError, match=r"bust\.obj.*bust\.keypoints\.json"):
        M.load_head(path)
    _write_keypoints(M.keypoints_path(path), {"nose": [0, 0, R]})
    mesh, kp = M.load_head(path)
    assert len(mesh.faces) == len(sphere.faces) and kp.body_present.sum() == 1


@pytest.mark.parametrize(
    "data, match",
    [
        ({"body": {"left_hand": [0, 0, 0]}}, r"bad\.json: body key 'left_hand'"),
        ({"body": {"nose": [0, 0]}}, r"bad\.json: body\.nose"),
        ({"body": {"nose": [0, 0, "1"]}}, r"bad\.json: body\.nose"),
        ({"body": {"nose": [0, 0, float("nan")]}}, r"bad\.json: body\.nose"),
        ({"body": {}, "face": [[0, 0, 0]] * 68}, r"bad\.json: 'face' has 68 entries.*70"),
        ({"body": {}, "face": [None] * 69 + [[0, 0, math.inf]]}, r"bad\.json: face\[69\]"),
        ({"face": [None] * 70}, r"bad\.json: 'body' missing"),
        ({"body": {}, "hands": []}, r"bad\.json: unknown top-level keys \['hands'\]"),
    ],
)
def test_bad_keypoints_name_file_and_key(tmp_path, data, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        M.load_keypoints(path)


def test_bad_mesh_files(tmp_path):
    text = tmp_path / "notes.obj"
    text.write_text("this is not a mesh\n")
    with pytest.raises(ValueError, match=r"notes\.obj"):
        M.load_mesh(text)
    ply = tmp_path / "broken.ply"
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\nend_header\n\x00")
    with pytest.raises(ValueError, match=r"broken\.ply"):
        M.load_mesh(ply)
    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(np.eye(3)).export(cloud)
    with pytest.raises(ValueError, match=r"cloud\.ply: holds no triangles"):
        M.load_mesh(cloud)
    with pytest.raises(ValueError, match=r"head\.stl: unsupported"):
        M.load_mesh(tmp_path / "head.stl")
    with pytest.raises(FileNotFoundError, match=r"gone\.obj"):
        M.load_mesh(tmp_path / "gone.obj")
    bad_json = tmp_path / "k.json"
    bad_json.write_text("{body: }")
    with pytest.raises(ValueError, match=r"k\.json: not valid JSON"):
        M.load_keypoints(bad_json)
