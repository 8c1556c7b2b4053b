"""Coarse-to-fine discriminator label (styleavatar_jax/train/pose_labels.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax import cameras
from styleavatar_jax.train import pose_labels as pl

C2F = pl.PoseLabelConfig(mode="coarse_to_fine", label_mix="coarse_always")
EXCL = pl.PoseLabelConfig(mode="coarse_to_fine")  # the default mix: the paper's
FY, FP, CY, CP = 12, 4, 4, 1
# One batch of 64 cameras for the forced-keep tests (one compile): 4 known views, then a sweep.
YAWS = np.concatenate([[0.0, 90.0, 180.0, -90.0], np.linspace(-179.0, 179.0, 60)])
PITCHES = np.resize([-25.0, -5.0, 5.0, 25.0], 64)
ALL = np.ones(64, bool)


def labels(yaw_deg, pitch_deg=0.0):
    """Orbit cameras about the origin at the given angles -> c [B, 25]."""
    yaw = jnp.radians(jnp.asarray(yaw_deg, jnp.float32))
    pitch = jnp.radians(jnp.asarray(pitch_deg, jnp.float32))
    m = cameras.pose_from_angles(yaw, pitch, cameras.RADIUS, cameras.PIVOT)
    return cameras.make_label(m, cameras.fov_to_intrinsics())


def test_label_dim():
    assert pl.label_dim(pl.PoseLabelConfig()) == 25
    assert pl.label_dim(C2F) == pl.label_dim(EXCL) == FY + FP + CY + CP == 21
    assert pl.label_dim(dataclasses.replace(C2F, fine_yaw_bins=20, coarse_pitch_bins=2)) == 30
    assert pl.label_dim(pl.PoseLabelConfig(mode="none")) == 0


def test_yaw_bins_at_known_angles():
    deg = np.array([0.0, 44.9, 45.1, 89.0, 91.0, 180.0, -180.0, -90.0, -44.9, 360.0, 270.0])
    coarse = [0, 0, 1, 1, 1, 2, 2, 3, 0, 0, 3]
    np.testing.assert_array_equal(pl.yaw_bin(np.radians(deg), 4), coarse)
    fine = [0, 2, 2, 4, 4, 8, 8, 12, 14, 0, 12]  # width 22.5°, bin 0 = [−11.25, 11.25)
    np.testing.assert_array_equal(pl.yaw_bin(np.radians(deg), 16), fine)
    assert list(pl.view_group(np.radians([0.0, 89.0, 180.0, -180.0, -90.0]))) == [
        "front", "left", "back", "back", "right"]  # fmt: skip
    assert pl.view_group(np.radians(91.0)) == "left"


def test_pitch_bins_clamp():
    deg = np.array([-40.0, -30.0, -15.1, 0.0, 14.9, 29.9, 30.0, 35.0])
    np.testing.assert_array_equal(
        pl.pitch_bin(np.radians(deg), 4, (-30.0, 30.0)), [0, 0, 0, 2, 2, 3, 3, 3]
    )
    np.testing.assert_array_equal(pl.pitch_bin(np.radians(deg), 1, (-30.0, 30.0)), 0)


def test_onehots_sum_to_one_per_half():
    yaw, pitch = (g.ravel() for g in np.meshgrid(np.linspace(-4, 4, 50), np.linspace(-1, 1, 10)))
    fine, coarse = pl.fine_onehot(yaw, pitch, C2F), pl.coarse_onehot(yaw, pitch, C2F)
    assert fine.shape == (500, FY + FP) and coarse.shape == (500, CY + CP)
    for half, n in ((fine, FY), (coarse, CY)):
        np.testing.assert_array_equal(half[:, :n].sum(-1), 1.0)
        np.testing.assert_array_equal(half[:, n:].sum(-1), 1.0)


@pytest.mark.parametrize("n", [1, 3, 4, 16])
def test_mirror_maps_bin_k_to_minus_k(n):
    deg = np.concatenate([np.linspace(-180, 180, 2001), 360.0 / n * (np.arange(n) + 0.5)])
    yaw = np.radians(deg).astype(np.float32)  # includes every boundary exactly-ish
    np.testing.assert_array_equal(pl.yaw_bin(-yaw, n), np.mod(-np.asarray(pl.yaw_bin(yaw, n)), n))


def test_mirrored_label_mirrors_bins():
    c = labels(YAWS, PITCHES)
    a = pl.discriminator_label(c, None, C2F, keep_fine=ALL)
    b = pl.discriminator_label(cameras.mirror_label(c), None, C2F, keep_fine=ALL)
    for lo, n in ((0, FY), (FY + FP, CY)):
        k = np.argmax(a[:, lo : lo + n], -1)
        np.testing.assert_array_equal(np.argmax(b[:, lo : lo + n], -1), np.mod(-k, n))
    np.testing.assert_array_equal(a[:, FY : FY + FP], b[:, FY : FY + FP])  # pitch kept


def test_label_reads_angles_from_camera():
    out = pl.discriminator_label(labels(YAWS, PITCHES), None, C2F, keep_fine=ALL)[:4]
    np.testing.assert_array_equal(np.argmax(out[:, :FY], -1), [0, 3, 6, 9])
    np.testing.assert_array_equal(np.argmax(out[:, FY : FY + FP], -1), [0, 1, 2, 3])
    np.testing.assert_array_equal(np.argmax(out[:, FY + FP : FY + FP + CY], -1), [0, 1, 2, 3])
    np.testing.assert_array_equal(out[:, -1], 1.0)


def test_keep_rates_and_halves():
    n = 40000  # ≈ 10000 confident views (σ of the rate ≈ 0.003), 30000 others (≈ 0.0023)
    key_c, key_k = jax.random.split(jax.random.key(1))
    yaw_deg = jax.random.uniform(key_c, (n,), minval=-180.0, maxval=180.0)
    c = labels(yaw_deg, 12.0)
    out = pl.discriminator_label(c, key_k, C2F)  # itself jitted, cfg static
    assert out.shape == (n, FY + FP + CY + CP) and out.dtype == c.dtype
    kept = np.asarray(out[:, : FY + FP].sum(-1))
    assert set(np.unique(kept)) <= {0.0, 2.0}  # whole fine half kept or zeroed
    kept = kept == 2.0
    confident = np.abs(np.asarray(yaw_deg)) <= 45.0
    assert abs(kept[confident].mean() - 0.9) < 0.01, kept[confident].mean()
    assert abs(kept[~confident].mean() - 0.2) < 0.01, kept[~confident].mean()
    np.testing.assert_array_equal(out[:, FY + FP : FY + FP + CY].sum(-1), 1.0)  # coarse always
    np.testing.assert_array_equal(out[:, -1], 1.0)
    np.testing.assert_array_equal(pl.discriminator_label(c, key_k, C2F), out)  # same key
    assert not np.array_equal(pl.discriminator_label(c, jax.random.key(2), C2F), out)


def test_forced_keep():
    c = labels(YAWS, PITCHES)
    keep = np.arange(64) % 3 == 0
    out = pl.discriminator_label(c, None, C2F, keep_fine=keep)
    np.testing.assert_array_equal(out[~keep, : FY + FP], 0.0)
    np.testing.assert_array_equal(out[keep, : FY + FP].sum(-1), 2.0)
    full = pl.discriminator_label(c, None, C2F, keep_fine=ALL)
    np.testing.assert_array_equal(out[:, FY + FP :], full[:, FY + FP :])


def test_exclusive_shows_one_half():
    n = 40000
    key_c, key_k = jax.random.split(jax.random.key(3))
    yaw_deg = jax.random.uniform(key_c, (n,), minval=-180.0, maxval=180.0)
    c = labels(yaw_deg, 12.0)
    out = np.asarray(pl.discriminator_label(c, key_k, EXCL))
    fine, coarse = out[:, : FY + FP].sum(-1), out[:, FY + FP :].sum(-1)
    np.testing.assert_array_equal(fine + coarse, 2.0)  # exactly one half, whole
    assert set(np.unique(fine)) == {0.0, 2.0}
    confident = np.abs(np.asarray(yaw_deg)) <= 45.0
    assert abs((fine[confident] == 2).mean() - 0.9) < 0.01
    assert abs((fine[~confident] == 2).mean() - 0.2) < 0.01
    # the same draw as coarse_always: its fine half where fine, its coarse half elsewhere
    both = np.asarray(pl.discriminator_label(c, key_k, C2F))
    np.testing.assert_array_equal(out[:, : FY + FP], both[:, : FY + FP])
    np.testing.assert_array_equal(out[fine == 0, FY + FP :], both[fine == 0, FY + FP :])


def test_fine_bins_nest_in_coarse_groups():
    yaw = np.radians(np.linspace(-180.0, 180.0, 7201)).astype(np.float32)
    for n in (4, 12, 20):
        fine, coarse = np.asarray(pl.yaw_bin(yaw, n)), np.asarray(pl.yaw_bin(yaw, 4))
        for k in range(n):  # every fine bin lies in one coarse group
            assert len(np.unique(coarse[fine == k])) == 1, (n, k)
    # and the 45° confident cut splits no fine bin (12 bins: bin 1 is [15°, 45°))
    keep = np.asarray(pl.keep_probability(yaw, EXCL))
    fine = np.asarray(pl.yaw_bin(yaw, 12))
    for k in range(12):
        assert len(np.unique(keep[fine == k])) == 1, k


def test_none_mode_gives_no_label():
    out = pl.discriminator_label(labels(YAWS, PITCHES), None, pl.PoseLabelConfig(mode="none"))
    assert out.shape == (64, 0)


def test_camera_mode_is_identity():
    c, cfg = labels(YAWS, PITCHES), pl.PoseLabelConfig()
    np.testing.assert_array_equal(pl.discriminator_label(c, jax.random.key(0), cfg), c)
    np.testing.assert_array_equal(pl.discriminator_label(c, None, cfg), c)


def test_missing_key():
    with pytest.raises(ValueError, match="PRNG key"):
        pl.discriminator_label(labels(YAWS, PITCHES), None, C2F)


@pytest.mark.parametrize(
    "field, value",
    [
        ("mode", "fine"),
        ("fine_yaw_bins", 0),
        ("coarse_pitch_bins", 2.5),
        ("fine_pitch_bins", True),
        ("pitch_range", (30.0, -30.0)),
        ("pitch_range", (-30.0,)),
        ("pitch_range", (-100.0, 30.0)),
        ("confident_yaw", -1.0),
        ("p_high", 1.5),
        ("p_low", -0.1),
    ],
)
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=f"PoseLabelConfig.{field}="):
        pl.PoseLabelConfig(**{field: value})


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("fine_yaw_bins", 16, "must nest in the 4 coarse ones.*e.g. 4, 12, 20"),
        ("fine_yaw_bins", 8, "coarse_yaw_bins × an odd number"),
        ("fine_pitch_bins", 3, "multiple of coarse_pitch_bins=1|nest"),
        ("confident_yaw", 40.0, "fine-bin boundary"),
        ("label_mix", "both", "expected one of"),
    ],
)
def test_bins_that_do_not_nest_are_refused(field, value, match):
    kwargs = {field: value}
    if field == "fine_pitch_bins":
        kwargs["coarse_pitch_bins"] = 2
    with pytest.raises(ValueError, match=f"PoseLabelConfig.{field}=.*({match})"):
        pl.PoseLabelConfig(mode="coarse_to_fine", **kwargs)
    pl.PoseLabelConfig(mode="camera", **({} if field == "label_mix" else kwargs))


def test_config_is_hashable_with_list_range():
    cfg = pl.PoseLabelConfig(pitch_range=[-20, 20])
    assert cfg.pitch_range == (-20.0, 20.0) and hash(cfg) == hash(cfg)
