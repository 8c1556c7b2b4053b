"""Parity with the official EG3D code beyond the tiny G (tests/fixtures/eg3d_sr_io.npz).

EG3D's SuperresolutionHybrid4X, SuperresolutionHybridDeepfp32 and SuperresolutionHybrid8XDC,
loaded through the converter, under noise_mode 'const' and 'random' (EG3D's noise draws
injected: noise_mode 'given'); G mapping with truncation ψ = 0.7; D with disc_c_noise > 0
(the draw injected).
Tolerances as test_eg3d_parity.py: images and logits 1e-3 absolute, ws 1e-4·max|ref|.
"""

import dataclasses
import json
from functools import partial
from pathlib import Path

import jax
import numpy as np
import pytest

from styleavatar_jax.convert import eg3d
from styleavatar_jax.models.discriminator import DualDiscriminator
from styleavatar_jax.models.superres import SuperResolution, noise_shapes
from styleavatar_jax.models.synthesis import NOISE_INPUTS

SR_IO = Path(__file__).parent / "fixtures" / "eg3d_sr_io.npz"
KINDS = ("SuperresolutionHybrid4X", "SuperresolutionHybridDeepfp32", "SuperresolutionHybrid8XDC")


@pytest.fixture(scope="module")
def sr_io():
    return dict(np.load(SR_IO, allow_pickle=False))


@pytest.fixture(scope="module")
def meta(sr_io):
    return json.loads(str(sr_io["meta"]))


def _state(sr_io, meta, kind):
    """The EG3D state dict of `kind` (float16-exact values, as float32)."""
    prefix = f"sr/{meta['shared_state'].get(kind, kind)}/state/"
    return {k[len(prefix) :]: np.float32(v) for k, v in sr_io.items() if k.startswith(prefix)}


def _nhwc(x):
    return np.float32(x).transpose(0, 2, 3, 1)


def _views(image, stride, crop):
    """Our image [B, R, R, 3] -> the fixture's views (NCHW; make_sr_fixtures._views)."""
    img = np.asarray(image, np.float64).transpose(0, 3, 1, 2)
    flat = img.reshape(*img.shape[:2], -1)
    return {
        "image_sub": img[:, :, ::stride, ::stride],
        "image_crop": img[:, :, -crop:, -crop:],
        "image_stats": np.stack([flat.mean(-1), flat.std(-1, ddof=1), np.abs(flat).max(-1)], -1),
    }


def _noise(sr_io, kind, batch):
    """EG3D's recorded draws [B, 1, r, r] -> our `noise_inputs` collection of [B, r, r, 1]."""
    draws = sorted(k for k in sr_io if k.startswith(f"sr/{kind}/noise/"))
    shapes = noise_shapes(kind, batch)
    layers = [(b, c) for b in shapes for c in shapes[b]]
    assert [k.rsplit("/", 1)[1][3:] for k in draws] == [f"{b}.{c}" for b, c in layers]
    tree = {b: {} for b in shapes}
    for key, (b, c) in zip(draws, layers, strict=True):
        tree[b][c] = {"noise": _nhwc(sr_io[key])}
        assert tree[b][c]["noise"].shape == shapes[b][c]["noise"]
    return tree


@pytest.fixture(scope="module")
def sr_outputs(sr_io, meta):
    """kind -> {mode: our image [B, R, R, 3]}, one jitted forward per kind and mode."""
    cache = {}

    def run(kind):
        if kind not in cache:
            p = f"sr/{kind}"
            rgb, x, ws = (np.float32(sr_io[f"{p}/{n}"]) for n in ("rgb", "x", "ws"))
            rgb, x = _nhwc(rgb), _nhwc(x)
            kwargs = json.loads(str(sr_io[f"{p}/init_kwargs"]))
            SR = SuperResolution(kind=kind, antialias=kwargs.get("sr_antialias", True))
            tmpl = eg3d.variables_template(SR, rgb, x, ws, noise_mode="const")
            v, _ = eg3d.load_variables(_state(sr_io, meta, kind), tmpl, source=kind)
            fwd = jax.jit(SR.apply, static_argnames="noise_mode")
            noise = _noise(sr_io, kind, rgb.shape[0])
            cache[kind] = {
                "const": np.asarray(fwd(v, rgb, x, ws, noise_mode="const")),
                "random": np.asarray(
                    fwd({**v, NOISE_INPUTS: noise}, rgb, x, ws, noise_mode="given")
                ),
            }
        return cache[kind]

    return run


@pytest.mark.parametrize("mode", ["const", "random"])
@pytest.mark.parametrize("kind", KINDS)
def test_superresolution_matches_eg3d(sr_io, meta, sr_outputs, kind, mode):
    _, _, _, _, stride = meta["sr_cases"][kind]
    ours = _views(sr_outputs(kind)[mode], stride, meta["crop"])
    errs = {n: float(np.abs(v - sr_io[f"sr/{kind}/{mode}/{n}"]).max()) for n, v in ours.items()}
    assert max(errs.values()) <= 1e-3, f"{kind} {mode}: max abs error per view {errs}"


@pytest.mark.parametrize("kind", KINDS)
def test_random_noise_changes_the_image(sr_io, kind):
    """The injected noise matters at this fixture's noise strengths (else 'random' would
    test nothing beyond 'const')."""
    const, rand = (sr_io[f"sr/{kind}/{m}/image_sub"] for m in ("const", "random"))
    assert np.abs(const - rand).max() > 0.1


def test_given_noise_needs_every_layer_and_its_shape(sr_io, meta):
    kind = KINDS[0]
    SR = SuperResolution(kind=kind)
    rgb, x = (_nhwc(sr_io[f"sr/{kind}/{n}"]) for n in ("rgb", "x"))
    ws = np.float32(sr_io[f"sr/{kind}/ws"])
    tmpl = eg3d.variables_template(SR, rgb, x, ws, noise_mode="const")
    v, _ = eg3d.load_variables(_state(sr_io, meta, kind), tmpl)
    noise = _noise(sr_io, kind, rgb.shape[0])
    run = lambda noise: jax.eval_shape(partial(SR.apply, noise_mode="given"),
                                       {**v, NOISE_INPUTS: noise}, rgb, x, ws)  # fmt: skip
    short = {"block0": noise["block0"], "block1": {"conv0": noise["block1"]["conv0"]}}
    with pytest.raises(ValueError, match="block1/conv1"):
        run(short)
    wrong = {**noise, "block0": {**noise["block0"], "conv0": {"noise": np.zeros((1, 2, 2, 1))}}}
    with pytest.raises(ValueError, match="block0/conv0"):
        run(wrong)
    with pytest.raises(ValueError, match=NOISE_INPUTS):
        jax.eval_shape(partial(SR.apply, noise_mode="given"), v, rgb, x, ws)
    assert run(noise).shape == (rgb.shape[0], 256, 256, 3)


@pytest.mark.parametrize("cutoff", [None, 5])
def test_truncation_matches_eg3d(converted, io, sr_io, cutoff):
    """G.mapping(z, c, truncation_psi=0.7, truncation_cutoff) on the tiny G_ema (w_avg ≠ 0)."""
    _, nets, (G, _) = converted
    ref = sr_io[f"trunc/ws_psi0.7_cut{cutoff}"]
    z, c = io["z"][: len(ref)], io["c"][: len(ref)]
    ws = G.apply(nets["G_ema"], z, c, truncation_psi=0.7, truncation_cutoff=cutoff,
                 method=G.mapping)  # fmt: skip
    err = float(np.abs(np.asarray(ws) - ref).max())
    assert err <= 1e-4 * np.abs(ref).max(), err
    moved = np.abs(ref - io["ws"][: len(ref)]).max(axis=-1)  # [B, L]: ψ changed these rows
    cut = ref.shape[1] if cutoff is None else cutoff
    assert moved[:, :cut].min() > 1e-2 and np.all(moved[:, cut:] < 1e-4)


def test_disc_c_noise_matches_eg3d(converted, io, sr_io):
    """EG3D's D with disc_c_noise > 0: c + draw·c.std(0)·disc_c_noise before the mapping."""
    _, nets, (_, D) = converted
    cfg = dataclasses.replace(D.cfg, disc_c_noise=float(sr_io["c_noise/disc_c_noise"]))
    draw = np.float32(sr_io["c_noise/draw"])
    image, image_raw = _nhwc(io["image"]), _nhwc(io["image_raw"])
    logits = jax.jit(DualDiscriminator(cfg).apply)(nets["D"], image, image_raw, io["c"],
                                                   c_noise=draw)  # fmt: skip
    ref = sr_io["c_noise/logits"]
    err = float(np.abs(np.asarray(logits) - ref).max())
    assert err <= 1e-3, err
    assert np.abs(ref - io["logits"]).max() > 1e-2  # the noise changed the logits
    with pytest.raises(ValueError, match="disc_c_noise"):
        jax.eval_shape(partial(D.apply, c_noise=draw), nets["D"], image, image_raw, io["c"])
