"""3D keypoints of the mannequin in OpenPose's layouts, and which of them a camera sees.

Body: the 18-point COCO model OpenPose draws (0 nose, 1 neck, 2/5 right/left shoulder,
14/15 right/left eye, 16/17 right/left ear; elbows, wrists, hips, knees and ankles are
outside a bust and are absent). Face: the 70-point model (the 68 iBUG landmarks —
jaw 0–16, brows 17–26, nose 27–35, eyes 36–47, mouth 48–67 — and pupils 68, 69). "Right"
is the person's right (−x), which a frontal view shows on the image's left.

Each landmark is laid out in the frontal view from the identity's anchors, then found on
the surface by tracing a ray onto the bare face (so a landmark always lies on the feature
it names, whatever the shape); neck and shoulders are joints inside the body, as in
OpenPose.

Visibility (`visible_keypoints`): face points (and the body's nose and eyes) are seen when
the face is turned towards the camera (the angle between the face's forward axis and the
direction to the camera is below `face_max_angle`), the point faces the camera and no
surface is in front of it (depth test). Ears need only the depth test; neck and shoulders
are joints, seen whenever they fall inside the image. Absent joints are never seen.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from styleavatar_jax import cameras
from styleavatar_jax.heads import mannequin, openpose, sdf
from styleavatar_jax.heads.mannequin import Identity
from styleavatar_jax.heads.project import project_points, visible_points

NUM_BODY, NUM_FACE = len(openpose.BODY_NAMES), openpose.NUM_FACE
_BUST = ("nose", "neck", "r_shoulder", "l_shoulder", "r_eye", "l_eye", "r_ear", "l_ear")
NOSE, NECK, R_SHOULDER, L_SHOULDER, R_EYE, L_EYE, R_EAR, L_EAR = (
    openpose.BODY_INDEX[name] for name in _BUST
)
BODY_PRESENT = tuple(name in _BUST for name in openpose.BODY_NAMES)
FACE_BODY = (NOSE, R_EYE, L_EYE)  # body points gated like face points
NOSE_TIP, R_PUPIL, L_PUPIL = 30, 68, 69


def _landmark_distance(ident: Identity, p):
    """The bare face with brows: the surface landmarks are traced onto."""
    parts = mannequin.part_distances(ident, p)
    return sdf.smooth_union(mannequin.face_distance(ident, p), parts["brow"], 0.004)


def _face_layout(ident: Identity):
    """Frontal layout of the 70 landmarks -> x, y [70], tilt [70] (radians about y of the
    direction the landmark is traced from; 0 = straight from the front)."""
    a = mannequin.anchors(ident)
    ex, ey, er = a["eye_left"][0], a["eye_y"], a["eye_r"]
    xs, ys, tilt = [], [], []

    def add(x, y, t=0.0):
        xs.append(jnp.asarray(x, jnp.float32))
        ys.append(jnp.asarray(y, jnp.float32))
        tilt.append(jnp.asarray(t, jnp.float32))

    # Jaw 0–16: a U from the person's right temple, under the chin, to the left temple.
    top = ey - 0.012
    bottom = a["chin_c"][1] - a["chin_r"] + 0.004
    width = a["jaw_r"][0] * 1.02
    for k in range(17):
        phi = -math.pi / 2 + math.pi * k / 16
        add(width * math.sin(phi), top - (top - bottom) * math.cos(phi), 0.85 * phi)
    # Brows 17–21 (right, outer → inner), 22–26 (left, inner → outer).
    for sign, order in (
        (-1.0, (0.09, 0.074, 0.058, 0.042, 0.026)),
        (1.0, (0.026, 0.042, 0.058, 0.074, 0.09)),
    ):
        for bx in order:
            add(sign * bx, mannequin.brow_height(a, jnp.asarray(bx)), 0.0)
    # Nose bridge 27–30 (30 = tip), nostrils' base 31–35 (right → left).
    tip = a["nose_tip"]
    for f in (0.0, 1 / 3, 2 / 3, 1.0):
        add(0.0, ey + f * (tip[1] - ey))
    w = a["nose_w"]
    for f in (-1.6, -0.8, 0.0, 0.8, 1.6):
        add(f * w, tip[1] - 0.014 + 0.004 * abs(f))
    # Eyes 36–41 (right: outer corner, upper ×2, inner corner, lower ×2), 42–47 (left: inner
    # corner, upper ×2, outer corner, lower ×2): both run from −x to +x along the upper lid.
    hw, hh = 1.05 * er, 0.55 * er
    ring = ((-1.0, 0.0), (-1 / 3, 1.0), (1 / 3, 1.0), (1.0, 0.0), (1 / 3, -1.0), (-1 / 3, -1.0))
    for cx in (-ex, ex):  # u = −1 is at −x: the right eye's outer, the left eye's inner corner
        for u, v in ring:
            add(cx + u * hw, ey + v * hh * math.sqrt(max(1 - u * u, 0.0) + 0.3))
    # Mouth: outer 48–59 (right corner, upper lip → left corner, lower lip back), inner 60–67.
    mw, t, y0 = a["mouth_w"], a["lip_t"], a["mouth_y"]
    bend = lambda x: a["smile"] * (x / mw) ** 2
    upper = (-1.0, -0.6, -0.25, 0.0, 0.25, 0.6, 1.0)
    for f in upper:
        x = f * mw
        add(x, y0 + bend(x) + (0.6 * t + t * math.sqrt(max(1 - f * f, 0.0))) * (abs(f) < 1))
    for f in (0.6, 0.25, 0.0, -0.25, -0.6):
        x = f * mw
        add(x, y0 + bend(x) - 0.8 * t - 1.1 * t * math.sqrt(max(1 - (f / 0.9) ** 2, 0.0)))
    for f, side in (
        (-0.8, 0),
        (-0.3, 1),
        (0.0, 1),
        (0.3, 1),
        (0.8, 0),
        (0.3, -1),
        (0.0, -1),
        (-0.3, -1),
    ):
        x = f * mw
        add(x, y0 + bend(x) + 0.0015 * side)
    # Pupils 68 (right), 69 (left).
    add(-ex, ey)
    add(ex, ey)
    return jnp.stack(xs), jnp.stack(ys), jnp.stack(tilt)


def face_keypoints(ident: Identity) -> tuple[jax.Array, jax.Array]:
    """One identity's 70 face landmarks [70, 3] on its surface and their normals [70, 3]."""
    x, y, tilt = _face_layout(ident)
    x, y = x * mannequin.SCALE, y * mannequin.SCALE
    direction = jnp.stack([jnp.sin(tilt), jnp.zeros_like(tilt), jnp.cos(tilt)], -1)
    through = jnp.stack([x, y, jnp.full_like(x, 0.03)], -1)
    origins = through + 0.6 * direction
    dist = partial(_landmark_distance, ident)
    t, hit = sdf.sphere_trace(dist, origins, -direction, bound=mannequin.BOUND, phases=((96, 1.0),))
    points = origins - jnp.where(hit, t, 0.6)[..., None] * direction
    return points, sdf.normals(dist, points)


def body_keypoints(ident: Identity, face: jax.Array) -> jax.Array:
    """One identity's 18 body keypoints [18, 3] (absent joints at the origin; see
    BODY_PRESENT), given its face landmarks [70, 3]."""
    a = mannequin.anchors(ident)
    body = jnp.zeros((NUM_BODY, 3))
    sy, sw = a["shoulder_y"], a["shoulder_w"]
    body = body.at[NOSE].set(face[NOSE_TIP])
    body = body.at[R_EYE].set(face[R_PUPIL]).at[L_EYE].set(face[L_PUPIL])
    s = mannequin.SCALE
    body = body.at[NECK].set(s * jnp.array([0.0, sy - 0.035, -0.03]))
    body = body.at[R_SHOULDER].set(s * jnp.stack([-0.78 * sw, sy - 0.07, -0.03]))
    body = body.at[L_SHOULDER].set(s * jnp.stack([0.78 * sw, sy - 0.07, -0.03]))
    # Ears: traced from the side onto the head with its ears (no hair).
    ear = a["ear_c"]
    origins = jnp.stack([jnp.array([-0.6, 0.0, 0.0]), jnp.array([0.6, 0.0, 0.0])])
    origins = origins + s * jnp.stack([jnp.zeros(()), ear[1], ear[2]])
    dirs = jnp.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])

    def head_with_ears(p):
        parts = mannequin.part_distances(ident, p)
        return jnp.minimum(mannequin.face_distance(ident, p), parts["ear"])

    t, hit = sdf.sphere_trace(
        head_with_ears, origins, dirs, bound=mannequin.BOUND, phases=((64, 1.0),)
    )
    ears = origins + jnp.where(hit, t, 0.6 - s * ear[0])[..., None] * dirs
    return body.at[R_EAR].set(ears[0]).at[L_EAR].set(ears[1])


@jax.jit
def mannequin_keypoints(ident: Identity) -> dict[str, jax.Array]:
    """Identities [B] -> body [B, 18, 3], face [B, 70, 3], face_normal [B, 70, 3]."""

    def one(i):
        face, normal = face_keypoints(i)
        return dict(body=body_keypoints(i, face), face=face, face_normal=normal)

    return jax.vmap(one)(ident)


@partial(jax.jit, static_argnames=("face_max_angle",))
def visible_keypoints(
    body,
    face,
    face_normal,
    c,
    depth,
    *,
    face_max_angle: float = 100.0,
    face_forward=(0.0, 0.0, 1.0),
):
    """Project keypoints and decide which are seen (module docstring).

    body [B, 18, 3], face [B, 70, 3], face_normal [B, 70, 3], c [B, 25], depth [B, H, W]
    (ray distance, inf where empty) -> body_uv [B, 18, 2], body_visible [B, 18],
    face_uv [B, 70, 2], face_visible [B, 70] (uv normalised as in `project`).
    """
    cam2world, k = cameras.split_label(c)
    origin = cam2world[:, :3, 3]
    res = depth.shape[-1]
    # Depth tolerance: a few pixel footprints at the head's distance.
    pixel = jnp.linalg.norm(origin, axis=-1) / (k[:, 0, 0] * res)
    tol = (0.01 + 3.0 * pixel)[:, None]

    body_uv, body_dist, body_z = project_points(body, c)
    face_uv, face_dist, face_z = project_points(face, c)
    to_cam = origin[:, None, :] - face
    to_cam = to_cam / jnp.linalg.norm(to_cam, axis=-1, keepdims=True)
    facing = jnp.sum(face_normal * to_cam, -1)
    view = origin / jnp.linalg.norm(origin, axis=-1, keepdims=True)
    gate = jnp.sum(view * jnp.asarray(face_forward), -1) > math.cos(math.radians(face_max_angle))
    face_vis = visible_points(face_uv, face_dist, face_z, depth, tol, facing) & gate[:, None]

    in_image = (body_z > 0) & jnp.all((body_uv >= 0) & (body_uv < 1), -1)
    seen = visible_points(body_uv, body_dist, body_z, depth, tol)
    present = jnp.asarray(BODY_PRESENT)
    body_vis = present & in_image
    body_vis = body_vis.at[:, R_EAR].set(seen[:, R_EAR]).at[:, L_EAR].set(seen[:, L_EAR])
    body_vis = body_vis.at[:, NOSE].set(face_vis[:, NOSE_TIP])
    body_vis = (
        body_vis.at[:, R_EYE].set(face_vis[:, R_PUPIL]).at[:, L_EYE].set(face_vis[:, L_PUPIL])
    )
    return body_uv, body_vis, face_uv, face_vis
