"""StyleGAN2 layers (nn/layers.py) against plain-numpy definitions from EG3D's
`networks_stylegan2.py` and `torch_utils/ops/bias_act.py`: gains, clamps, equalized
learning rate, modulation/demodulation and minibatch standard deviation."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax.nn.layers import (
    Conv2d,
    FullyConnected,
    bias_act,
    minibatch_std,
    modulated_conv2d,
    normalize_2nd_moment,
)
from styleavatar_jax.nn.resample import setup_filter

from .conftest import rand
from .test_resample import conv2d_resample_ref

FIR = setup_filter([1, 3, 3, 1])

pytestmark = pytest.mark.usefixtures("fast_compile")


def jitted(fn, *arrays, **static):
    """fn(*arrays, **static) as one compiled program (op-by-op dispatch is slow on CPU)."""
    return jax.jit(lambda *a: fn(*a, **static))(*arrays)


# name -> (numpy function, EG3D's default gain)
ACTS = {
    "linear": (lambda x: x, 1.0),
    "relu": (lambda x: np.maximum(x, 0), math.sqrt(2)),
    "lrelu": (lambda x: np.where(x >= 0, x, 0.2 * x), math.sqrt(2)),
    "tanh": (np.tanh, 1.0),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), 1.0),
    "softplus": (lambda x: np.log1p(np.exp(x)), 1.0),
}


def bias_act_ref(x, b=None, act="linear", gain=None, clamp=None):
    fn, def_gain = ACTS[act]
    x = np.asarray(x, np.float64) + (0 if b is None else b)
    x = fn(x) * (def_gain if gain is None else gain)
    return x if clamp is None else np.clip(x, -clamp, clamp)


# ---------------------------------------------------------------------------------------
# bias_act, normalize_2nd_moment


@pytest.mark.parametrize("act", sorted(ACTS))
def test_bias_act_default_gains(act):
    x, b = rand(0, 2, 3, 4, 5), rand(1, 5)  # bias on the channel (last) axis
    out = jitted(bias_act, x, b, act=act)
    np.testing.assert_allclose(out, bias_act_ref(x, b, act), rtol=1e-5, atol=1e-6)


def test_bias_act_lrelu_numbers():
    out = bias_act(jnp.array([-1.0, 0.0, 2.0]), act="lrelu")
    np.testing.assert_allclose(out, [-0.2 * math.sqrt(2), 0.0, 2 * math.sqrt(2)], rtol=1e-6)


def test_bias_act_gain_then_clamp():
    x, b = 3 * rand(2, 4, 6), rand(3, 6)
    out = jitted(bias_act, x, b, act="lrelu", gain=2.0, clamp=1.5)
    ref = bias_act_ref(x, b, "lrelu", gain=2.0, clamp=1.5)
    assert np.abs(ref).max() == 1.5 and (np.abs(ref) < 1.5).any()  # both sides of the clamp
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        jitted(bias_act, x, act="tanh", gain=3.0), bias_act_ref(x, act="tanh", gain=3.0), rtol=1e-5
    )


def test_normalize_2nd_moment():
    x = rand(4, 3, 16)
    out = np.asarray(jitted(normalize_2nd_moment, x))
    ref = x / np.sqrt(np.mean(np.float64(x) ** 2, axis=-1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    np.testing.assert_allclose(np.mean(out**2, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jitted(normalize_2nd_moment, 7.0 * x), out, rtol=1e-5)
    assert np.all(np.asarray(jitted(normalize_2nd_moment, np.zeros((1, 4)))) == 0)  # eps: no NaN


# ---------------------------------------------------------------------------------------
# FullyConnected, Conv2d: raw parameters scaled at run time


def apply_with(module, params, *args, **kwargs):
    """module.apply with the given raw parameters (checked against init's tree)."""
    init = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))["params"]
    assert jax.tree.map(lambda a: a.shape, init) == jax.tree.map(np.shape, params)
    return jax.jit(lambda p, *a: module.apply({"params": p}, *a, **kwargs))(params, *args)


@pytest.mark.parametrize(
    "activation, lr_multiplier",
    [("linear", 1.0), ("linear", 0.01), ("lrelu", 0.01), ("lrelu", 1.0)],
)
def test_fully_connected_equalized_lr(activation, lr_multiplier):
    """Raw kernel and bias scaled at run time: x @ (kernel·lr/√in) + bias·lr, activation."""
    x = rand(5, 2, 3, 7)  # leading dims pass through
    kernel, bias = rand(6, 7, 4), rand(7, 4)
    layer = FullyConnected(4, activation=activation, lr_multiplier=lr_multiplier)
    out = apply_with(layer, {"kernel": kernel, "bias": bias}, x)
    y = np.float64(x) @ (kernel * (lr_multiplier / math.sqrt(7)))
    ref = bias_act_ref(y, bias * lr_multiplier, activation)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_fully_connected_without_bias():
    kernel = rand(8, 5, 3)
    out = apply_with(FullyConnected(3, use_bias=False), {"kernel": kernel}, rand(9, 2, 5))
    np.testing.assert_allclose(out, rand(9, 2, 5) @ kernel / math.sqrt(5), rtol=1e-5, atol=1e-6)


CONV2D_CASES = [
    # (kernel_size, up, down, activation, use_bias, conv_clamp, gain)
    pytest.param(3, 1, 1, "lrelu", True, None, 1.0, id="3x3"),
    pytest.param(3, 1, 2, "lrelu", True, 0.5, 1.0, id="3x3-down-clamped"),
    pytest.param(1, 1, 2, "linear", False, None, math.sqrt(0.5), id="1x1-down-skip"),
    pytest.param(3, 2, 1, "lrelu", True, 1.0, 2.0, id="3x3-up-clamp-gain"),
    pytest.param(1, 1, 1, "lrelu", True, 256.0, 1.0, id="1x1-fromrgb"),
]


@pytest.mark.parametrize("k, up, down, activation, use_bias, conv_clamp, gain", CONV2D_CASES)
def test_conv2d_layer(k, up, down, activation, use_bias, conv_clamp, gain):
    x, kernel, bias = rand(10, 2, 6, 8, 3), rand(11, k, k, 3, 4), rand(12, 4)
    layer = Conv2d(
        4, k, activation=activation, use_bias=use_bias, up=up, down=down, conv_clamp=conv_clamp
    )
    params = {"kernel": kernel, "bias": bias} if use_bias else {"kernel": kernel}
    out = apply_with(layer, params, x, gain=gain)
    # EG3D Conv2dLayer: weight · 1/sqrt(I·k²), padding k//2, flip_weight = (up == 1).
    y = conv2d_resample_ref(
        x,
        kernel / math.sqrt(3 * k * k),
        FIR,
        up=up,
        down=down,
        padding=(k // 2,) * 4,
        flip_weight=up == 1,
    )
    act_gain = ACTS[activation][1] * gain
    clamp = conv_clamp * gain if conv_clamp is not None else None
    ref = bias_act_ref(y, bias if use_bias else None, activation, gain=act_gain, clamp=clamp)
    assert out.shape == (2, 6 * up // down, 8 * up // down, 4)
    if conv_clamp is not None and conv_clamp < 10:
        assert np.abs(ref).max() == clamp  # the clamp is exercised
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------
# modulated_conv2d: the fused (per-sample weights) definition, computed sample by sample


def modulated_conv2d_ref(
    x, weight, styles, noise=None, up=1, padding=0, f=None, demod=True, flip=True
):
    """EG3D's fused form: w_b = weight · styles_b over input channels, demodulated by
    1/sqrt(Σ w_b² + 1e-8) per output channel, conv2d_resample per sample, then + noise."""
    out = []
    for b in range(x.shape[0]):
        w = np.float64(weight) * styles[b][None, None, :, None]  # scale input channels
        if demod:
            w = w / np.sqrt(np.sum(w**2, axis=(0, 1, 2)) + 1e-8)  # per output channel
        y = conv2d_resample_ref(x[b : b + 1], w, f, up=up, padding=(padding,) * 4, flip_weight=flip)
        out.append(y[0])
    out = np.stack(out)
    return out if noise is None else out + noise


MODCONV_CASES = [
    # (kernel, up, padding, demodulate, flip_weight, noise)
    pytest.param(3, 1, 1, True, True, False, id="3x3-demod"),
    pytest.param(3, 1, 1, True, True, True, id="3x3-demod-noise"),
    pytest.param(3, 2, 1, True, False, True, id="3x3-up-demod-noise"),  # SynthesisLayer up
    pytest.param(3, 2, 1, False, True, True, id="3x3-up-flip"),
    pytest.param(1, 1, 0, False, True, False, id="1x1-torgb"),
]


@pytest.mark.parametrize("k, up, padding, demodulate, flip_weight, with_noise", MODCONV_CASES)
def test_modulated_conv2d_is_per_sample_weights(
    k, up, padding, demodulate, flip_weight, with_noise
):
    x, weight = rand(13, 3, 5, 6, 4), rand(14, k, k, 4, 5)
    styles = rand(15, 3, 4) + 1.0  # affine outputs centre on bias_init = 1
    noise = rand(16, 3, 5 * up, 6 * up, 1) if with_noise else None  # broadcast over channels
    f = FIR if up > 1 else None
    conv = functools.partial(
        modulated_conv2d,
        up=up,
        padding=padding,
        resample_filter=f,
        demodulate=demodulate,
        flip_weight=flip_weight,
    )
    out = jitted(lambda x, w, s, n: conv(x, w, s, noise=n), x, weight, styles, noise)
    ref = modulated_conv2d_ref(x, weight, styles, noise, up, padding, f, demodulate, flip_weight)
    assert out.shape == ref.shape == (3, 5 * up, 6 * up, 5)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_demodulation_normalises_output_scale():
    """With demodulation the output does not depend on the style's overall scale."""
    x, weight, styles = rand(17, 2, 6, 6, 4), rand(18, 3, 3, 4, 5), rand(19, 2, 4)
    fn = lambda x, w, s: modulated_conv2d(x, w, s, padding=1)
    np.testing.assert_allclose(
        jitted(fn, x, weight, 10 * styles), jitted(fn, x, weight, styles), rtol=1e-4, atol=1e-5
    )


# ---------------------------------------------------------------------------------------
# minibatch_std


def minibatch_std_ref(x, group_size, num_channels):
    """EG3D MinibatchStdLayer: reshape(G, −1, ...) puts sample s in the group of the samples
    t with t % (N/G) == s % (N/G); std over the group, mean over pixels and channels."""
    n, h, w, c = x.shape
    g = min(group_size, n) if group_size is not None else n
    per, cf = n // g, c // num_channels
    y = np.zeros((n, h, w, num_channels))
    for s in range(n):
        group = np.float64(x[[t for t in range(n) if t % per == s % per]])
        assert len(group) == g
        std = np.sqrt(group.var(axis=0) + 1e-8)  # [H, W, C], population variance
        for f in range(num_channels):
            y[s, :, :, f] = std[..., f * cf : (f + 1) * cf].mean()
    return np.concatenate([x, y], axis=-1)


@pytest.mark.parametrize(
    "n, group_size, num_channels", [(8, 4, 1), (8, 4, 2), (2, 4, 1), (6, None, 1), (4, 2, 2)]
)
def test_minibatch_std_matches_eg3d(n, group_size, num_channels):
    x = rand(20, n, 3, 5, 4)
    out = jitted(minibatch_std, x, group_size=group_size, num_channels=num_channels)
    assert out.shape == (n, 3, 5, 4 + num_channels)
    np.testing.assert_allclose(out, minibatch_std_ref(x, group_size, num_channels), rtol=1e-5)


def test_minibatch_std_groups_are_strided():
    """N=4, G=2: groups {0, 2} and {1, 3}. Equal members give std sqrt(1e-8) = 1e-4."""
    a, b = rand(21, 1, 2, 2, 3), rand(22, 1, 2, 2, 3)
    x = np.concatenate([a, b, a, b])
    out = np.asarray(jitted(minibatch_std, x, group_size=2))
    np.testing.assert_allclose(out[..., -1], 1e-4, rtol=1e-3)


def test_minibatch_std_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="batch 6 is not divisible by group size 4"):
        minibatch_std(jnp.zeros((6, 2, 2, 1)), 4)
