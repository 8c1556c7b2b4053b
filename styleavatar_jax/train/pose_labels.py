"""StyleAvatar3D's coarse-to-fine pose label for the discriminator (arXiv 2305.19012; DESIGN §5).

D sees c = c_fine ‖ c_coarse: c_fine = one-hot(yaw bin of `fine_yaw_bins`) ‖ one-hot(pitch
bin of `fine_pitch_bins`), c_coarse likewise with the coarse bins. Per sample the fine label
is chosen with probability p_high when the view is confident (|yaw| < confident_yaw: near
the front, where generated training images follow their pose guidance) and p_low
otherwise. `label_mix` says what D sees then:
- "exclusive" (the paper: one label type per image, the other zeroed): the fine half
  when chosen, else the coarse half;
- "coarse_always" (an option of ours): the coarse half always, the fine half when chosen.
Rendering always uses the true 25-d camera; only D's label changes. Mode "camera" is EG3D's
plain 25-d label, so EG3D configs train as EG3D does; mode "none" gives D no label (an
unconditional D, for the ablation).

The fine bins must nest in the coarse ones, so a fine label never straddles two coarse
groups: with both centred on the front that needs fine_yaw_bins = coarse_yaw_bins × an odd
number (12 or 20 for 4 coarse groups, not 8 or 16), and `confident_yaw` on a fine-bin
boundary (45° is one for 12 and 20 bins).

Angles are the geometric ones of `cameras` (radians in and out of every function here,
degrees only in `PoseLabelConfig`): yaw 0 = camera in front of the face (+z), yaw > 0 =
camera towards +x, the person's left; pitch > 0 = camera above. They are read from c about
the world origin.

Yaw bins: n bins of width 360°/n over the circle, bin 0 *centred* on the front, bin k
centred at yaw = k·360°/n (counting towards +yaw), i.e. k = round(yaw·n/360°) mod n with
ties rounded away from yaw 0. The coarse bins (n = 4) are therefore 0 front, 1 left (+90°),
2 back (±180°), 3 right (−90°) (`VIEW_GROUPS`), and a horizontal flip (yaw → −yaw) maps bin
k to (−k) mod n exactly, boundaries included (for odd n, yaw = ±180° is itself a boundary
and the two spellings fall on either side of it, as a flip requires).
Pitch bins: `bins` of equal width over `pitch_range`; pitches outside clamp into the end bins.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from functools import partial

import jax
import jax.numpy as jnp

from styleavatar_jax.cameras import (  # noqa: F401 (re-exported)
    VIEW_GROUPS,
    label_angles,
    view_group,
    yaw_bin,
    yaw_bins_nest,
)

MODES = ("camera", "coarse_to_fine", "none")
LABEL_MIXES = ("exclusive", "coarse_always")


@dataclasses.dataclass(frozen=True)
class PoseLabelConfig:
    """How D's label is made from the camera (hashable: a static argument under jit)."""

    mode: str = "camera"  # "camera": EG3D's 25-d c | "coarse_to_fine": c_fine ‖ c_coarse
    #                       | "none": no label
    label_mix: str = "exclusive"  # "exclusive" (paper) | "coarse_always" (module docstring)
    fine_yaw_bins: int = 12  # coarse_yaw_bins × an odd number, so the bins nest
    fine_pitch_bins: int = 4
    coarse_yaw_bins: int = 4  # 4: front / left / back / right
    coarse_pitch_bins: int = 1
    pitch_range: tuple[float, float] = (-30.0, 30.0)  # degrees spanned by the pitch bins
    confident_yaw: float = 45.0  # degrees: |yaw| < this keeps the fine half with p_high
    p_high: float = 0.9  # P(fine label) for confident views
    p_low: float = 0.2  # P(fine label) otherwise

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"PoseLabelConfig.mode={self.mode!r}: expected one of {MODES}")
        for name in ("fine_yaw_bins", "fine_pitch_bins", "coarse_yaw_bins", "coarse_pitch_bins"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"PoseLabelConfig.{name}={v!r}: expected an integer ≥ 1")
        r = self.pitch_range
        ok = isinstance(r, tuple | list) and len(r) == 2
        ok = ok and all(isinstance(x, numbers.Real) and math.isfinite(x) for x in r)
        if not (ok and -90.0 <= r[0] < r[1] <= 90.0):
            raise ValueError(
                f"PoseLabelConfig.pitch_range={r!r}: expected (low, high) degrees with "
                "−90 ≤ low < high ≤ 90"
            )
        object.__setattr__(self, "pitch_range", (float(r[0]), float(r[1])))  # hashable
        y = self.confident_yaw
        if not (isinstance(y, numbers.Real) and 0.0 <= y <= 180.0):
            raise ValueError(f"PoseLabelConfig.confident_yaw={y!r}: expected degrees in [0, 180]")
        for name in ("p_high", "p_low"):
            p = getattr(self, name)
            if not (isinstance(p, numbers.Real) and 0.0 <= p <= 1.0):
                raise ValueError(f"PoseLabelConfig.{name}={p!r}: expected a probability in [0, 1]")
        if self.label_mix not in LABEL_MIXES:
            raise ValueError(
                f"PoseLabelConfig.label_mix={self.label_mix!r}: expected one of {LABEL_MIXES}"
            )
        if self.mode == "coarse_to_fine":
            self._check_nesting()

    def _check_nesting(self):
        fy, cy = self.fine_yaw_bins, self.coarse_yaw_bins
        if not yaw_bins_nest(fy, cy):
            odd = ", ".join(str(cy * k) for k in (1, 3, 5))
            raise ValueError(
                f"PoseLabelConfig.fine_yaw_bins={fy}: the fine yaw bins must nest in the "
                f"{cy} coarse ones (both are centred on the front), so expected "
                f"coarse_yaw_bins × an odd number, e.g. {odd}"
            )
        if self.fine_pitch_bins % self.coarse_pitch_bins:
            raise ValueError(
                f"PoseLabelConfig.fine_pitch_bins={self.fine_pitch_bins}: expected a multiple "
                f"of coarse_pitch_bins={self.coarse_pitch_bins}, so the pitch bins nest"
            )
        width = 360.0 / fy  # fine bin k spans ((k − ½)·width, (k + ½)·width)
        offset = math.remainder(self.confident_yaw / width - 0.5, 1.0)
        if abs(offset) > 1e-6 and self.confident_yaw not in (0.0, 180.0):
            raise ValueError(
                f"PoseLabelConfig.confident_yaw={self.confident_yaw}: expected a fine-bin "
                f"boundary ((k + ½)·{width:g}°) so no fine bin is split, e.g. "
                f"{1.5 * width:g}"
            )


def label_dim(cfg: PoseLabelConfig) -> int:
    """Width of D's label: 25 for "camera", 0 for "none", else the sum of the four bin counts
    (both halves are always present; the one not shown is zeroed)."""
    if cfg.mode == "camera":
        return 25
    if cfg.mode == "none":
        return 0
    return cfg.fine_yaw_bins + cfg.fine_pitch_bins + cfg.coarse_yaw_bins + cfg.coarse_pitch_bins


@partial(jax.jit, static_argnames=("bins", "pitch_range"))
def pitch_bin(pitch, bins: int, pitch_range: tuple[float, float]) -> jax.Array:
    """pitch [...] (radians) -> bin index [...] int32 in [0, bins); outside the range clamps."""
    lo, hi = pitch_range
    t = (jnp.degrees(_float(pitch)) - lo) * (bins / (hi - lo))
    return jnp.clip(jnp.floor(t), 0, bins - 1).astype(jnp.int32)


@partial(jax.jit, static_argnames="cfg")
def fine_onehot(yaw, pitch, cfg: PoseLabelConfig) -> jax.Array:
    """yaw, pitch [B] (radians) -> one-hot(yaw bin) ‖ one-hot(pitch bin) [B, fy + fp]."""
    return _onehot(yaw, pitch, cfg.fine_yaw_bins, cfg.fine_pitch_bins, cfg.pitch_range)


@partial(jax.jit, static_argnames="cfg")
def coarse_onehot(yaw, pitch, cfg: PoseLabelConfig) -> jax.Array:
    """yaw, pitch [B] (radians) -> one-hot(yaw bin) ‖ one-hot(pitch bin) [B, cy + cp]."""
    return _onehot(yaw, pitch, cfg.coarse_yaw_bins, cfg.coarse_pitch_bins, cfg.pitch_range)


@partial(jax.jit, static_argnames="cfg")
def keep_probability(yaw, cfg: PoseLabelConfig) -> jax.Array:
    """yaw [...] (radians) -> P(fine label) [...]: p_high if |yaw| < confident_yaw.

    Strict, as the yaw bins round ties away from the front: a view at exactly the cut lies
    in the first bin outside it.
    """
    deg = jnp.abs(jnp.degrees(_float(yaw)))
    confident = (deg < cfg.confident_yaw) | (cfg.confident_yaw >= 180.0)
    return jnp.where(confident, cfg.p_high, cfg.p_low)


def label_coins(key: jax.Array, batch: int) -> jax.Array:
    """The uniforms [B] that decide, per sample, whether D sees the fine label
    (keep = coin < `keep_probability`); what `discriminator_label` draws from a key."""
    return jax.random.uniform(key, (batch,))


@partial(jax.jit, static_argnames="cfg")
def discriminator_label(c, key, cfg: PoseLabelConfig, *, keep_fine=None, coins=None) -> jax.Array:
    """Camera labels c [B, 25] -> D's label [B, label_dim(cfg)] (module docstring).

    "camera": c unchanged; "none": [B, 0]. "coarse_to_fine": c_fine·keep ‖ c_coarse·(1 −
    keep) ("exclusive") or c_fine·keep ‖ c_coarse ("coarse_always"), keep = coins <
    `keep_probability` (a Bernoulli draw per sample), coins [B] given or `label_coins(key)`.
    keep_fine: optional bool [B] forcing keep (then `key` and coins are unused; key may be
    None). Jit with cfg static.
    """
    if cfg.mode == "camera":
        return c
    if cfg.mode == "none":
        return jnp.zeros((*c.shape[:-1], 0), c.dtype)
    yaw, pitch = label_angles(c)
    if keep_fine is None:
        if coins is None and key is None:
            raise ValueError("discriminator_label: mode 'coarse_to_fine' needs a PRNG key "
                             "unless keep_fine or coins are given")  # fmt: skip
        if coins is None:
            coins = jax.random.uniform(key, yaw.shape)  # label_coins for c [B, 25]
        # jax.random.bernoulli(key, p) is uniform(key, p.shape) < p: the same keeps.
        keep_fine = coins < keep_probability(yaw, cfg)
    keep_fine = jnp.broadcast_to(jnp.asarray(keep_fine, bool), yaw.shape)
    dtype = c.dtype if jnp.issubdtype(c.dtype, jnp.floating) else jnp.float32
    fine = jnp.where(keep_fine[..., None], fine_onehot(yaw, pitch, cfg), 0.0)
    coarse = coarse_onehot(yaw, pitch, cfg)
    if cfg.label_mix == "exclusive":
        coarse = jnp.where(keep_fine[..., None], 0.0, coarse)
    return jnp.concatenate([fine, coarse], -1).astype(dtype)


def _float(x) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _onehot(yaw, pitch, yaw_bins: int, pitch_bins: int, pitch_range) -> jax.Array:
    """yaw, pitch [...] (radians) -> [..., yaw_bins + pitch_bins]."""
    y = jax.nn.one_hot(yaw_bin(yaw, yaw_bins), yaw_bins)
    p = jax.nn.one_hot(pitch_bin(pitch, pitch_bins, pitch_range), pitch_bins)
    return jnp.concatenate([y, p], -1)
