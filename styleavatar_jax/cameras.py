"""Camera poses, intrinsics and the 25-d EG3D label.

Conventions are EG3D's (`camera_utils.py`), so EG3D datasets and checkpoints work as is:

- cam2world is a 4x4 OpenCV-style matrix: columns 0-2 are the camera's x (image right),
  y (image down) and z (forward, towards the target) axes in world space, column 3 the
  camera origin. The world is y-up: a camera with no roll has its y axis below the horizon.
- Intrinsics are normalised by image size (principal point 0.5, 0.5).
- Label c = cam2world row-major (16) ‖ intrinsics row-major (9) = 25 floats.

Geometric angles (radians), used by everything but the `eg3d_*` samplers:
yaw 0 puts the camera on the +z side looking at the face; yaw > 0 moves it towards +x,
which is image-right of the frontal view (EG3D gen_samples: h = π/2 + yaw). pitch > 0
puts the camera above (+y), looking down. The camera orbits `center` at `radius` and
looks at `pivot`. EG3D's LookAtPoseSampler orbits the *world origin* whatever the look-at
point, so center=(0, 0, 0) with pivot=(0, 0, 0.2) reproduces its FFHQ cameras; pass
center=pivot for a true orbit around the pivot.

EG3D's vertical angle v (vertical_mean = π/2 + p in gen_samples/gen_videos) is a polar
angle warped by φ = arccos(1 − 2v/π), so sin(pitch) = 1 − 2v/π = −2p/π: p > 0 is a
camera *below* the face, pitch ≈ −0.64·p for small p, and EG3D's clamp of v to
[1e-5, π − 1e-5] caps |pitch| at ≈ 89.8°. See `eg3d_vertical_to_pitch`.
"""

import math
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

RADIUS = 2.7  # EG3D FFHQ avg_camera_radius
PIVOT = (0.0, 0.0, 0.2)  # EG3D FFHQ avg_camera_pivot
FOV_DEGREES = 18.837  # EG3D FFHQ field of view
VIEW_GROUPS = ("front", "left", "back", "right")  # yaw_bin(yaw, 4) = 0..3
_EPS = 1e-6  # below this |horizontal part of the forward vector| the view is vertical


def _float(x) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _normalize(v: jax.Array) -> jax.Array:
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-30)


@jax.jit
def fov_to_intrinsics(fov_degrees=FOV_DEGREES, center=0.5) -> jax.Array:
    """fov [...] (degrees) -> normalised intrinsics [..., 3, 3], as EG3D's FOV_to_intrinsics.

    EG3D's rounded constants (π ≈ 3.14159, √2 ≈ 1.414) are kept so labels match exactly.
    """
    fov, c = jnp.broadcast_arrays(_float(fov_degrees), _float(center))
    focal = 1.0 / (jnp.tan(fov * 3.14159 / 360.0) * 1.414)
    z, o = jnp.zeros_like(focal), jnp.ones_like(focal)
    rows = [[focal, z, c], [z, focal, c], [z, z, o]]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def _frame(forward: jax.Array, origin: jax.Array, right_hint: jax.Array) -> jax.Array:
    """Unit forward [..., 3], origin [..., 3], right_hint [..., 3] -> cam2world [..., 4, 4].

    EG3D create_cam2world_matrix: right = −normalize(up × forward) with up = +y, i.e.
    (−f_z, 0, f_x)/|·|; down = normalize(forward × right). When the view is vertical that
    cross product vanishes (EG3D returns NaN) and `right_hint` is used instead.
    """
    right = jnp.stack([-forward[..., 2], jnp.zeros_like(forward[..., 0]), forward[..., 0]], -1)
    h = jnp.linalg.norm(right, axis=-1, keepdims=True)
    ok = h > _EPS
    right = jnp.where(ok, right / jnp.where(ok, h, 1.0), right_hint)
    down = _normalize(jnp.cross(forward, right))
    top = jnp.concatenate([jnp.stack([right, down, forward], -1), origin[..., None]], -1)
    bottom = jnp.broadcast_to(jnp.array([0, 0, 0, 1], top.dtype), top.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)


def _yaw_right(yaw: jax.Array) -> jax.Array:
    """Camera x axis of an orbit camera at `yaw`: (cos yaw, 0, −sin yaw) [..., 3]."""
    return jnp.stack([jnp.cos(yaw), jnp.zeros_like(yaw), -jnp.sin(yaw)], -1)


@jax.jit
def look_at(origin, target) -> jax.Array:
    """origin [..., 3], target [..., 3] -> cam2world [..., 4, 4], as EG3D create_cam2world_matrix.

    Vertical views (origin straight above/below target), where EG3D gives NaN, take the
    right vector (cos a, 0, −sin a), a = azimuth of the origin about the world y axis
    (a = 0 on the axis): the limit for a camera orbiting the world origin and looking at
    it, as EG3D's GaussianCameraPoseSampler does, at pitch → ±90°.
    """
    origin, target = _float(origin), _float(target)
    origin, target = jnp.broadcast_arrays(origin, target)
    hint = jnp.stack([origin[..., 2], jnp.zeros_like(origin[..., 0]), -origin[..., 0]], -1)
    hyp = jnp.linalg.norm(hint, axis=-1, keepdims=True)
    hint = jnp.where(hyp > 0, hint / jnp.where(hyp > 0, hyp, 1.0), jnp.array([1.0, 0.0, 0.0]))
    return _frame(_normalize(target - origin), origin, hint)


@jax.jit
def pose_from_angles(yaw, pitch, radius=RADIUS, pivot=PIVOT, center=(0.0, 0.0, 0.0)) -> jax.Array:
    """Geometric yaw [...], pitch [...] (radians), radius [...] -> cam2world [..., 4, 4].

    The camera sits at center + radius·(sin yaw cos pitch, sin pitch, cos yaw cos pitch)
    and looks at pivot [..., 3]. At pitch ±π/2 with pivot on the orbit axis the right
    vector is its continuous limit (cos yaw, 0, −sin yaw), so the pose depends on yaw.
    """
    yaw, pitch, radius = jnp.broadcast_arrays(_float(yaw), _float(pitch), _float(radius))
    pivot, center = _float(pivot), _float(center)
    cp = jnp.cos(pitch)
    d = jnp.stack([jnp.sin(yaw) * cp, jnp.sin(pitch), jnp.cos(yaw) * cp], -1)
    offset = pivot - center  # subtract first: exactly 0 when orbiting the pivot
    origin = center + radius[..., None] * d
    forward = _normalize(offset - radius[..., None] * d)
    return _frame(forward, jnp.broadcast_to(origin, forward.shape), _yaw_right(yaw))


@jax.jit
def angles_from_pose(cam2world, center=(0.0, 0.0, 0.0)) -> tuple[jax.Array, jax.Array, jax.Array]:
    """cam2world [..., 4, 4] -> yaw, pitch (radians, yaw in (−π, π]), radius [...].

    Inverse of `pose_from_angles` (the pivot is not needed: angles are those of the camera
    origin about `center`). On the pole, where the origin gives no yaw, yaw is read from
    the camera's right vector, which recovers it when the pivot is on the orbit axis.
    """
    m = _float(cam2world)
    d = m[..., :3, 3] - _float(center)
    radius = jnp.linalg.norm(d, axis=-1)
    hyp = jnp.hypot(d[..., 0], d[..., 2])
    pitch = jnp.arctan2(d[..., 1], hyp)
    on_pole = hyp <= _EPS * radius
    yaw = jnp.where(
        on_pole, jnp.arctan2(-m[..., 2, 0], m[..., 0, 0]), jnp.arctan2(d[..., 0], d[..., 2])
    )
    return yaw, pitch, radius


@jax.jit
def eg3d_vertical_to_pitch(v) -> jax.Array:
    """EG3D sampler vertical angle v [...] -> geometric pitch [...]: arcsin(1 − 2·clip(v)/π)."""
    v = jnp.clip(_float(v), 1e-5, math.pi - 1e-5)
    return jnp.arcsin(1.0 - 2.0 * v / math.pi)


@jax.jit
def pitch_to_eg3d_vertical(pitch) -> jax.Array:
    """Geometric pitch [...] -> EG3D vertical angle v = π/2·(1 − sin pitch) [...]."""
    return 0.5 * math.pi * (1.0 - jnp.sin(_float(pitch)))


def _eg3d_sample(h, v, pivot, radius) -> jax.Array:
    """EG3D camera_utils samplers after the draw: h, v [...] -> cam2world [..., 4, 4]."""
    v = jnp.clip(v, 1e-5, math.pi - 1e-5)
    phi = jnp.arccos(1 - 2 * (v / math.pi))
    origin = radius * jnp.stack(
        [jnp.sin(phi) * jnp.cos(math.pi - h), jnp.cos(phi), jnp.sin(phi) * jnp.sin(math.pi - h)], -1
    )
    return look_at(origin, jnp.broadcast_to(_float(pivot), origin.shape))


@partial(jax.jit, static_argnames="batch_size")
def eg3d_look_at_sample(
    key: jax.Array,
    horizontal_mean,
    vertical_mean,
    pivot=PIVOT,
    radius=RADIUS,
    horizontal_stddev=0.0,
    vertical_stddev=0.0,
    batch_size: int = 1,
) -> jax.Array:
    """EG3D LookAtPoseSampler.sample with a JAX key -> cam2world [B, 4, 4].

    h ~ N(horizontal_mean, σ_h), v ~ N(vertical_mean, σ_v) (means may be [B] arrays,
    B = broadcast of batch_size and the means). yaw = h − π/2; pitch: see
    `eg3d_vertical_to_pitch`. Same maths as EG3D, not the same random numbers.
    """
    hm, vm = _float(horizontal_mean), _float(vertical_mean)
    shape = jnp.broadcast_shapes((batch_size,), hm.shape, vm.shape)
    h_noise, v_noise = jax.random.normal(key, (2,) + shape, jnp.result_type(hm, vm))
    h = h_noise * horizontal_stddev + hm
    v = v_noise * vertical_stddev + vm
    return _eg3d_sample(h, v, pivot, radius)


def eg3d_gaussian_sample(
    key: jax.Array,
    horizontal_mean,
    vertical_mean,
    horizontal_stddev=0.0,
    vertical_stddev=0.0,
    radius=1.0,
    batch_size: int = 1,
) -> jax.Array:
    """EG3D GaussianCameraPoseSampler.sample (looks at the world origin) -> [B, 4, 4]."""
    return eg3d_look_at_sample(
        key, horizontal_mean, vertical_mean, (0.0, 0.0, 0.0), radius,
        horizontal_stddev, vertical_stddev, batch_size,
    )  # fmt: skip


@partial(jax.jit, static_argnames="n")
def sample_uniform_views(
    key: jax.Array,
    n: int,
    yaw_range: tuple[float, float] = (-math.pi, math.pi),
    pitch_range: tuple[float, float] = (-math.pi / 6, math.pi / 6),
    radius=RADIUS,
    pivot=PIVOT,
    center=(0.0, 0.0, 0.0),
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """n cameras, yaw and geometric pitch each uniform -> cam2world [n, 4, 4], yaw [n], pitch [n].

    Uniform in pitch (DESIGN §5), not uniform on the sphere.
    """
    u = jax.random.uniform(key, (2, n), jnp.float32)
    yaw = yaw_range[0] + (yaw_range[1] - yaw_range[0]) * u[0]
    pitch = pitch_range[0] + (pitch_range[1] - pitch_range[0]) * u[1]
    return pose_from_angles(yaw, pitch, radius, pivot, center), yaw, pitch


def random_labels(seed: int, n: int, fov_degrees=FOV_DEGREES) -> np.ndarray:
    """n EG3D labels float32 [n, 25] from `sample_uniform_views` (360° yaw, pitch ±30°) on
    the default orbit: random valid cameras for tests and benchmarks."""
    cam2world, _, _ = sample_uniform_views(jax.random.key(seed), n)
    k = jnp.broadcast_to(fov_to_intrinsics(fov_degrees), (n, 3, 3))
    return np.asarray(make_label(cam2world, k), np.float32)


@jax.jit
def make_label(cam2world, intrinsics) -> jax.Array:
    """cam2world [..., 4, 4], intrinsics [..., 3, 3] (broadcast) -> label c [..., 25]."""
    m, k = _float(cam2world), _float(intrinsics)
    batch = jnp.broadcast_shapes(m.shape[:-2], k.shape[:-2])
    m, k = jnp.broadcast_to(m, batch + (4, 4)), jnp.broadcast_to(k, batch + (3, 3))
    return jnp.concatenate([m.reshape(batch + (16,)), k.reshape(batch + (9,))], -1)


@jax.jit
def split_label(c) -> tuple[jax.Array, jax.Array]:
    """Label c [..., 25] -> cam2world [..., 4, 4], intrinsics [..., 3, 3]."""
    c = _float(c)
    return c[..., :16].reshape(c.shape[:-1] + (4, 4)), c[..., 16:25].reshape(c.shape[:-1] + (3, 3))


def look_at_point(c) -> np.ndarray:
    """Labels c [N, 25] -> the point [3] nearest to every camera's optical axis (least
    squares): the pivot the cameras look at. Σ (I − d dᵀ) p = Σ (I − d dᵀ) o over the
    origins o and forward axes d (column 2 of cam2world)."""
    m = np.asarray(c, np.float64)[:, :16].reshape(-1, 4, 4)
    d = m[:, :3, 2] / np.linalg.norm(m[:, :3, 2], axis=-1, keepdims=True)
    proj = np.eye(3) - d[:, :, None] * d[:, None, :]  # [N, 3, 3]
    a, b = proj.sum(0), np.einsum("nij,nj->i", proj, m[:, :3, 3])
    return np.linalg.lstsq(a, b, rcond=None)[0]


@jax.jit
def label_angles(c) -> tuple[jax.Array, jax.Array]:
    """Labels c [..., 25] -> yaw, pitch [...] (radians) of the camera about the origin."""
    cam2world, _ = split_label(c)
    yaw, pitch, _ = angles_from_pose(cam2world)
    return yaw, pitch


@jax.jit
def mirror_pose(cam2world) -> jax.Array:
    """cam2world [..., 4, 4] of the horizontally flipped image, as EG3D mirror_dataset.py.

    flip_yaw negates R01, R02, R10, R20 and t_x: S·M·S with S = diag(−1, 1, 1, 1), a world
    x-mirror conjugated with a camera x-flip (the bottom row is left as it is, as EG3D
    does). Yaw is negated, pitch and radius kept.
    """
    m = _float(cam2world)
    s = jnp.array([-1.0, 1.0, 1.0, 1.0], dtype=m.dtype)
    return jnp.concatenate([(s[:, None] * m * s)[..., :3, :], m[..., 3:, :]], axis=-2)


@jax.jit
def mirror_label(c) -> jax.Array:
    """Label c [..., 25] of the flipped image; intrinsics untouched, as EG3D does."""
    m, k = split_label(c)
    return make_label(mirror_pose(m), k)


_NUM = r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*"
_RANGE = re.compile(rf"({_NUM}):({_NUM}):\s*(\d+)\s*")
_LIST = re.compile(rf"{_NUM}(?:,{_NUM})*")


def parse_views(spec: str, flag: str = "--views") -> tuple[np.ndarray, np.ndarray]:
    """'yaw=A:B:N;pitch=...' or 'yaw=Y1,Y2,...' (degrees) -> yaw [V], pitch [V] (radians).

    A:B:N is N values evenly from A to B; B is left out when B − A is a non-zero multiple
    of 360 (so 'yaw=-180:180:8' is −180, −135, ..., 135), otherwise included. Either part
    may be omitted (default 0); the views are the grid of both, pitch-major (all yaws at
    the first pitch, then the next). |pitch| must be at most 90.
    """
    fmt = "'yaw=A:B:N' or 'yaw=Y1,Y2,...', optionally ';pitch=...' likewise, in degrees"
    err = lambda why: ValueError(f"{flag}={spec!r}: {why}; expected {fmt}")
    values = {}
    for part in spec.split(";"):
        name, eq, body = part.partition("=")
        name = name.strip().lower()
        if not eq or name not in ("yaw", "pitch") or name in values:
            raise err(f"bad or repeated part {part.strip()!r}")
        if m := _RANGE.fullmatch(body):
            a, b, n = float(m[1]), float(m[2]), int(m[3])
            if n < 1:
                raise err(f"N must be at least 1 in {body.strip()!r}")
            span = b - a
            closed = span == 0 or abs(span) % 360 != 0
            values[name] = np.linspace(a, b, n, endpoint=closed)
        elif _LIST.fullmatch(body):
            values[name] = np.array([float(x) for x in body.split(",")])
        else:
            raise err(f"cannot read {body.strip()!r}")
    yaw, pitch = values.get("yaw", np.zeros(1)), values.get("pitch", np.zeros(1))
    if np.any(np.abs(pitch) > 90):
        raise err(f"pitch {pitch.tolist()} outside [-90, 90]")
    pitch_grid, yaw_grid = np.meshgrid(pitch, yaw, indexing="ij")
    return np.deg2rad(yaw_grid.ravel()), np.deg2rad(pitch_grid.ravel())


def yaw_bins_nest(fine: int, coarse: int = 4) -> bool:
    """Whether every one of `fine` yaw bins lies inside one of `coarse` (both centred on the
    front, as `yaw_bin`): fine = coarse × an odd number (12 or 20 in 4, not 8 or 16)."""
    return fine % coarse == 0 and (fine // coarse) % 2 == 1


@partial(jax.jit, static_argnames="bins")
def yaw_bin(yaw, bins: int) -> jax.Array:
    """yaw [...] (radians, any turn) -> bin index [...] int32 in [0, bins), bin 0 on the front.

    k = floor(|a|·n/360° + 1/2) on a = yaw wrapped to [−180°, 180°], negated mod n for
    a < 0. The wrap works on |yaw| so that −yaw gives exactly −a: mirror-exact.
    """
    d = jnp.degrees(_float(yaw))
    r = jnp.mod(jnp.abs(d), 360.0)  # |a| = r or 360 − r
    negative = (d < 0) != (r > 180.0)
    k = jnp.floor(jnp.where(r > 180.0, 360.0 - r, r) * bins / 360.0 + 0.5).astype(jnp.int32)
    return jnp.mod(jnp.where(negative, -k, k), bins)


def view_group(yaw) -> np.ndarray:
    """yaw [...] (radians) -> names [...] from `VIEW_GROUPS` (the 4 coarse bins); host-side."""
    return np.asarray(VIEW_GROUPS)[np.asarray(yaw_bin(yaw, 4))]


def parse_range(text: str, flag: str) -> tuple[float, float]:
    """'MIN:MAX' (degrees) -> (MIN, MAX)."""
    m = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?)\s*:\s*([-+]?\d+(?:\.\d*)?)\s*", text)
    if not m:
        raise ValueError(f"{flag}={text!r}: expected MIN:MAX in degrees, e.g. -30:30")
    return float(m[1]), float(m[2])
