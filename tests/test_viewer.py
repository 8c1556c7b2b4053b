"""The avatar page (export/viewer.py) and `view`: the page is self-contained and escapes
what it shows; in a real headless Chromium (software WebGL) it loads the model with the
+Z face in front, asks for nothing beyond the page itself and logs no console error; a
broken model shows an error instead of loading forever."""

import hashlib
import io
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from styleavatar_jax import cli
from styleavatar_jax.export import browser, viewer

TINY = str(Path(__file__).resolve().parent.parent / "configs" / "tiny.py")
SHIPPED = str(Path(__file__).resolve().parent.parent / "pretrained" / "mannequin64")
FRONT = (220, 40, 40)  # the box's +Z face: glTF's front, what the page must show first
SIDES = [(60, 60, 200), (60, 160, 60), (200, 200, 60), (200, 120, 200), (60, 200, 200)]


def chromium() -> str:
    """The browser (a test requirement: scripts/dev.py test installs it), else a failure
    that says how to install it."""
    exe = browser.find_chromium()
    if exe is None:
        pytest.fail(f"{browser.CHROMIUM} is missing: `apt-get install chromium` (scripts/dev.py "
                    "test does it when run as root on Debian)")  # fmt: skip
    return exe


def unlit(glb: bytes) -> bytes:
    """A GLB with every material KHR_materials_unlit (colours drawn as they are)."""
    n = struct.unpack_from("<I", glb, 12)[0]
    doc = json.loads(glb[20 : 20 + n])
    for m in doc["materials"]:
        m.setdefault("extensions", {})["KHR_materials_unlit"] = {}
    doc.setdefault("extensionsUsed", []).append("KHR_materials_unlit")
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + glb[20 + n :]
    return struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body


def box_glb() -> bytes:
    """A unit cube textured from a 3 × 2 atlas, one colour per side, +Z in FRONT; an
    unlit material, as the avatar's (so the screenshot shows the texture's colours)."""
    sides = [((0, 0, 1), (1, 0, 0), (0, 1, 0)), ((0, 0, -1), (-1, 0, 0), (0, 1, 0)),
             ((1, 0, 0), (0, 0, -1), (0, 1, 0)), ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),
             ((0, 1, 0), (1, 0, 0), (0, 0, -1)), ((0, -1, 0), (1, 0, 0), (0, 0, 1))]  # fmt: skip
    atlas = np.zeros((256, 384, 3), np.uint8)
    verts, faces, uv = [], [], []
    for i, (n, u, v) in enumerate(sides):
        n, u, v = (np.array(a, np.float32) for a in (n, u, v))
        col, row = i % 3, i // 3
        atlas[row * 128 : (row + 1) * 128, col * 128 : (col + 1) * 128] = ([FRONT] + SIDES)[i]
        k = len(verts)
        for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):  # counter-clockwise seen from n
            verts.append(0.5 * (n + a * u + b * v))
            uv.append(((col + 0.25 + 0.25 * (a + 1)) / 3, 1 - (row + 0.25 + 0.25 * (b + 1)) / 2))
        faces += [[k, k + 1, k + 2], [k, k + 2, k + 3]]
    mesh = trimesh.Trimesh(np.array(verts), np.array(faces), process=False)
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(atlas), baseColorFactor=[255, 255, 255, 255]
    )
    mesh.visual = trimesh.visual.TextureVisuals(uv=np.array(uv), material=material)
    return unlit(trimesh.exchange.gltf.export_glb(trimesh.Scene(mesh)))


def pictures() -> tuple[bytes, bytes]:
    """A 3-frame GIF and a PNG."""
    frames = [Image.new("RGB", (32, 32), c) for c in SIDES[:3]]
    gif, png = io.BytesIO(), io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], loop=0)
    Image.new("RGB", (64, 32), SIDES[3]).save(png, format="PNG")
    return gif.getvalue(), png.getvalue()


NASTY = {
    "seed": 7,
    "checkpoint": "runs/<script>alert('x')</script>&co",
    "metrics": {"swd": {"value": 49.46447, "front": 68.4476}, '"q"': [1.5, "<b>"]},
}


def test_vendored_viewer_is_the_pinned_file():
    data = viewer.VIEWER_JS.read_bytes()
    recorded, name = viewer.VIEWER_SHA256.read_text().split()
    assert name == viewer.VIEWER_JS.name and hashlib.sha256(data).hexdigest() == recorded
    assert len(data) < 1.5e6
    assert "Apache License" in (viewer.ASSETS / "model-viewer.LICENSE").read_text()


def test_page_is_self_contained_and_escapes_info():
    gif, png = pictures()
    page = viewer.page_html(box_glb(), gif, "image/gif", png, NASTY, title="a <b>")
    # Everything outside the inlined viewer bundle: no reference to anything else.
    rest = page.replace(viewer.viewer_js(), "")
    assert not re.search(r"(src|href)=\"(?!data:)", rest), "only data: URIs"
    assert "http" not in rest.replace("http-equiv", "")
    assert "default-src 'none'" in rest  # the CSP that keeps it offline
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert "&amp;co" in page and "<b>" not in rest and "&lt;b&gt;" in rest
    assert "<caption>metrics</caption>" in page  # a section: one row per value
    assert "<th>swd.value</th><td>49.46</td>" in page
    assert "<th>&quot;q&quot;</th><td>1.5, &lt;b&gt;</td>" in page
    grid = viewer.info_tables({"m": {"swd": {"value": 1.0, "floor": 2}, "acc": {"value": 0.5}}})
    assert "<th>value</th><th>floor</th>" in grid and "<td>0.5</td><td></td>" in grid
    with pytest.raises(ValueError, match="glb"):
        viewer.page_html(b"not a glb")
    with pytest.raises(ValueError, match="turntable_mime"):
        viewer.page_html(box_glb(), gif, "image/webp")


def _open(path: Path, exe: str):
    """-> the report; its value: [data-model, the images' widths, the error line]."""
    images = "[...document.images].map(i => i.complete && i.naturalWidth)"
    error = "document.getElementById('viewer-error').textContent"
    return browser.open_page(str(path), until=f"({viewer.SHOWN}) && [{viewer.SHOWN}, {images}, "
                             f"{error}]", before_screenshot=viewer.STILL, size=(800, 600),
                             chromium=exe, timeout=60)  # fmt: skip


def test_page_in_headless_chromium(tmp_path):
    exe = chromium()
    gif, png = pictures()
    page = viewer.write_page(tmp_path / "index.html", box_glb(), gif, "image/gif", png, NASTY)
    report = _open(page, exe)
    state, widths, error = report.value
    assert state == viewer.LOADED and not error, report.console
    assert widths == [32, 64]  # the turntable and the grid decoded
    assert report.errors() == []
    schemes = {u.split(":")[0] for u in report.requests}
    assert schemes <= {"file", "data", "blob"}, report.requests  # nothing from the network

    shot = np.asarray(Image.open(io.BytesIO(report.screenshot)).convert("RGB")).astype(int)
    assert shot.shape == (600, 800, 3)
    background = np.array([int(viewer.BACKGROUND[i : i + 2], 16) for i in (1, 3, 5)])
    assert np.abs(shot[5, -5] - background).max() <= 2  # the page
    box = shot[170:390, 285:515]  # the middle of the viewer (the cube spans ~153:406, 267:532)
    front = np.abs(box - np.array(FRONT)).max(-1) <= 6
    assert front.mean() > 0.9, "the +Z face fills the middle (the face is in front)"
    viewer_area = shot[60:440]  # below: the pictures (of SIDES' colours)
    sides = sum(np.abs(viewer_area - np.array(c)).max(-1) <= 6 for c in SIDES[:2])
    assert sides.sum() == 0  # the back and +X sides are out of sight


def test_a_broken_model_says_so(tmp_path):
    exe = chromium()
    glb = box_glb()
    page = viewer.write_page(tmp_path / "index.html", glb[:20] + b"\0" * 64, info={"seed": 1})
    state, _, error = _open(page, exe).value
    assert state == viewer.FAILED and error.startswith("The 3D view failed")


def test_view_command(tmp_path, fast_compile, cli_error):
    """`view` on the shipped model, end to end: the textured GLB (the largest part, at the
    model's σ level), turntable, views, tables, and the page as Chromium draws it."""
    chromium()
    out = tmp_path / "v"
    argv = ["view", out, "--ckpt", SHIPPED, "--seed", 3, "--frames", 4, "--views", "yaw=0,180",
            "--turntable", "gif", "--texture", 64, "--res", 48, "--faces", 3000,
            "--largest"]  # fmt: skip
    assert cli.main([str(a) for a in [*argv, "--screenshot", out / "shot.png"]]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["avatar.glb", "index.html", "info.json", "shot.png", "turntable.gif",
                     "views.png"]  # fmt: skip
    info = json.loads((out / "info.json").read_text())
    assert info["seed"] == 3 and info["mesh"]["σ level"] == 30.0  # config.sample's
    assert 0 < info["mesh"]["faces"] <= 3000 * 1.05
    glb = trimesh.load(out / "avatar.glb", force="mesh")
    assert len(glb.faces) == info["mesh"]["faces"] and glb.visual.uv.shape == (len(glb.vertices), 2)
    welded = trimesh.Trimesh(glb.vertices, glb.faces)  # merges the UV seams' copies
    assert len(welded.split(only_watertight=False)) == 1  # one part: no floaters
    with Image.open(out / "turntable.gif") as im:
        assert im.n_frames == 4 and im.size == (64, 64)
    assert Image.open(out / "views.png").size == (2 * 64, 2 * 64)  # RGB over depth, 2 views
    html = (out / "index.html").read_text()
    assert "data:image/gif;base64," in html and "<th>seed</th><td>3</td>" in html
    shot = np.asarray(Image.open(out / "shot.png").convert("RGB")).astype(int)
    background = np.array([int(viewer.BACKGROUND[i : i + 2], 16) for i in (1, 3, 5)])
    middle = shot[150:450, 380:580]  # the 3D view, the head in its middle
    assert (np.abs(middle - background).max(-1) > 12).mean() > 0.5, "the head is drawn"
    (out / "shot.png").unlink()
    # An earlier view output is rewritten; other files are only with --force.
    assert cli.main([str(a) for a in argv]) == 0
    (out / "notes.txt").write_text("mine")
    assert "OUT_DIR=" in cli_error(argv) and "--force" in cli_error(argv)
    assert "--res=1" in cli_error([*argv, "--res", 1, "--force"])
    assert "--batch=3" in cli_error([*argv, "--force", "--batch", 3])  # 8 devices
    assert "--screenshot" in cli_error([*argv, "--force", "--screenshot", tmp_path / "a.jpg"])
