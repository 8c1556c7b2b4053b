"""OpenPose keypoint layout and drawing, pixel for pixel as ControlNet's annotator draws it.

The pose image ControlNet's OpenPose models were trained on comes from
`annotator/openpose/util.py` (lllyasviel/ControlNet-v1-1-nightly; the same code is
`controlnet_aux/open_pose/util.py`):

- `draw_bodypose`: the 18-point COCO body; the first 17 pairs of `limbSeq` are drawn as
  filled ellipses (`cv2.ellipse2Poly(centre, (length/2, stickwidth=4), angle, 0, 360, 1)` +
  `cv2.fillConvexPoly`) in full colour, one after another, then the whole canvas is scaled
  by 0.6 (`(canvas * 0.6).astype(uint8)`), then each keypoint is a filled circle of radius 4
  in its full colour.
- `draw_facepose`: each of the 70 face points is a white filled circle of radius 3, drawn
  after the body, skipped when its pixel column or row is 0 (`if x > eps and y > eps`).

`version="1.0"` draws as the original ControlNet 1.0 annotator (`sd-controlnet-openpose`):
circles first, then each limb blended over the canvas with
`cv2.addWeighted(canvas, 0.4, canvas_with_limb, 0.6, 0)`.

Keypoints come as normalised uv (`heads.project`: u right, v down, uv · (W, H) in pixels), as
ControlNet 1.1 stores them; the annotator truncates x·W, y·H to integers (`int()`), and so
do we. Rasterisation follows OpenCV: `ellipse2Poly`'s integer polygon is reproduced exactly
(its sine table is 7-decimal); `fillConvexPoly` and `circle` are reproduced by their
scan-line rules (drawing.cpp), with no anti-aliasing. "Right" is the person's right, which
is image-left in a frontal view.
"""

from __future__ import annotations

import math

import numpy as np

# COCO-18 order, as OpenPose's body_pose_estimation outputs it.
BODY_NAMES = (
    "nose", "neck",
    "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle",
    "r_eye", "l_eye", "r_ear", "l_ear",
)  # fmt: skip
BODY_INDEX = {name: i for i, name in enumerate(BODY_NAMES)}

# `limbSeq` (1-based there) minus 1. Its last two pairs, r_shoulder–r_ear and
# l_shoulder–l_ear, are never drawn (`for i in range(17)`), so they are left out.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

# RGB; COLORS[i] is keypoint i's circle and limb i's ellipse.
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

STICKWIDTH = 4  # ellipse half-width (px)
BODY_RADIUS = 4  # keypoint circle radius (px)
FACE_RADIUS = 3
FACE_COLOR = (255, 255, 255)
LIMB_SCALE = 0.6  # ControlNet 1.1: canvas * 0.6 after the limbs; 1.0: addWeighted(0.4, 0.6)

# The 70-point OpenPose face: the 68 iBUG-300W (dlib) landmarks in their standard order,
# then the right and left pupils. r_/l_ are the person's sides (r_ is image-left).
FACE_GROUPS = {
    "jaw": range(0, 17),  # from the right ear's side round the chin to the left's
    "r_brow": range(17, 22),
    "l_brow": range(22, 27),
    "nose_bridge": range(27, 31),  # top to tip
    "nose_base": range(31, 36),  # right nostril to left
    "r_eye": range(36, 42),  # outer corner, clockwise in the image
    "l_eye": range(42, 48),
    "mouth_outer": range(48, 60),  # right corner, clockwise in the image
    "mouth_inner": range(60, 68),
    "r_pupil": range(68, 69),
    "l_pupil": range(69, 70),
}
FACE_NAMES = tuple(
    name if len(idx) == 1 else f"{name}_{k}" for name, idx in FACE_GROUPS.items()
    for k, _ in enumerate(idx)
)  # fmt: skip
NUM_FACE = len(FACE_NAMES)  # 70

_EPS = 0.01  # draw_facepose skips points whose integer x or y is not > eps

# OpenCV's SinTable (drawing.cpp): sin of whole degrees 0..450, to 7 decimals, float32.
_SIN_TABLE = np.round(np.sin(np.deg2rad(np.arange(451))), 7).astype(np.float32).astype(np.float64)


def _round(x):
    """cvRound: round half to even, to int64."""
    return np.rint(x).astype(np.int64)


def ellipse_polygon(center: tuple[int, int], axes: tuple[int, int], angle: int) -> np.ndarray:
    """cv2.ellipse2Poly(center, axes, angle, 0, 360, delta=1) -> int64 [P, 2] (x, y) vertices.

    Integer centre (x, y), half-axes (a, b) and angle (degrees), as the annotator passes them;
    consecutive duplicate vertices are dropped, as OpenCV does.
    """
    while angle < 0:  # OpenCV folds the angle into [0, 360]
        angle += 360
    while angle > 360:
        angle -= 360
    alpha, beta = _SIN_TABLE[450 - angle], _SIN_TABLE[angle]  # cos, sin
    deg = np.arange(361)
    x = axes[0] * _SIN_TABLE[450 - deg]
    y = axes[1] * _SIN_TABLE[deg]
    pts = np.stack(
        [_round(center[0] + x * alpha - y * beta), _round(center[1] + x * beta + y * alpha)], -1
    )
    keep = np.ones(len(pts), bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=-1)
    pts = pts[keep]
    return np.repeat(pts, 2, axis=0) if len(pts) == 1 else pts


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates towards zero)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _clip_line(width: int, height: int, x1: int, y1: int, x2: int, y2: int):
    """drawing.cpp clipLine(Size, pt1, pt2) -> (inside, x1, y1, x2, y2)."""
    right, bottom = width - 1, height - 1
    code = lambda x, y: (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8
    c1, c2 = code(x1, y1), code(x2, y2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += _cdiv((a - y1) * (x2 - x1), y2 - y1)
            y1, c1 = a, (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += _cdiv((a - y2) * (x2 - x1), y2 - y1)
            y2, c2 = a, (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += _cdiv((a - x1) * (y2 - y1), x2 - x1)
                x1, c1 = a, 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += _cdiv((a - x2) * (y2 - y1), x2 - x1)
                x2, c2 = a, 0
    return (c1 | c2) == 0, x1, y1, x2, y2


def _draw_line(mask: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> None:
    """drawing.cpp Line(img, pt1, pt2, color, 8): 8-connected LineIterator, left to right."""
    height, width = mask.shape
    if not (0 <= x1 < width and 0 <= x2 < width and 0 <= y1 < height and 0 <= y2 < height):
        inside, x1, y1, x2, y2 = _clip_line(width, height, x1, y1, x2, y2)
        if not inside:
            return
    if x2 < x1:
        x1, y1, x2, y2 = x2, y2, x1, y1
    dx, dy = x2 - x1, abs(y2 - y1)
    sy = 1 if y2 >= y1 else -1
    steep = dy > dx
    if steep:
        dx, dy = dy, dx
    err, plus_delta, minus_delta = dx - 2 * dy, 2 * dx, -2 * dy
    x, y = x1, y1
    for _ in range(dx + 1):
        mask[y, x] = True
        minor = err < 0
        err += minus_delta + (plus_delta if minor else 0)
        if steep:
            y, x = y + sy, x + minor
        else:
            x, y = x + 1, y + sy * minor


def convex_polygon_mask(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.fillConvexPoly(img, poly, color) coverage (LINE_8, shift 0) -> bool [H, W].

    poly [P, 2] int (x, y). A line-by-line port of drawing.cpp FillConvexPoly: the outline
    as 8-connected lines, then fixed-point (16-bit) edge walking from the top vertex, each
    row filled between its two edges rounded half up.
    """
    xy_shift, xy_one = 16, 1 << 16
    v = [(int(x), int(y)) for x, y in poly]
    npts = len(v)
    mask = np.zeros((height, width), bool)
    prev = v[-1]
    for p in v:
        _draw_line(mask, prev[0], prev[1], p[0], p[1])
        prev = p
    xs, ys = [p[0] for p in v], [p[1] for p in v]
    ymin, ymax = min(ys), max(ys)
    if npts < 3 or max(xs) < 0 or ymax < 0 or min(xs) >= width or ymin >= height:
        return mask
    ymax = min(ymax, height - 1)
    imin = ys.index(ymin)
    idx_, di, x_, dx_, ye = [imin, imin], [1, npts - 1], [-xy_one, -xy_one], [0, 0], [ymin] * 2
    edges, y = npts, ymin
    half = xy_one >> 1
    while True:
        for i in range(2):
            if y >= ye[i]:
                idx0 = idx_[i]
                idx = idx0 + di[i]
                if idx >= npts:
                    idx -= npts
                while edges > 0:
                    edges -= 1
                    ty = v[idx][1]
                    if ty > y:
                        xs0, xe0 = v[idx0][0] << xy_shift, v[idx][0] << xy_shift
                        ye[i] = ty
                        dx_[i] = _cdiv((xe0 - xs0) * 2 + (ty - y), 2 * (ty - y))
                        x_[i], idx_[i] = xs0, idx
                        break
                    idx0 = idx
                    idx += di[i]
                    if idx >= npts:
                        idx -= npts
                else:
                    edges -= 1  # the C loop's `edges-- > 0` test leaves it at −1
        if edges < 0:
            break
        if y >= 0:
            left, right = (1, 0) if x_[0] > x_[1] else (0, 1)
            xx1, xx2 = (x_[left] + half) >> xy_shift, (x_[right] + half) >> xy_shift
            if xx2 >= 0 and xx1 < width:
                mask[y, max(xx1, 0) : min(xx2, width - 1) + 1] = True
        x_[0] += dx_[0]
        x_[1] += dx_[1]
        y += 1
        if y > ymax:
            break
    return mask


def circle_half_widths(radius: int) -> np.ndarray:
    """Half-width of each row dy = −r..r of OpenCV's filled circle (drawing.cpp `Circle`,
    thickness −1, LINE_8) -> int [2r + 1]."""
    half = np.full(2 * radius + 1, -1, np.int64)
    err, dx, dy, plus, minus = 0, radius, 0, 1, 2 * radius - 1
    while dx >= dy:  # the midpoint loop, recording the spans it fills
        for row, span in ((dy, dx), (dx, dy)):
            for r in (radius - row, radius + row):
                half[r] = max(half[r], span)
        dy += 1
        err += plus
        plus += 2
        mask = -1 if err > 0 else 0
        err -= minus & mask
        dx += mask
        minus -= mask & 2
    return half


def circle_mask(cx: int, cy: int, radius: int, height: int, width: int) -> np.ndarray:
    """cv2.circle(canvas, (cx, cy), radius, color, thickness=-1) coverage -> bool [H, W]."""
    half = circle_half_widths(radius)
    rows = cy + np.arange(-radius, radius + 1)
    cols = np.arange(width)
    mask = np.zeros((height, width), bool)
    ok = (rows >= 0) & (rows < height)
    mask[rows[ok]] = np.abs(cols[None] - cx) <= half[ok, None]
    return mask


def _limb_polygon(a, b, height: int, width: int) -> np.ndarray:
    """The annotator's ellipse for a limb between normalised points a, b [2] -> [P, 2]."""
    ys = np.array([a[0], b[0]]) * float(width)  # the annotator's (swapped) names: Y is x
    xs = np.array([a[1], b[1]]) * float(height)
    length = ((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5
    angle = math.degrees(math.atan2(xs[0] - xs[1], ys[0] - ys[1]))
    center = (int(np.mean(ys)), int(np.mean(xs)))
    return ellipse_polygon(center, (int(length / 2), STICKWIDTH), int(angle))


def _pixel(p, height: int, width: int) -> tuple[int, int]:
    """Normalised uv [2] -> the annotator's integer pixel (int(x·W), int(y·H))."""
    return int(float(p[0]) * width), int(float(p[1]) * height)


def draw_pose(
    body_uv, body_visible, face_uv=None, face_visible=None, *, height: int, width: int,
    version: str = "1.1",
) -> np.ndarray:  # fmt: skip
    """One pose image, as ControlNet's annotator draws it (module doc).

    body_uv [18, 2], body_visible [18] bool, face_uv [70, 2], face_visible [70] bool (or
    None: no face) -> uint8 [H, W, 3] RGB on black. Invisible points are not drawn; a limb is
    drawn only when both its ends are visible. version "1.1" (ControlNet 1.1, controlnet_aux)
    or "1.0" (ControlNet 1.0's blended limbs).
    """
    body_uv = np.asarray(body_uv, np.float64)
    body_visible = np.asarray(body_visible, bool)
    if body_uv.shape != (len(BODY_NAMES), 2) or body_visible.shape != (len(BODY_NAMES),):
        raise ValueError(
            f"draw_pose: body_uv {body_uv.shape} / body_visible {body_visible.shape}; expected "
            f"({len(BODY_NAMES)}, 2) / ({len(BODY_NAMES)},)"
        )
    if version not in ("1.0", "1.1"):
        raise ValueError(f"draw_pose: version={version!r}; expected '1.0' or '1.1'")
    canvas = np.zeros((height, width, 3), np.uint8)

    def circles(canvas):
        for i in np.flatnonzero(body_visible):
            x, y = _pixel(body_uv[i], height, width)
            canvas[circle_mask(x, y, BODY_RADIUS, height, width)] = COLORS[i]

    limbs = [
        (i, convex_polygon_mask(_limb_polygon(body_uv[a], body_uv[b], height, width), height,
                                width))
        for i, (a, b) in enumerate(LIMBS) if body_visible[a] and body_visible[b]
    ]  # fmt: skip
    if version == "1.1":
        for i, mask in limbs:
            canvas[mask] = COLORS[i]
        canvas = (canvas * LIMB_SCALE).astype(np.uint8)
        circles(canvas)
    else:
        circles(canvas)
        for i, mask in limbs:
            # addWeighted in float32, saturate_cast rounds half to even.
            mixed = (1 - LIMB_SCALE) * canvas[mask].astype(np.float32) + np.float32(
                LIMB_SCALE
            ) * np.asarray(COLORS[i], np.float32)
            canvas[mask] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    if face_uv is not None:
        face_uv = np.asarray(face_uv, np.float64)
        face_visible = np.asarray(face_visible, bool)
        if face_uv.shape != (NUM_FACE, 2) or face_visible.shape != (NUM_FACE,):
            raise ValueError(
                f"draw_pose: face_uv {face_uv.shape} / face_visible {face_visible.shape}; "
                f"expected ({NUM_FACE}, 2) / ({NUM_FACE},)"
            )
        for i in np.flatnonzero(face_visible):
            x, y = _pixel(face_uv[i], height, width)
            if x > _EPS and y > _EPS:
                canvas[circle_mask(x, y, FACE_RADIUS, height, width)] = FACE_COLOR
    return canvas


def draw_poses(
    body_uv, body_visible, face_uv=None, face_visible=None, *, height: int, width: int,
    version: str = "1.1",
) -> np.ndarray:  # fmt: skip
    """Batched `draw_pose`: body_uv [B, 18, 2], body_visible [B, 18], face_uv [B, 70, 2],
    face_visible [B, 70] (or None) -> uint8 [B, H, W, 3]."""
    body_uv, body_visible = np.asarray(body_uv), np.asarray(body_visible)
    faces = [None] * len(body_uv) if face_uv is None else np.asarray(face_uv)
    face_vis = [None] * len(body_uv) if face_uv is None else np.asarray(face_visible)
    return np.stack([
        draw_pose(*args, height=height, width=width, version=version)
        for args in zip(body_uv, body_visible, faces, face_vis, strict=True)
    ])  # fmt: skip
