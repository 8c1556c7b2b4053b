"""Mesh export: marching cubes on an analytic sphere, PLY/OBJ through trimesh, the preview."""

import numpy as np
import pytest
import trimesh

from styleavatar_jax import sampling
from styleavatar_jax.export import mesh as mesh_io

R = 0.3


def sphere_field(radius=R, sharpness=20.0):
    """σ = sharpness·(radius − |x|) (the level 0 is the sphere), colour (x + 1)/2."""

    def fn(points):
        p = np.asarray(points, np.float64)
        sigma = sharpness * (radius - np.linalg.norm(p, axis=-1))
        return np.clip((p + 1) / 2, 0, 1).astype(np.float32), sigma.astype(np.float32)

    return fn


@pytest.fixture(scope="module")
def sphere():
    return mesh_io.extract_mesh(sphere_field(), res=64, box=1.0, threshold=0.0, chunk=10000)


def test_grid_points_span_the_box():
    g = mesh_io.grid_points(5, 2.0)
    assert g.shape == (5, 5, 5, 3)
    np.testing.assert_allclose(g[0, 0, 0], [-1, -1, -1])
    np.testing.assert_allclose(g[4, 2, 1], [1, 0, -0.5])


def test_sphere_radius_area_volume(sphere):
    verts, faces, colors = sphere
    radius = np.linalg.norm(verts, axis=1)
    assert abs(radius.mean() / R - 1) < 0.01
    assert radius.max() / R - 1 < 0.01 and 1 - radius.min() / R < 0.01
    tm = trimesh.Trimesh(verts, faces, process=False)
    assert tm.is_watertight
    assert abs(tm.area / (4 * np.pi * R**2) - 1) < 0.02
    assert abs(tm.volume / (4 / 3 * np.pi * R**3) - 1) < 0.02  # > 0: normals point out
    np.testing.assert_array_equal(colors, mesh_io.colors_uint8((verts + 1) / 2))


def test_surface_cut_by_the_box_is_closed():
    verts, faces, _ = mesh_io.extract_mesh(sphere_field(0.7), res=24, box=1.0, threshold=0.0)
    tm = trimesh.Trimesh(verts, faces, process=False)
    assert tm.is_watertight and tm.volume > 0
    assert np.abs(verts).max() <= 0.5 + 1.0 / 23  # within one voxel of the box


def test_no_surface_is_an_error():
    with pytest.raises(ValueError, match="--threshold=50: no surface"):
        mesh_io.extract_mesh(sphere_field(), res=8, box=1.0, threshold=50.0)


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_files_round_trip_through_trimesh(tmp_path, sphere, suffix):
    verts, faces, colors = sphere
    path = mesh_io.write_mesh(tmp_path / f"s{suffix}", verts, faces, colors)
    back = trimesh.load(path, process=False)
    np.testing.assert_allclose(back.vertices, verts, atol=1e-5)
    np.testing.assert_array_equal(back.faces, faces)
    np.testing.assert_allclose(back.visual.vertex_colors[:, :3], colors, atol=1)
    assert [p.name for p in tmp_path.iterdir()] == [f"s{suffix}"]  # no temporary left


def test_ply_is_binary_little_endian(sphere):
    verts, faces, colors = sphere
    data = mesh_io.ply_bytes(verts, faces, colors)
    header, body = data.split(b"end_header\n", 1)
    assert b"format binary_little_endian 1.0" in header
    assert b"property uchar red" in header
    assert len(body) == len(verts) * 15 + len(faces) * 13
    np.testing.assert_array_equal(np.frombuffer(body[:12], "<f4"), verts[0])
    with pytest.raises(ValueError, match="face indices"):
        mesh_io.ply_bytes(verts, faces + len(verts))
    with pytest.raises(ValueError, match=r"\.ply or \.obj"):
        mesh_io.write_mesh("x.stl", verts, faces)


def test_lambert_preview_of_a_sphere(sphere):
    verts, faces, _ = sphere
    camera = dict(radius=2.7, pivot=(0.0, 0.0, 0.0), fov_degrees=18.837)
    c = sampling.view_labels(np.radians([0.0, 90.0, 180.0]), np.zeros(3), camera)
    image = mesh_io.lambert_views(verts, faces, c, 32)
    assert image.shape == (32, 96, 3) and image.dtype == np.uint8
    # The headlight is raised 30°: the centre pixel has n·l ≈ cos 30° -> 0.8·(0.2 + 0.8·0.866).
    centre = image[15:17, 15:17].astype(float).mean()
    assert abs(centre - 255 * 0.8 * (0.2 + 0.8 * np.cos(np.pi / 6))) < 6
    assert np.all(image[0, 0] == 255)  # background
    np.testing.assert_allclose(image[:, :32].astype(float), image[:, 64:].astype(float), atol=40)


def test_largest_part_keeps_the_part_around_the_centre():
    # A trained model's fog can make a larger part than the head (the shipped model's ring
    # under the shoulders): --largest keeps the largest part whose box holds the centre.
    head = trimesh.creation.icosphere(subdivisions=1, radius=0.1)  # 80 faces at the centre
    ring = trimesh.creation.annulus(r_min=0.3, r_max=0.45, height=0.05, sections=64)
    ring.apply_translation([0, 0, -0.4])  # far more faces, its box misses the centre
    verts = np.concatenate([head.vertices, ring.vertices])
    faces = np.concatenate([head.faces, ring.faces + len(head.vertices)])
    assert len(ring.faces) > len(head.faces)
    v, f = mesh_io.largest_part(verts, faces)
    assert len(f) == len(head.faces) and np.abs(v).max() <= 0.1 + 1e-6
    # No part holds the point: the largest one overall.
    v, f = mesh_io.largest_part(verts, faces, centre=(0.9, 0.9, 0.9))
    assert len(f) == len(ring.faces)
