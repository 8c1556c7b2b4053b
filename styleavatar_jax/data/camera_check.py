"""Checks of 25-d camera labels, so a user learns at once that a dataset's cameras are in the
wrong convention (the most common problem EG3D users report), and label statistics.

EG3D's convention (`cameras.py`): cam2world is OpenCV-style (x right, y down, z forward,
towards the head), the world is y-up with the head at the origin, and intrinsics are
normalised by the image size (fx ≈ 4.26 for FFHQ's 18.837° field of view).

Each label is checked alone (`check_label`), then the set as a whole (`check_cameras`): a
z-up or y-down world, or a head away from the origin, leaves every label self-consistent
and shows only in what the cameras share (their up direction, the point they aim at).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np

ORTHO_TOL = 1e-3
AIM_TOL = 0.5  # how far (world units) the optical axis may pass from the origin
# Image heights one world unit at the head spans (fy / distance): EG3D FFHQ 4.26 / 2.7 = 1.58.
# Outside this range the head (≈ 0.3 units wide) is under 5% of the image or over 3 images.
FRAMING = (0.15, 10.0)
UP_TOL_DEGREES = 30.0  # how far the cameras' shared up direction may lean from world +y
DATASET = "(all cameras)"  # Problem.name of the checks of the whole set


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str  # image the label belongs to, or DATASET for a problem of the whole set
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


def _flip_yz(m: np.ndarray) -> np.ndarray:
    """cam2world [4, 4] with its y and z axes negated: OpenGL ↔ OpenCV camera axes."""
    return m * np.array([1.0, -1.0, -1.0, 1.0])


def _aims(m: np.ndarray) -> bool:
    """Is cam2world [4, 4] outside the head with its optical axis through it?"""
    return bool(np.linalg.norm(m[:3, 3]) >= 0.5 and _aim_miss(m)[0] <= AIM_TOL)


def check_label(name: str, label: np.ndarray, resolution: int | None = None) -> list[Problem]:
    """All problems with one label [25] (an empty list when it is a valid EG3D camera).

    resolution: the image size, named in the fix for pixel intrinsics when given.
    """
    m, k = (x[0] for x in _split(np.asarray(label)[None]))
    found = []
    add = lambda kind, msg: found.append(Problem(name, kind, msg))
    if not np.all(np.isfinite(label)):
        add("not-finite", "label holds NaN or inf")
        return found
    if np.allclose(m.T[3], [0, 0, 0, 1], atol=1e-6) and not np.allclose(m[3], [0, 0, 0, 1]):
        add("column-major", f"cam2world's bottom row is {m[3].tolist()}: the 16 numbers look "
            "column-major (transposed); write cam2world row-major (cam2world.T)")  # fmt: skip
    elif not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        add("bottom-row", f"cam2world's bottom row is {m[3].tolist()}, expected [0, 0, 0, 1]")
    rot = m[:3, :3]
    if np.abs(rot.T @ rot - np.eye(3)).max() > ORTHO_TOL:
        add("not-orthonormal", "cam2world's rotation is not orthonormal (RᵀR ≠ I): "
            "is it scaled, or are the 16 numbers not a row-major 4×4 pose?")  # fmt: skip
    elif np.linalg.det(rot) < 0:
        add("left-handed", "cam2world's rotation has determinant −1 (a mirrored frame)")
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    if fx > 20 or fy > 20:
        size = f"image size ({resolution})" if resolution else "image size"
        add("pixel-intrinsics", f"intrinsics look un-normalised (fx={fx:.4g}, fy={fy:.4g}): "
            f"divide the first two rows by the {size} (EG3D: fx ≈ 4.26)")  # fmt: skip
    elif not (0.5 < fx < 20 and 0.5 < fy < 20):
        add("intrinsics", f"focal lengths fx={fx:.4g}, fy={fy:.4g} outside (0.5, 20)")
    if fx <= 20 and (abs(cx - 0.5) > 0.1 or abs(cy - 0.5) > 0.1):
        add("principal-point", f"principal point ({cx:.4g}, {cy:.4g}) is not near (0.5, 0.5)")
    if not np.allclose(k[2], [0, 0, 1], atol=1e-6) or abs(k[1, 0]) > 1e-6 or abs(k[0, 1]) > 1e-3:
        add("intrinsics-layout", f"intrinsics rows {k.tolist()}: expected [[fx,0,cx],[0,fy,cy],"
            "[0,0,1]]")  # fmt: skip
    if any(p.kind in ("not-orthonormal", "bottom-row", "column-major") for p in found):
        return found
    dist = float(np.linalg.norm(m[:3, 3]))
    miss, cos = _aim_miss(m)
    if _aims(m):
        framing = fy / dist
        if 0.5 < fy < 20 and not FRAMING[0] < framing < FRAMING[1]:
            add("scale", f"one world unit at the head spans {framing:.3g} image heights "
                f"(fy {fy:.4g} / distance {dist:.4g}; EG3D FFHQ: 1.58): are positions in "
                "other units (mm, cm)? scale them so the head fits EG3D's box "
                "[−0.5, 0.5]³")  # fmt: skip
        return found
    inv = np.linalg.inv(m)  # orthonormal rotation (checked above): invertible
    if _aims(_flip_yz(m)):
        add("opengl", "looks like an OpenGL/Blender camera (y up, z backward): flip its y and "
            "z axes (cam2world[:3, 1:3] *= -1)")  # fmt: skip
    elif _aims(inv):
        add("world2cam", "this looks like a world2cam (extrinsic) matrix: EG3D labels hold "
            "cam2world, its inverse")  # fmt: skip
    elif _aims(_flip_yz(inv)):
        add("opengl-view", "looks like an OpenGL view matrix (world2cam, y up, z backward): "
            "invert it, then flip its y and z axes (cam2world[:3, 1:3] *= -1)")  # fmt: skip
    elif dist < 0.5:
        add("inside-head", f"camera is {dist:.3g} from the origin, inside the head")
    else:
        add("not-aimed", f"camera does not look at the head: its optical axis passes "
            f"{miss:.3g} from the origin (cos to the head {cos:.2f})")  # fmt: skip
    return found


def _rotations(labels: np.ndarray) -> np.ndarray:
    """labels [N, 25] -> cam2world [M, 4, 4] of the labels with a finite, proper rotation and
    bottom row (0, 0, 0, 1)."""
    m, _ = _split(labels)
    m = m[np.isfinite(m).all(axis=(1, 2)) & np.all(np.abs(m[:, 3] - [0, 0, 0, 1]) <= 1e-6, 1)]
    rot = m[:, :3, :3]
    ortho = np.abs(np.swapaxes(rot, 1, 2) @ rot - np.eye(3)).max(axis=(1, 2)) <= ORTHO_TOL
    return m[ortho & (np.linalg.det(rot) > 0)]


def _as_eg3d(m: np.ndarray) -> np.ndarray | None:
    """cam2world [4, 4] as `check_label` reads it (itself, or with the OpenGL and world2cam
    fixes it names) when that aims at the head, else None."""
    inv = np.linalg.inv(m)
    return next((x for x in (m, _flip_yz(m), inv, _flip_yz(inv)) if _aims(x)), None)


def world_up(cam2world: np.ndarray) -> np.ndarray | None:
    """cam2world [N, 4, 4] -> the world's up direction [3] the cameras share, or None.

    Cameras without roll (EG3D's) have image-right axes perpendicular to world up: up is
    the direction least along all of them (smallest eigenvector of Σ r rᵀ), signed by the
    cameras' up axes (−y). None when the right axes do not fix a plane (one yaw, or rolled
    cameras): the mean up axis then leans with the pitch, and only its sign says anything.
    """
    right, up = cam2world[:, :3, 0], -cam2world[:, :3, 1]
    evals, evecs = np.linalg.eigh(right.T @ right / max(len(right), 1))
    if evals[1] > 0.05 and evals[0] < 0.02:
        v = evecs[:, 0]
        return v if (up @ v).sum() >= 0 else -v
    return None


def _to_y_up(up: np.ndarray) -> np.ndarray:
    """Axis-aligned up [3] -> the integer rotation [3, 3] taking it to +y (Rodrigues, 90° or
    180° about an axis perpendicular to both)."""
    if up[1] < 0:
        return np.diag([1, -1, -1])
    k = np.cross(up, [0, 1, 0])
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.rint(np.eye(3) + kx + kx @ kx).astype(int)


def _world_up_message(up: np.ndarray, lean: float) -> str:
    """What the cameras' up [3], `lean` degrees from +y, suggests, with the fix."""
    i = int(np.argmax(np.abs(up)))
    axis = np.zeros(3)
    axis[i] = np.sign(up[i])
    text = (f"the cameras' up direction is {np.round(up, 2).tolist()}, {lean:.0f}° from "
            "EG3D's world up +y")  # fmt: skip
    if i == 1 and axis[1] > 0:
        return text + ": is the whole rig tilted? rotate the world so that up is +y"
    world = {0: "an x-up world", 1: "a y-down world (OpenCV's, COLMAP's)", 2: "a z-up world "
             "(Blender's)"}[i]  # fmt: skip
    w = np.eye(4, dtype=int)
    w[:3, :3] = _to_y_up(axis)
    return f"{text}: {world}? rotate it: cam2world = W @ cam2world with W = {w.tolist()}"


def aim_point(cam2world: np.ndarray) -> np.ndarray | None:
    """cam2world [N, 4, 4] -> the point [3] nearest all optical axes (least squares over the
    lines), or None when the axes are (nearly) parallel."""
    f, o = cam2world[:, :3, 2], cam2world[:, :3, 3]
    proj = np.eye(3) - f[:, :, None] * f[:, None, :]  # [N, 3, 3]: removes the axis component
    a, b = proj.sum(0), np.einsum("nij,nj->i", proj, o)
    return np.linalg.solve(a, b) if np.linalg.cond(a) < 1e6 else None


def check_cameras(labels: np.ndarray) -> list[Problem]:
    """Problems of the label set [N, 25] as a whole, named `DATASET` (module docstring)."""
    m = _rotations(labels)
    found = []
    # Up as it will be after the per-label fixes, read only when most labels have one: else
    # the few labels a wrong fix happens to aim (see `check_label`) would decide it.
    fixed = np.array([x for x in map(_as_eg3d, m) if x is not None]).reshape(-1, 4, 4)
    up = None
    if len(fixed) and len(fixed) >= len(m) / 2:
        mean_up = -fixed[:, :3, 1].mean(axis=0)
        up = world_up(fixed)
        if up is None and mean_up[1] < 0:  # upside down on average, whatever the pitch
            up = mean_up / np.linalg.norm(mean_up)
    if up is not None:
        lean = float(np.degrees(np.arccos(np.clip(up[1], -1, 1))))
        if lean > UP_TOL_DEGREES:
            found.append(Problem(DATASET, "world-up", _world_up_message(up, lean)))
    aimed = [_aims(x) for x in m]
    point = aim_point(m) if len(m) >= 2 else None
    if point is not None and sum(aimed) < len(m) / 2 and np.linalg.norm(point) > AIM_TOL:
        shifted = m.copy()
        shifted[:, :3, 3] -= point
        if sum(_aims(x) for x in shifted) >= len(m) / 2:
            found.append(Problem(DATASET, "off-centre", f"the cameras aim at "
                f"{np.round(point, 3).tolist()}, not at the origin: move the head there "
                "(cam2world[:3, 3] -= that point)"))  # fmt: skip
    return found


def validate_labels(
    labels: np.ndarray, names: list[str], resolution: int | None = None
) -> list[Problem]:
    """labels [N, 25], names [N] -> every problem found, per label then of the whole set.

    resolution: the image size, named in the fix for pixel intrinsics when given.
    """
    labels = np.asarray(labels, np.float64)
    if labels.ndim != 2 or labels.shape[1] != 25:
        raise ValueError(f"labels: expected [N, 25], got {labels.shape}")
    found = [p for n, x in zip(names, labels, strict=True) for p in check_label(n, x, resolution)]
    return found + check_cameras(labels)


def summarize_problems(problems: list[Problem], max_names: int = 3) -> str:
    """One line per kind of problem, with its count, message and the first image names;
    problems of the whole set (`check_cameras`) first."""
    groups = defaultdict(list)
    for p in problems:
        groups[p.kind].append(p)
    lines = []
    # Problems of the whole set first (they often explain the per-label ones), then by count.
    order = lambda kv: (kv[1][0].name != DATASET, -len(kv[1]))
    for kind, items in sorted(groups.items(), key=order):
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
