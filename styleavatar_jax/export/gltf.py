"""Textured-mesh files for engines and DCC tools: binary glTF 2.0 (.glb) and Wavefront OBJ
with its MTL and PNG.

GLB (glTF 2.0 spec, "Binary glTF Layout"): a 12-byte header (magic 'glTF', version 2,
total length), a JSON chunk padded with spaces to 4 bytes, and a BIN chunk padded with
zeros, holding POSITION / NORMAL / TEXCOORD_0 (float32, one bufferView each, target
ARRAY_BUFFER), the triangle indices (uint32, ELEMENT_ARRAY_BUFFER) and the PNG texture
(a bufferView with no target, `images[0].bufferView`). One mesh, one node, one material:
PBR base colour texture, metallic 0, roughness 1, or with `unlit`, KHR_materials_unlit, so
the baked colour shows as it is (the PBR values stay as the fallback the extension asks
for). The POSITION accessor carries min/max, as the spec requires.

Conventions: glTF is right-handed, +Y up, metres, and an asset's front faces +Z; texture
coordinates start at the image's top-left corner (v grows downwards). OBJ's `vt` start at
the bottom-left, so OBJ files get v' = 1 − v. Triangles are wound counter-clockwise seen
from outside (glTF's front faces).

Every writer is atomic (`files.atomic_path`): the OBJ's three files are written to
temporary names beside the targets and renamed together, PNG and MTL before the OBJ, so a
failure leaves none of them behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from styleavatar_jax.files import atomic_path, write_atomic

GLB_MAGIC, GLB_VERSION = b"glTF", 2
CHUNK_JSON, CHUNK_BIN = 0x4E4F534A, 0x004E4942  # 'JSON', 'BIN\0' little-endian
FLOAT, UNSIGNED_INT = 5126, 5125  # accessor componentType
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963  # bufferView target
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE = 9729, 9987, 33071  # sampler
UNLIT = "KHR_materials_unlit"


def png_bytes(texture: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG file bytes."""
    texture = np.asarray(texture)
    if texture.dtype != np.uint8 or texture.ndim != 3 or texture.shape[-1] != 3:
        raise ValueError(f"texture: expected uint8 [H, W, 3], got {texture.dtype} "
                         f"{texture.shape}")  # fmt: skip
    buf = io.BytesIO()
    Image.fromarray(texture).save(buf, format="PNG")
    return buf.getvalue()


def _check(verts, normals, uv, faces):
    verts = np.ascontiguousarray(verts, np.float32)
    normals = np.ascontiguousarray(normals, np.float32)
    uv = np.ascontiguousarray(uv, np.float32)
    faces = np.asarray(faces)
    v = len(verts)
    if verts.shape != (v, 3) or normals.shape != (v, 3) or uv.shape != (v, 2):
        raise ValueError(f"textured mesh: expected verts [V, 3], normals [V, 3], uv [V, 2], "
                         f"got {verts.shape}, {normals.shape}, {uv.shape}")  # fmt: skip
    if faces.ndim != 2 or faces.shape[1] != 3 or not len(faces):
        raise ValueError(f"textured mesh: expected faces [F, 3] with F > 0, got {faces.shape}")
    if faces.min() < 0 or faces.max() >= v:
        raise ValueError(f"textured mesh: face indices outside [0, {v})")
    if not (np.isfinite(verts).all() and np.isfinite(normals).all() and np.isfinite(uv).all()):
        raise ValueError("textured mesh: non-finite vertex data")
    return verts, normals, uv, np.ascontiguousarray(faces, np.uint32)


def _pad4(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


def glb_bytes(verts, normals, uv, faces, texture_png: bytes, *, unlit: bool = False,
              name: str = "avatar") -> bytes:  # fmt: skip
    """One textured triangle mesh -> a .glb file's bytes.

    verts [V, 3] float32 (metres, +Y up, front +Z), normals [V, 3] unit, uv [V, 2] (glTF:
    (0, 0) the image's top-left), faces [F, 3] indices into V (counter-clockwise from
    outside), texture_png: a PNG file's bytes (the base colour, sRGB).
    """
    verts, normals, uv, faces = _check(verts, normals, uv, faces)
    blobs = [verts.tobytes(), normals.tobytes(), uv.tobytes(), faces.tobytes(), texture_png]
    targets = [ARRAY_BUFFER] * 3 + [ELEMENT_ARRAY_BUFFER, None]
    views, body = [], b""
    for blob, target in zip(blobs, targets, strict=True):
        view = {"buffer": 0, "byteOffset": len(body), "byteLength": len(blob)}
        if target is not None:
            view["target"] = target
        views.append(view)
        body = _pad4(body + blob, b"\0")  # every view starts 4-byte aligned
    v = len(verts)
    accessors = [
        {"bufferView": 0, "componentType": FLOAT, "count": v, "type": "VEC3",
         "min": verts.min(0).tolist(), "max": verts.max(0).tolist()},
        {"bufferView": 1, "componentType": FLOAT, "count": v, "type": "VEC3"},
        {"bufferView": 2, "componentType": FLOAT, "count": v, "type": "VEC2"},
        {"bufferView": 3, "componentType": UNSIGNED_INT, "count": faces.size, "type": "SCALAR"},
    ]  # fmt: skip
    material = {
        "name": f"{name}_material",
        "pbrMetallicRoughness": {
            "baseColorTexture": {"index": 0},
            "metallicFactor": 0.0,
            "roughnessFactor": 1.0,
        },
        "doubleSided": False,
    }
    gltf = {
        "asset": {"version": "2.0", "generator": "styleavatar-jax"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"name": name, "primitives": [{
            "attributes": {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 2},
            "indices": 3, "material": 0, "mode": 4}]}],
        "materials": [material],
        "textures": [{"sampler": 0, "source": 0}],
        "images": [{"bufferView": 4, "mimeType": "image/png", "name": f"{name}_basecolor"}],
        "samplers": [{"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR,
                      "wrapS": CLAMP_TO_EDGE, "wrapT": CLAMP_TO_EDGE}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(body)}],
    }  # fmt: skip
    if unlit:
        material["extensions"] = {UNLIT: {}}
        gltf["extensionsUsed"] = [UNLIT]
    text = _pad4(json.dumps(gltf, separators=(",", ":")).encode("utf-8"), b" ")
    chunks = struct.pack("<II", len(text), CHUNK_JSON) + text
    chunks += struct.pack("<II", len(body), CHUNK_BIN) + body
    return struct.pack("<4sII", GLB_MAGIC, GLB_VERSION, 12 + len(chunks)) + chunks


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """A .glb file's bytes -> (the JSON document, the BIN chunk); ValueError when the
    layout (header, chunk types, lengths) is not GLB 2.0's."""
    if len(data) < 20 or data[:4] != GLB_MAGIC:
        raise ValueError("not a GLB file (no 'glTF' magic)")
    _, version, length = struct.unpack_from("<4sII", data, 0)
    if version != GLB_VERSION or length != len(data):
        raise ValueError(f"GLB header: version {version}, length {length} (file {len(data)})")
    n, kind = struct.unpack_from("<II", data, 12)
    if kind != CHUNK_JSON or n % 4:
        raise ValueError("GLB: the first chunk must be JSON, 4-byte aligned")
    doc = json.loads(data[20 : 20 + n])
    rest = 20 + n
    if rest == len(data):
        return doc, b""
    m, kind = struct.unpack_from("<II", data, rest)
    if kind != CHUNK_BIN or m % 4 or rest + 8 + m != len(data):
        raise ValueError("GLB: the second chunk must be BIN, 4-byte aligned, ending the file")
    return doc, data[rest + 8 : rest + 8 + m]


def write_glb(path: str | os.PathLike, data: bytes) -> Path:
    """Write a .glb file's bytes atomically."""
    return write_atomic(path, lambda f: f.write(data))


def _rows(fmt: str, prefix: str, array: np.ndarray) -> str:
    buf = io.StringIO()
    np.savetxt(buf, array, fmt=f"{prefix} {fmt}", delimiter=" ")
    return buf.getvalue()


def obj_texts(verts, normals, uv, faces, *, mtl_name: str, png_name: str,
              material: str = "avatar") -> tuple[str, str]:  # fmt: skip
    """One textured mesh -> (OBJ text, MTL text). Arrays as `glb_bytes`; the OBJ names
    `mtl_name` (mtllib), the MTL names `png_name` (map_Kd), both relative to the OBJ."""
    verts, normals, uv, faces = _check(verts, normals, uv, faces)
    vt = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1)  # OBJ: v up from the bottom row
    f = faces.astype(np.int64) + 1
    obj = "".join([
        "# styleavatar-jax textured mesh (metres, +Y up, front +Z)\n",
        f"mtllib {mtl_name}\n",
        _rows("%.6f %.6f %.6f", "v", verts),
        _rows("%.6f %.6f", "vt", vt),
        _rows("%.4f %.4f %.4f", "vn", normals),
        f"usemtl {material}\n",
        _rows("%d/%d/%d %d/%d/%d %d/%d/%d", "f", np.repeat(f, 3, axis=1)),
    ])  # fmt: skip
    mtl = (f"# styleavatar-jax\nnewmtl {material}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nNs 0\n"
           f"d 1\nillum 1\nmap_Kd {png_name}\n")  # fmt: skip
    return obj, mtl


def obj_paths(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """head.obj -> (head.obj, head.mtl, head.png): the files an OBJ export writes."""
    path = Path(path)
    return path, path.with_suffix(".mtl"), path.with_suffix(".png")


def write_obj(path: str | os.PathLike, verts, normals, uv, faces, texture: np.ndarray,
              material: str = "avatar") -> tuple[Path, Path, Path]:  # fmt: skip
    """Write head.obj, head.mtl and head.png together (module doc: all or none).

    Arrays as `glb_bytes`; texture uint8 [H, W, 3] (row 0 at the top) -> the three paths.
    """
    obj_path, mtl_path, png_path = obj_paths(path)
    if obj_path.suffix.lower() != ".obj":
        raise ValueError(f"--out={path}: expected a file ending in .obj")
    obj, mtl = obj_texts(verts, normals, uv, faces, mtl_name=mtl_path.name,
                         png_name=png_path.name, material=material)  # fmt: skip
    files = {png_path: png_bytes(texture), mtl_path: mtl.encode("ascii"),
             obj_path: obj.encode("ascii")}  # fmt: skip
    with contextlib.ExitStack() as stack:
        # Entered OBJ first, so the stack renames PNG, then MTL, then OBJ (last in, first
        # out); an error anywhere removes the temporary files not yet renamed.
        for target in reversed(files):
            tmp = stack.enter_context(atomic_path(target))
            tmp.write_bytes(files[target])
    return obj_path, mtl_path, png_path
