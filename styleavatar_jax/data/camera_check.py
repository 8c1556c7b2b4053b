"""Checks of 25-d camera labels, so a user learns at once that a dataset's cameras are in the
wrong convention (the most common problem EG3D users report), and label statistics.

EG3D's convention (`cameras.py`): cam2world is OpenCV-style (x right, y down, z forward,
towards the head), the world is y-up with the head at the origin, and intrinsics are
normalised by the image size (fx ≈ 4.26 for FFHQ's 18.837° field of view).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np

ORTHO_TOL = 1e-3
AIM_TOL = 0.5  # how far (world units) the optical axis may pass from the origin


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str  # image the label belongs to
    kind: str  # short key, e.g. "opengl", "not-orthonormal"
    message: str


def _split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, np.float64)
    return labels[:, :16].reshape(-1, 4, 4), labels[:, 16:25].reshape(-1, 3, 3)


def _aim_miss(m: np.ndarray) -> tuple[float, float]:
    """Distance from the origin to the camera's optical axis (forward half-line), and the
    cosine between the axis and the direction to the origin."""
    origin, forward = m[:3, 3], m[:3, 2]
    to_head = -origin
    dist = np.linalg.norm(to_head)
    along = float(forward @ to_head)
    miss = float(np.linalg.norm(to_head - along * forward)) if along > 0 else dist
    return miss, along / max(dist, 1e-12)


def check_label(name: str, label: np.ndarray) -> list[Problem]:
    """All problems with one label [25] (an empty list when it is a valid EG3D camera)."""
    m, k = (x[0] for x in _split(np.asarray(label)[None]))
    found = []
    add = lambda kind, msg: found.append(Problem(name, kind, msg))
    if not np.all(np.isfinite(label)):
        add("not-finite", "label holds NaN or inf")
        return found
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        add("bottom-row", f"cam2world's bottom row is {m[3].tolist()}, expected [0, 0, 0, 1]")
    rot = m[:3, :3]
    if np.abs(rot.T @ rot - np.eye(3)).max() > ORTHO_TOL:
        add("not-orthonormal", "cam2world's rotation is not orthonormal (RᵀR ≠ I): "
            "is it scaled, or are the 16 numbers not a row-major 4×4 pose?")  # fmt: skip
    elif np.linalg.det(rot) < 0:
        add("left-handed", "cam2world's rotation has determinant −1 (a mirrored frame)")
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    if fx > 20 or fy > 20:
        add("pixel-intrinsics", f"intrinsics look un-normalised (fx={fx:.4g}, fy={fy:.4g}): "
            "divide the first two rows by the image size (EG3D: fx ≈ 4.26)")  # fmt: skip
    elif not (0.5 < fx < 20 and 0.5 < fy < 20):
        add("intrinsics", f"focal lengths fx={fx:.4g}, fy={fy:.4g} outside (0.5, 20)")
    if fx <= 20 and (abs(cx - 0.5) > 0.1 or abs(cy - 0.5) > 0.1):
        add("principal-point", f"principal point ({cx:.4g}, {cy:.4g}) is not near (0.5, 0.5)")
    if not np.allclose(k[2], [0, 0, 1], atol=1e-6) or abs(k[1, 0]) > 1e-6 or abs(k[0, 1]) > 1e-3:
        add("intrinsics-layout", f"intrinsics rows {k.tolist()}: expected [[fx,0,cx],[0,fy,cy],"
            "[0,0,1]]")  # fmt: skip
    if any(p.kind in ("not-orthonormal", "bottom-row") for p in found):
        return found
    dist = float(np.linalg.norm(m[:3, 3]))
    miss, cos = _aim_miss(m)
    if dist >= 0.5 and miss <= AIM_TOL:
        return found
    inv = np.linalg.inv(m)
    flipped = m.copy()
    flipped[:3, 1:3] *= -1
    if dist >= 0.5 and _aim_miss(flipped)[0] < AIM_TOL:
        add("opengl", "looks like an OpenGL/Blender camera (y up, z backward): flip its y and "
            "z axes (cam2world[:3, 1:3] *= -1)")  # fmt: skip
    elif np.linalg.norm(inv[:3, 3]) > 0.5 and _aim_miss(inv)[0] < AIM_TOL:
        add("world2cam", "this looks like a world2cam (extrinsic) matrix: EG3D labels hold "
            "cam2world, its inverse")  # fmt: skip
    elif dist < 0.5:
        add("inside-head", f"camera is {dist:.3g} from the origin, inside the head")
    else:
        add("not-aimed", f"camera does not look at the head: its optical axis passes "
            f"{miss:.3g} from the origin (cos to the head {cos:.2f})")  # fmt: skip
    return found


def validate_labels(labels: np.ndarray, names: list[str]) -> list[Problem]:
    """labels [N, 25], names [N] -> every problem found (module docstring)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != 25:
        raise ValueError(f"labels: expected [N, 25], got {labels.shape}")
    return [p for name, label in zip(names, labels, strict=True) for p in check_label(name, label)]


def summarize_problems(problems: list[Problem], max_names: int = 3) -> str:
    """One line per kind of problem, with its count, message and the first image names."""
    groups = defaultdict(list)
    for p in problems:
        groups[p.kind].append(p)
    lines = []
    for kind, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        names = ", ".join(p.name for p in items[:max_names])
        more = f" (+{len(items) - max_names} more)" if len(items) > max_names else ""
        lines.append(f"  {len(items)} × {kind}: {items[0].message} [{names}{more}]")
    return "\n".join(lines)


def label_stats(labels: np.ndarray) -> dict[str, np.ndarray]:
    """labels [N, 25] -> yaw, pitch (degrees, about the origin), radius, fov (degrees,
    inverting cameras.fov_to_intrinsics) [N] each."""
    m, k = _split(labels)
    d = m[:, :3, 3]
    radius = np.linalg.norm(d, axis=-1)
    yaw = np.degrees(np.arctan2(d[:, 0], d[:, 2]))
    pitch = np.degrees(np.arctan2(d[:, 1], np.hypot(d[:, 0], d[:, 2])))
    # cameras.fov_to_intrinsics: focal = 1 / (tan(fov·3.14159/360)·1.414)
    fov = np.arctan(1.0 / (k[:, 1, 1] * 1.414)) * 360.0 / 3.14159
    return dict(yaw=yaw, pitch=pitch, radius=radius, fov=fov)


def text_histogram(values, bins: int, value_range: tuple[float, float], width: int = 40,
                   unit: str = "") -> str:  # fmt: skip
    """ASCII histogram: one line per bin with its edges, a bar and its count."""
    counts, edges = np.histogram(np.asarray(values), bins=bins, range=value_range)
    top = max(int(counts.max()), 1)
    lines = []
    for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True):
        bar = "#" * math.ceil(width * n / top) if n else ""
        lines.append(f"  [{lo:7.1f}{unit}, {hi:7.1f}{unit}) {bar:<{width}} {n}")
    return "\n".join(lines)
