"""The procedural mannequin head: a signed-distance bust whose shape, hair, colours and
accessories are drawn from a seed.

World units are EG3D's: the head sits inside the renderer's box [−0.5, 0.5]³, the face
looks towards +z, y is up and the person's right is −x (image-left in a frontal view). The
skull centre is near the origin, so cameras orbit `(0, 0, 0)` and look at it.

Parts (`PARTS`) are separate distance fields, joined with smooth unions into one surface;
the part nearest a surface point names its material. Face features exist only on the
front: nose, lips, eyes and brows are built around +z, the hair's front edge is a
hairline plane, and the back of the head is hair (or a bare skull for the bald identities).
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp

from styleavatar_jax.heads import sdf

PARTS = ("skin", "nose", "lips", "eye", "brow", "ear", "hair", "neck", "shirt", "glasses", "hat")
PART_ID = {name: i for i, name in enumerate(PARTS)}
SCALE = 0.88  # the bust is modelled in units where the skull is ~0.31 wide, then scaled
BOUND = 0.7  # radius of the sphere around the origin that holds the whole (scaled) bust
BACKGROUND = (0.92, 0.92, 0.92)

# Palettes the colours are drawn from (linear RGB in [0, 1]); jittered per identity.
SKIN = (
    (0.98, 0.84, 0.73),
    (0.94, 0.76, 0.63),
    (0.85, 0.64, 0.50),
    (0.70, 0.50, 0.36),
    (0.52, 0.35, 0.24),
    (0.36, 0.24, 0.17),
    (0.70, 0.82, 0.95),
    (0.72, 0.92, 0.74),
)  # the last two: stylised (blue, green) avatars
HAIR = (
    (0.06, 0.05, 0.05),
    (0.24, 0.15, 0.09),
    (0.45, 0.30, 0.16),
    (0.86, 0.72, 0.45),
    (0.62, 0.24, 0.10),
    (0.78, 0.78, 0.80),
    (0.95, 0.50, 0.70),
    (0.25, 0.45, 0.90),
    (0.50, 0.30, 0.75),
    (0.30, 0.70, 0.50),
)
IRIS = (
    (0.35, 0.22, 0.12),
    (0.25, 0.45, 0.75),
    (0.30, 0.55, 0.30),
    (0.50, 0.52, 0.55),
    (0.70, 0.50, 0.20),
)
FRAMES = ((0.05, 0.05, 0.05), (0.40, 0.25, 0.12), (0.85, 0.70, 0.30), (0.75, 0.10, 0.15))


@flax.struct.dataclass
class Identity:
    """One mannequin: shape factors (≈1 is average), styles and colours. Fields are arrays;
    a batch of identities has a leading axis on every field (`jax.vmap(sample_identity)`)."""

    skull: jax.Array  # [3] scale of the skull's radii
    jaw: jax.Array  # [2] jaw width, jaw height factors
    nose: jax.Array  # [3] length, width, tip lift
    eyes: jax.Array  # [3] spacing, size, height offset
    mouth: jax.Array  # [3] width, lip thickness, smile
    brow: jax.Array  # [2] thickness, tilt
    ears: jax.Array  # [2] size, protrusion
    body: jax.Array  # [2] neck radius, shoulder width factors
    hair: jax.Array  # [6] amount (0 bald), thickness, length, parting x, fringe, bun (0/1)
    glasses: jax.Array  # [] 0/1
    hat: jax.Array  # [] 0/1
    skin_rgb: jax.Array  # [3]
    hair_rgb: jax.Array  # [3]
    iris_rgb: jax.Array  # [3]
    lips_rgb: jax.Array  # [3]
    shirt_rgb: jax.Array  # [3]
    hat_rgb: jax.Array  # [3]
    frame_rgb: jax.Array  # [3]


def identity_key(seed: int, index) -> jax.Array:
    """The PRNG key of identity `index` of a dataset made with `seed`."""
    return jax.random.fold_in(jax.random.key(seed), index)


@jax.jit
def sample_identities(seed, indices) -> Identity:
    """Identities [N] number `indices` [N] of a dataset made with `seed` (batched fields)."""
    keys = jax.vmap(lambda i: identity_key(seed, i))(jnp.asarray(indices))
    return jax.vmap(sample_identity)(keys)


def _pick(key, palette, jitter):
    table = jnp.asarray(palette, jnp.float32)
    k1, k2 = jax.random.split(key)
    rgb = table[jax.random.randint(k1, (), 0, len(palette))]
    return jnp.clip(rgb + jitter * jax.random.normal(k2, (3,)), 0.0, 1.0)


def sample_identity(key: jax.Array) -> Identity:
    """A random identity from a PRNG key (jittable, vmappable)."""
    ks = iter(jax.random.split(key, 40))
    u = lambda shape=(), lo=0.0, hi=1.0: jax.random.uniform(next(ks), shape, jnp.float32, lo, hi)
    n = lambda shape=(), s=1.0: 1.0 + s * jax.random.normal(next(ks), shape)
    bern = lambda p: (jax.random.uniform(next(ks)) < p).astype(jnp.float32)
    amount = 1.0 - bern(0.08)
    hair = jnp.stack(
        [
            amount,
            u((), 0.6, 1.4),  # thickness
            u((), 0.0, 1.0),  # length: short .. long
            u((), -0.06, 0.06),  # parting
            bern(0.4) * u((), 0.5, 1.0),  # fringe
            bern(0.2),  # bun
        ]
    )
    hsv = jnp.stack([u(), u((), 0.3, 0.8), u((), 0.3, 0.9)])
    return Identity(
        skull=jnp.clip(n((3,), 0.05), 0.88, 1.12),
        jaw=jnp.clip(n((2,), 0.07), 0.82, 1.18),
        nose=jnp.clip(n((3,), 0.12), 0.7, 1.3),
        eyes=jnp.clip(n((3,), 0.08), 0.8, 1.2),
        mouth=jnp.clip(n((3,), 0.12), 0.7, 1.3),
        brow=jnp.clip(n((2,), 0.2), 0.6, 1.4),
        ears=jnp.clip(n((2,), 0.1), 0.75, 1.25),
        body=jnp.clip(n((2,), 0.08), 0.8, 1.2),
        hair=hair,
        glasses=bern(0.25),
        hat=bern(0.15) * amount + (1.0 - amount) * bern(0.3),
        skin_rgb=_pick(next(ks), SKIN, 0.03),
        hair_rgb=_pick(next(ks), HAIR, 0.04),
        iris_rgb=_pick(next(ks), IRIS, 0.05),
        lips_rgb=jnp.clip(
            jnp.array([0.75, 0.35, 0.38]) + 0.08 * jax.random.normal(next(ks), (3,)), 0.0, 1.0
        ),
        shirt_rgb=_hsv_to_rgb(hsv),
        hat_rgb=_pick(
            next(ks),
            HAIR[:1] + ((0.8, 0.15, 0.15), (0.15, 0.25, 0.6), (0.9, 0.85, 0.7), (0.2, 0.5, 0.3)),
            0.05,
        ),
        frame_rgb=_pick(next(ks), FRAMES, 0.02),
    )


def _hsv_to_rgb(hsv):
    h, s, v = hsv[0] * 6.0, hsv[1], hsv[2]
    k = jnp.mod(jnp.array([5.0, 3.0, 1.0]) + h, 6.0)
    return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# Geometry. Anchor points are functions of the identity so the keypoints follow the shape.


def _v(*xyz):
    return jnp.stack([jnp.asarray(a, jnp.float32) for a in xyz])


def anchors(ident: Identity) -> dict[str, jax.Array]:
    """Named 3D anchor points and sizes of an identity's features (model units: world
    units / SCALE)."""
    sx, sz = ident.skull[0], ident.skull[2]
    jw, jh = ident.jaw[0], ident.jaw[1]
    eye_dx, eye_r, eye_dy = 0.052 * ident.eyes[0], 0.024 * ident.eyes[1], 0.01 * (ident.eyes[2] - 1)
    eye_y = 0.035 + eye_dy
    nose_len = 0.06 * ident.nose[0]
    return dict(
        skull_c=_v(0.0, 0.07, -0.02),
        skull_r=jnp.array([0.152, 0.172, 0.182]) * ident.skull,
        jaw_c=_v(0.0, -0.04, 0.035),
        jaw_r=_v(0.122 * jw, 0.138 * jh, 0.135),
        chin_c=_v(0.0, -0.152 * jh, 0.095),
        chin_r=0.045 * jw,
        eye_r=eye_r,
        eye_y=eye_y,
        eye_right=_v(-eye_dx, eye_y, 0.124 * sz + 0.01),
        eye_left=_v(eye_dx, eye_y, 0.124 * sz + 0.01),
        nose_top=_v(0.0, eye_y + 0.005, 0.158 * sz),
        nose_tip=_v(0.0, eye_y - nose_len, 0.188 * sz + 0.02 * ident.nose[0]),
        nose_w=0.016 * ident.nose[1],
        mouth_y=-0.088 * jh + 0.005,
        mouth_z=0.146 * sz,
        mouth_w=0.042 * ident.mouth[0],
        lip_t=0.012 * ident.mouth[1],
        smile=0.01 * (ident.mouth[2] - 1.0),
        brow_y=eye_y + 0.042,
        brow_t=0.0075 * ident.brow[0],
        brow_tilt=0.012 * (ident.brow[1] - 1),
        ear_c=_v(0.148 * sx, 0.02, -0.015),
        ear_r=_v(0.022 * ident.ears[1], 0.042, 0.028) * ident.ears[0],
        neck_r=0.07 * ident.body[0],
        shoulder_w=0.36 * ident.body[1],
        shoulder_y=-0.29,
        hairline_y=0.11 - 0.02 * ident.hair[4],
    )


def brow_height(a: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """Height y [...] of the brow's centre line at |x| [...] (x ≥ 0: the folded side)."""
    return a["brow_y"] + a["brow_tilt"] * (x / 0.08) - 0.012 * ((x - 0.055) / 0.04) ** 2


def _mirror_x(p):
    """Fold space about x = 0 (both sides of symmetric parts with one primitive)."""
    return p.at[..., 0].set(jnp.abs(p[..., 0]))


def part_distances(ident: Identity, p: jax.Array) -> dict[str, jax.Array]:
    """Distances [...] from points p [..., 3] to each part in PARTS (before blending)."""
    return {k: v * SCALE for k, v in _part_distances(ident, p / SCALE).items()}


def _part_distances(ident: Identity, p: jax.Array) -> dict[str, jax.Array]:
    a = anchors(ident)
    inf = jnp.full(p.shape[:-1], 1e3)
    pm = _mirror_x(p)

    head = sdf.smooth_union(
        sdf.ellipsoid(p, a["skull_c"], a["skull_r"]), sdf.ellipsoid(p, a["jaw_c"], a["jaw_r"]), 0.06
    )
    head = sdf.smooth_union(head, sdf.sphere(p, a["chin_c"], a["chin_r"]), 0.05)
    eye_c = a["eye_left"]  # folded: one socket and one eyeball serve both sides
    socket = sdf.sphere(pm, eye_c + _v(0.0, 0.0, 0.02), a["eye_r"] * 1.35)
    head = sdf.smooth_subtract(head, socket, 0.02)
    # Cheekbones: a soft bulge below and outside each eye.
    head = sdf.smooth_union(head, sdf.sphere(pm, eye_c + _v(0.03, -0.04, -0.03), 0.045), 0.04)

    eye = sdf.sphere(pm, eye_c, a["eye_r"])

    tip, top = a["nose_tip"], a["nose_top"]
    nose = sdf.capsule(p, top, tip, a["nose_w"] * 0.75)
    nose = sdf.smooth_union(
        nose,
        sdf.ellipsoid(
            p,
            tip + _v(0.0, -0.006, -0.012),
            _v(a["nose_w"] * 1.9, a["nose_w"] * 1.0, a["nose_w"] * 1.3),
        ),
        0.012,
    )

    # Lips: two flattened ellipsoids, the mouth line between them bent by the smile.
    bend = a["smile"] * (p[..., 0] / a["mouth_w"]) ** 2
    q = p.at[..., 1].add(-bend)
    y0, z0, t = a["mouth_y"], a["mouth_z"], a["lip_t"]
    upper = sdf.ellipsoid(q, _v(0.0, y0 + 0.6 * t, z0), _v(a["mouth_w"], t, 0.55 * t + 0.012))
    lower = sdf.ellipsoid(
        q, _v(0.0, y0 - 0.8 * t, z0 - 0.002), _v(0.9 * a["mouth_w"], 1.1 * t, 0.55 * t + 0.012)
    )
    lips = sdf.smooth_subtract(
        jnp.minimum(upper, lower),
        sdf.box(q, _v(0.0, y0, z0 + 0.02), _v(a["mouth_w"] * 1.1, 0.0012, 0.02)),
        0.002,
    )

    brow_p = pm.at[..., 1].add(-(brow_height(a, pm[..., 0]) - a["brow_y"]))
    brow = sdf.capsule(
        brow_p, _v(0.02, a["brow_y"], 0.158), _v(0.09, a["brow_y"], 0.128), a["brow_t"]
    )

    ear_c = a["ear_c"]
    ear = sdf.ellipsoid(sdf.rotate_y(pm - ear_c, 0.35), _v(0.0, 0.0, 0.0), a["ear_r"])
    ear = sdf.smooth_subtract(ear, sdf.sphere(pm, ear_c + _v(0.028, 0.0, 0.004), 0.022), 0.006)

    neck = sdf.capsule(p, _v(0.0, -0.06, -0.025), _v(0.0, a["shoulder_y"], -0.03), a["neck_r"])
    shirt = sdf.ellipsoid(
        p, _v(0.0, a["shoulder_y"] - 0.12, -0.035), _v(a["shoulder_w"], 0.15, 0.16)
    )
    shirt = sdf.smooth_union(
        shirt,
        sdf.capsule(
            p,
            _v(0.0, a["shoulder_y"] + 0.035, -0.03),
            _v(0.0, a["shoulder_y"] - 0.06, -0.03),
            a["neck_r"] + 0.012,
        ),
        0.02,
    )

    hair = _hair(ident, a, p, pm)
    glasses = jnp.where(ident.glasses > 0.5, _glasses(a, pm), inf)
    hat = jnp.where(ident.hat > 0.5, _hat(a, p), inf)
    return dict(
        skin=head,
        nose=nose,
        lips=lips,
        eye=eye,
        brow=brow,
        ear=ear,
        hair=hair,
        neck=neck,
        shirt=shirt,
        glasses=glasses,
        hat=hat,
    )


def _hair(ident, a, p, pm):
    amount, thick, length, part_x, fringe, bun = (ident.hair[i] for i in range(6))
    shell_r = a["skull_r"] + _v(0.026, 0.03, 0.03) * thick + 0.006
    shell = sdf.ellipsoid(p, a["skull_c"] + _v(0.0, 0.006, -0.006), shell_r)
    # Long hair: a mass behind the neck down to the shoulders.
    drop = 0.06 + 0.22 * length
    back = sdf.ellipsoid(
        p, _v(0.0, 0.02 - 0.5 * drop, -0.07), _v(0.15 + 0.012 * thick, 0.12 + 0.5 * drop, 0.12)
    )
    hair = sdf.smooth_union(shell, back, 0.05)
    # Hairline: keep hair above an elevation (seen from the skull centre) that is high
    # over the forehead, near the ears at the sides (lower for long hair), low at the back.
    q = p - a["skull_c"]
    cos_az = q[..., 2] / jnp.maximum(jnp.hypot(q[..., 0], q[..., 2]), 1e-9)
    elev = jnp.arctan2(q[..., 1], jnp.hypot(q[..., 0], q[..., 2]))
    front, side, back = 0.62 - 0.2 * fringe, 0.05 - 0.45 * length, -1.25
    line = jnp.where(
        cos_az >= 0,
        side + (front - side) * jnp.sqrt(jnp.maximum(cos_az, 0.0)),
        side + (back - side) * (-cos_az),
    )
    hairline = (line - elev) * sdf.norm(q)  # ≈ arc length to the line
    hair = sdf.smooth_intersect(hair, hairline, 0.015)
    # Fringe over the forehead.
    fringe_d = sdf.ellipsoid(
        p, _v(0.0, a["hairline_y"] + 0.015, 0.118), _v(0.115, 0.035 * fringe + 1e-3, 0.042)
    )
    hair = jnp.where(fringe > 0.0, sdf.smooth_union(hair, fringe_d, 0.03), hair)
    # Parting: a groove from the forehead to the crown.
    groove = sdf.capsule(p, _v(part_x, 0.30, 0.12), _v(part_x * 0.5, 0.27, -0.14), 0.006)
    hair = sdf.smooth_subtract(hair, groove, 0.004)
    bun_d = sdf.sphere(p, _v(0.0, 0.19, -0.19), 0.065)
    hair = jnp.where(bun > 0.5, sdf.smooth_union(hair, bun_d, 0.03), hair)
    # Nothing below the shoulders' top.
    hair = sdf.smooth_intersect(hair, a["shoulder_y"] + 0.02 - p[..., 1], 0.02)
    return jnp.where(amount > 0.5, hair, 1e3)


def _glasses(a, pm):
    c = a["eye_left"] + _v(0.0, 0.0, 0.05)
    rim = sdf.torus(pm, c, _v(0.0, 0.0, 1.0), a["eye_r"] * 1.45, 0.0035)
    bridge = sdf.capsule(
        pm,
        _v(0.0, c[1] + 0.008, c[2] + 0.002),
        _v(c[0] - a["eye_r"] * 1.45, c[1] + 0.004, c[2]),
        0.003,
    )
    temple = sdf.capsule(
        pm,
        _v(c[0] + a["eye_r"] * 1.45, c[1] + 0.005, c[2] - 0.005),
        a["ear_c"] + _v(0.0, 0.025, 0.005),
        0.003,
    )
    return jnp.minimum(jnp.minimum(rim, bridge), temple)


def _hat(a, p):
    crown = sdf.ellipsoid(p, a["skull_c"] + _v(0.0, 0.01, -0.005), a["skull_r"] + 0.052)
    crown = sdf.smooth_intersect(crown, 0.12 - p[..., 1], 0.01)  # above y = 0.12
    brim = sdf.ellipsoid(p, _v(0.0, 0.125, 0.14), _v(0.14, 0.007, 0.13))  # a front visor
    brim = sdf.smooth_intersect(brim, 0.05 - p[..., 2], 0.01)
    return jnp.minimum(crown, brim)


def surface(ident: Identity, parts: dict[str, jax.Array]) -> jax.Array:
    """Blend part distances into the bust's signed distance [...]."""
    face = sdf.smooth_union(parts["skin"], parts["nose"], 0.012)
    face = sdf.smooth_union(face, parts["lips"], 0.008)
    face = jnp.minimum(face, parts["eye"])
    face = sdf.smooth_union(face, parts["brow"], 0.004)
    face = sdf.smooth_union(face, parts["ear"], 0.01)
    body = sdf.smooth_union(parts["neck"], parts["shirt"], 0.03)
    d = sdf.smooth_union(face, body, 0.04)
    d = sdf.smooth_union(d, parts["hair"], 0.01)
    return jnp.minimum(jnp.minimum(d, parts["glasses"]), parts["hat"])


def distance(ident: Identity, p: jax.Array) -> jax.Array:
    """Signed distance [...] of points p [..., 3] to the bust."""
    return surface(ident, part_distances(ident, p))


def face_distance(ident: Identity, p: jax.Array) -> jax.Array:
    """Distance to the bare face (no hair, ears, glasses or hat): where landmarks live."""
    parts = part_distances(ident, p)
    face = sdf.smooth_union(parts["skin"], parts["nose"], 0.012)
    face = sdf.smooth_union(face, parts["lips"], 0.008)
    return jnp.minimum(face, parts["eye"])


def part_index(parts: dict[str, jax.Array]) -> jax.Array:
    """Index into PARTS [...] of the nearest part."""
    return jnp.argmin(jnp.stack([parts[name] for name in PARTS], -1), axis=-1)


# ---------------------------------------------------------------------------------------
# Shading: diffuse only with world-fixed lights, so every view sees the same colours.

LIGHTS = ((0.45, 0.65, 0.62, 0.75), (-0.7, 0.25, 0.35, 0.3), (0.0, -0.4, -0.9, 0.15))
AMBIENT = 0.32


def albedo(ident: Identity, part: jax.Array, p: jax.Array) -> jax.Array:
    """Surface colour [..., 3] of points p [..., 3] on parts `part` [...]."""
    a = anchors(ident)
    p = p / SCALE
    pm = _mirror_x(p)
    # Iris and pupil: by the angle from the eyeball's forward axis.
    to_eye = pm - a["eye_left"]
    cos = to_eye[..., 2] / jnp.maximum(sdf.norm(to_eye), 1e-9)
    eye_rgb = jnp.where(
        (cos > 0.93)[..., None],
        jnp.zeros(3),
        jnp.where((cos > 0.78)[..., None], ident.iris_rgb, jnp.full(3, 0.95)),
    )
    # Hair strands: stripes in the azimuth about the crown, a little darker in the grooves.
    strands = 0.88 + 0.12 * jnp.sin(48.0 * jnp.arctan2(p[..., 0], p[..., 2] + 0.02))
    hair_rgb = ident.hair_rgb * strands[..., None]
    table = jnp.stack(
        [
            ident.skin_rgb,
            ident.skin_rgb * 0.97,
            ident.lips_rgb,
            jnp.zeros(3),
            ident.hair_rgb * 0.8,
            ident.skin_rgb * 0.95,
            jnp.zeros(3),
            ident.skin_rgb * 0.96,
            ident.shirt_rgb,
            ident.frame_rgb,
            ident.hat_rgb,
        ]
    )
    rgb = table[part]
    rgb = jnp.where((part == PART_ID["eye"])[..., None], eye_rgb, rgb)
    return jnp.where((part == PART_ID["hair"])[..., None], hair_rgb, rgb)


def shade(ident: Identity, p: jax.Array, n: jax.Array, part: jax.Array) -> jax.Array:
    """Lambertian colour [..., 3] with ambient occlusion from the distance field."""
    light = jnp.full(p.shape[:-1], AMBIENT)
    for lx, ly, lz, power in LIGHTS:
        d = jnp.array([lx, ly, lz]) / math.sqrt(lx * lx + ly * ly + lz * lz)
        light = light + power * jnp.maximum(sdf.dot(n, d), 0.0)
    h = jnp.array([0.01, 0.025, 0.045, 0.07]).reshape((4,) + (1,) * (p.ndim - 1))
    weight = jnp.array([1.0, 0.7, 0.49, 0.343]).reshape(h.shape)
    occ = jnp.sum((h - distance(ident, p + h[..., None] * n)) * weight, axis=0)  # one call
    ao = jnp.clip(1.0 - 4.0 * occ, 0.3, 1.0)
    return jnp.clip(albedo(ident, part, p) * (light * ao)[..., None], 0.0, 1.0)
