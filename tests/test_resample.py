"""FIR resampling (nn/resample.py) against plain-numpy definitions, path by path.

The references are written from the definitions in EG3D's `torch_utils/ops/upfirdn2d.py`
(`_upfirdn2d_ref`) and `conv2d_resample.py` (the generic fallback every fast path must
equal), and from torch's `interpolate(mode='bilinear', align_corners=False)`. NHWC, HWIO.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax.nn.resample import (
    conv2d_resample,
    downsample2d,
    resize_bilinear,
    setup_filter,
    upfirdn2d,
    upsample2d,
)

from .conftest import rand

pytestmark = pytest.mark.usefixtures("fast_compile")


# ---------------------------------------------------------------------------------------
# numpy references


def upfirdn2d_ref(x, f, up=1, down=1, padding=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """Zero insertion, pad/crop (x0, x1, y0, y1), true convolution (correlation if
    flip_filter) with f·gain^(ndim/2), keep every down-th pixel. x [B, H, W, C]."""
    x = np.asarray(x, np.float64)
    b, h, w, c = x.shape
    px0, px1, py0, py1 = padding
    xu = np.zeros((b, h * up, w * up, c))
    xu[:, ::up, ::up] = x  # (up − 1) zeros after every pixel
    xp = np.pad(xu, [(0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0)), (0, 0)])
    xp = xp[:, max(-py0, 0) : xp.shape[1] - max(-py1, 0), max(-px0, 0) : xp.shape[2] - max(-px1, 0)]
    f = np.asarray(f, np.float64) * gain ** (np.ndim(f) / 2)
    fh, fw = f.shape
    oh, ow = xp.shape[1] - fh + 1, xp.shape[2] - fw + 1
    out = np.zeros((b, oh, ow, c))
    for i, j in itertools.product(range(oh), range(ow)):
        patch = xp[:, i : i + fh, j : j + fw]  # [B, fh, fw, C]
        k = f if flip_filter else f[::-1, ::-1]  # convolution = correlation with flipped f
        out[:, i, j] = np.einsum("bhwc,hw->bc", patch, k)
    return out[:, ::down, ::down]


def conv_ref(x, w, stride=1):
    """Valid correlation (torch conv2d): x [B, H, W, I], w [kh, kw, I, O]."""
    kh, kw = w.shape[:2]
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i, j in itertools.product(range(oh), range(ow)):
        patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw]
        out[:, i, j] = np.einsum("bhwi,hwio->bo", patch, w)
    return out


def adjusted_padding(padding, f_shape, up, down):
    """EG3D conv2d_resample: padding is w.r.t. the upsampled image, widened for the filter."""
    px0, px1, py0, py1 = padding
    fh, fw = f_shape
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    return px0, px1, py0, py1


def conv2d_resample_ref(x, w, f, up=1, down=1, padding=(0, 0, 0, 0), flip_weight=True):
    """EG3D's generic path: upfirdn2d(up, pad, gain up²) -> conv -> upfirdn2d(down)."""
    w = np.asarray(w, np.float64)
    f_shape = f.shape if f is not None else (1, 1)
    pad = adjusted_padding(padding, f_shape, up, down)
    x = upfirdn2d_ref(x, f if up > 1 else np.ones((1, 1)), up=up, padding=pad, gain=up**2)
    x = conv_ref(x, w if flip_weight else w[::-1, ::-1])  # flip_weight=False: convolution
    if down > 1:
        x = upfirdn2d_ref(x, f, down=down)
    return x


def bilinear_matrix_ref(n_in, n_out):
    """torch bilinear, align_corners=False, no antialias: [n_out, n_in] interpolation matrix."""
    m = np.zeros((n_out, n_in))
    for d in range(n_out):
        src = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        t = src - i0
        m[d, i0] += 1 - t
        m[d, i1] += t
    return m


def antialias_matrix_ref(n_in, n_out):
    """torch/PIL antialiased bilinear: a triangle widened by the scale when downsampling.

    Output d: center = scale·(d + 0.5), support = max(scale, 1); input j in
    [int(center − support + 0.5), int(center + support + 0.5)) (clipped to the image) gets
    max(0, 1 − |(j − center + 0.5) / support|), normalised to sum 1.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    m = np.zeros((n_out, n_in))
    for d in range(n_out):
        center = scale * (d + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for j in range(lo, hi):
            m[d, j] = max(0.0, 1 - abs((j - center + 0.5) / support))
        m[d] /= m[d].sum()
    return m


def resize_ref(x, size, matrix):
    x = np.einsum("oh,bhwc->bowc", matrix(x.shape[1], size), np.asarray(x, np.float64))
    return np.einsum("pw,bowc->bopc", matrix(x.shape[2], size), x)


def jitted(fn, *arrays, **static):
    """fn(*arrays, **static) compiled as one program: op-by-op dispatch of the many small
    slices of the FIR paths costs several times more on CPU than one compile."""
    return jax.jit(lambda *a: fn(*a, **static))(*arrays)


FIR = setup_filter([1, 3, 3, 1])  # EG3D's resample filter
# Not an outer product: exercises the non-separable code paths.
NONSEP = np.array([[1.0, 2.0, 0.5], [-1.0, 0.5, 3.0]], np.float32)
SEP_ODD = np.outer([1.0, -2.0, 0.5], [0.25, 1.0]).astype(np.float32)  # separable, 3x2
FILTERS = {"FIR": FIR, "NONSEP": NONSEP, "SEP_ODD": SEP_ODD}


# ---------------------------------------------------------------------------------------
# upfirdn2d


def test_setup_filter_is_normalised_outer_product():
    f = setup_filter([1, 3, 3, 1])
    np.testing.assert_allclose(f, np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64, rtol=1e-7)
    np.testing.assert_allclose(setup_filter([1, 2, 1], gain=4).sum(), 4, rtol=1e-6)


def test_upfirdn2d_ref_is_zero_insertion_then_convolution():
    """The reference itself, on a hand case: 1-D image [1, 2], up 2, filter [1, 1]."""
    x = np.array([1.0, 2.0]).reshape(1, 1, 2, 1)
    f = np.array([[1.0, 1.0]])
    # zero insertion [1, 0, 2, 0], pad (1, 0): [0, 1, 0, 2, 0] -> sums of neighbours.
    out = upfirdn2d_ref(x, f, up=2, padding=(1, 0, 0, 0))
    np.testing.assert_array_equal(out[0, 0, :, 0], [1, 1, 2, 2])
    # A delta at tap 0, valid mode on [0, 1, 2, 3]: convolution reads x[i + 2], correlation
    # x[i].
    x, delta = np.arange(4.0).reshape(1, 1, 4, 1), np.array([[1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(upfirdn2d_ref(x, delta)[0, 0, :, 0], [2, 3])
    np.testing.assert_array_equal(upfirdn2d_ref(x, delta, flip_filter=True)[0, 0, :, 0], [0, 1])


UPFIRDN_CASES = [
    # (up, down, padding (x0, x1, y0, y1), flip_filter, gain, filter name)
    (1, 1, (2, 1, 1, 2), False, 1.0, "FIR"),
    (2, 1, (1, 3, 0, 2), True, 4.0, "FIR"),
    (1, 2, (0, 1, 2, 0), True, 1.0, "FIR"),
    (2, 2, (2, 1, 2, 1), False, 4.0, "FIR"),
    (2, 1, (-1, 0, 1, -2), False, 3.0, "FIR"),  # negative padding crops
    (1, 1, (-1, -2, 0, -1), True, 1.0, "FIR"),
    (1, 2, (-1, 1, 1, -1), False, 2.0, "FIR"),
    (1, 1, (1, 0, 2, 1), False, 1.0, "NONSEP"),
    (2, 1, (1, 2, 0, 1), False, 4.0, "NONSEP"),
    (2, 2, (0, 1, 1, 2), True, 2.0, "NONSEP"),
    (1, 2, (1, 0, 0, 1), False, 1.0, "NONSEP"),
    (2, 1, (1, -1, 2, 0), False, 4.0, "SEP_ODD"),
    (2, 1, (0, 1, 2, 1), True, 4.0, "SEP_ODD"),
    (1, 2, (0, 1, 1, 1), True, 1.0, "SEP_ODD"),
    (3, 1, (2, 1, 3, 0), False, 9.0, "FIR"),
]


def upfirdn_id(case):
    up, down, pad, flip, gain, name = case
    pad = ",".join(map(str, pad))
    return f"up{up}-down{down}-pad{pad}-{'corr' if flip else 'conv'}-gain{gain:g}-{name}"


@pytest.mark.parametrize(
    "up, down, padding, flip_filter, gain, name", UPFIRDN_CASES, ids=map(upfirdn_id, UPFIRDN_CASES)
)
def test_upfirdn2d_matches_definition(up, down, padding, flip_filter, gain, name):
    f = FILTERS[name]
    x = rand(0, 2, 5, 7, 3)  # non-square, several channels
    out = jitted(
        upfirdn2d, x, f=f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain
    )
    ref = upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_upfirdn2d_padding_forms():
    x = rand(1, 1, 4, 6, 2)
    for short, full in [(2, (2, 2, 2, 2)), ((1, 2), (1, 1, 2, 2))]:  # int, (x, y)
        np.testing.assert_array_equal(
            jitted(upfirdn2d, x, f=FIR, padding=short), jitted(upfirdn2d, x, f=FIR, padding=full)
        )
    with pytest.raises(ValueError, match="padding"):
        jax.eval_shape(lambda x: upfirdn2d(x, FIR, padding=(1, 2, 3)), x)


def test_upsample2d_shape_and_constant():
    x = np.concatenate([rand(11, 1, 6, 10, 3), np.full((1, 6, 10, 3), 0.7, np.float32)])
    out = jitted(upsample2d, x, f=FIR)
    assert out.shape == (2, 12, 20, 3)
    # EG3D's upsample2d padding for a 4-tap filter at up 2, gain up².
    ref = upfirdn2d_ref(x, FIR, up=2, padding=(2, 1, 2, 1), gain=4)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # Pixels further than 1 from the border see only real samples: the constant survives.
    np.testing.assert_allclose(out[1, 2:-2, 2:-2], 0.7, rtol=1e-6)


def test_downsample2d_shape_and_constant():
    x = np.concatenate([rand(12, 1, 6, 10, 3), np.full((1, 6, 10, 3), -1.3, np.float32)])
    out = jitted(downsample2d, x, f=FIR)
    assert out.shape == (2, 3, 5, 3)
    ref = upfirdn2d_ref(x, FIR, down=2, padding=(1, 1, 1, 1))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1, 1:-1, 1:-1], -1.3, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# conv2d_resample: each of EG3D's fast paths equals the generic composition


CONV_CASES = [
    # (kernel (kh, kw), up, down, padding, flip_weight); a 1x1 kernel is its own flip
    pytest.param((1, 1), 1, 2, 0, True, id="1x1-down"),
    pytest.param((1, 1), 2, 1, 0, True, id="1x1-up"),
    pytest.param((1, 1), 1, 1, 0, True, id="1x1-plain"),
    *(
        pytest.param((3, 3), up, down, padding, flip, id=f"{name}-{'flip' if flip else 'conv'}")
        for name, up, down, padding in [
            ("3x3-down", 1, 2, 1),
            ("3x3-down-asym", 1, 2, (0, 1, 1, 0)),
            ("3x3-up-transposed", 2, 1, 1),
            ("3x3-up-pad0", 2, 1, 0),
            ("3x3-up-negpad", 2, 1, (-1, -2, -1, -1)),  # pxt, pyt > 0
            ("3x3-up-asym", 2, 1, (2, 0, 1, 3)),
            ("3x3-up-down", 2, 2, 1),
            ("3x3-plain", 1, 1, 1),
            ("3x3-generic-pad", 1, 1, (2, 0, 1, -1)),  # the fallback path
        ]
        for flip in (True, False)
    ),
]


@pytest.mark.parametrize("kernel, up, down, padding, flip_weight", CONV_CASES)
def test_conv2d_resample_matches_generic(kernel, up, down, padding, flip_weight):
    x = rand(2, 2, 6, 8, 3)  # non-square, 3 in channels
    w = rand(3, *kernel, 3, 4)
    pad = (padding,) * 4 if isinstance(padding, int) else padding
    f = FIR if (up > 1 or down > 1) else None
    out = jitted(
        conv2d_resample, x, w, f=f, up=up, down=down, padding=padding, flip_weight=flip_weight
    )
    ref = conv2d_resample_ref(x, w, f, up=up, down=down, padding=pad, flip_weight=flip_weight)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_conv2d_resample_output_shapes():
    x = jax.ShapeDtypeStruct((1, 8, 6, 3), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 3, 5), jnp.float32)
    shape = lambda f, **kw: jax.eval_shape(lambda x, w: conv2d_resample(x, w, f, **kw), x, w).shape
    assert shape(FIR, up=2, padding=1) == (1, 16, 12, 5)
    assert shape(FIR, down=2, padding=1) == (1, 4, 3, 5)
    assert shape(None, padding=1) == (1, 8, 6, 5)


def test_conv2d_resample_flip_weight_is_kernel_flip():
    """flip_weight=False (convolution) equals correlation with the 180°-rotated kernel."""
    x, w = rand(4, 1, 5, 5, 2), rand(5, 3, 3, 2, 2)
    for up in (1, 2):
        a = jitted(conv2d_resample, x, w, f=FIR, up=up, padding=1, flip_weight=False)
        b = jitted(conv2d_resample, x, w[::-1, ::-1], f=FIR, up=up, padding=1, flip_weight=True)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# resize_bilinear


def with_constant(x, value=0.25):
    """x [B, ...] plus one constant image, which any resize must keep constant."""
    return np.concatenate([x, np.full_like(x[:1], value)])


@pytest.mark.parametrize("antialias", [True, False])
def test_resize_bilinear_upsampling_is_torch_bilinear(antialias):
    """3x5 -> 7x7; antialias changes nothing when upsampling (torch: support 1)."""
    size = 7
    x = with_constant(rand(6, 2, 3, 5, 3))
    out = jitted(resize_bilinear, x, size=size, antialias=antialias)
    assert out.shape == (3, size, size, 3)
    np.testing.assert_allclose(out, resize_ref(x, size, bilinear_matrix_ref), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[-1], 0.25, rtol=1e-6)


@pytest.mark.parametrize("h, w, size", [(16, 16, 6), (10, 10, 3), (12, 4, 8)])
def test_resize_bilinear_aliased_downsampling_is_torch_bilinear(h, w, size):
    x = with_constant(rand(7, 2, h, w, 2))
    out = jitted(resize_bilinear, x, size=size, antialias=False)
    np.testing.assert_allclose(out, resize_ref(x, size, bilinear_matrix_ref), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[-1], 0.25, rtol=1e-6)


@pytest.mark.parametrize("h, w, size", [(16, 16, 6), (10, 10, 3), (12, 9, 5), (12, 4, 8)])
def test_resize_bilinear_antialiased_downsampling_is_torch_triangle(h, w, size):
    """Scales 8/3, 10/3, (12/5, 9/5) and (3/2, 1/2 up): the triangle widened by the scale,
    normalised per output pixel (so the constant image stays constant up to the border)."""
    x = with_constant(rand(8, 2, h, w, 2))
    out = jitted(resize_bilinear, x, size=size, antialias=True)
    np.testing.assert_allclose(out, resize_ref(x, size, antialias_matrix_ref), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[-1], 0.25, rtol=1e-6)


def test_resize_bilinear_same_size_is_identity():
    x = jnp.asarray(rand(9, 1, 5, 5, 1))
    assert resize_bilinear(x, 5) is x


@pytest.mark.parametrize(
    "h, ci, co, k, pad",
    [
        (9, 5, 7, 3, ((1, 2), (0, 2))),
        (8, 4, 3, 4, ((3, 3), (3, 3))),
        (7, 3, 2, 1, ((0, 0), (0, 0))),
    ],
)
def test_transposed_conv_gradients_equal_xla(h, ci, co, k, pad):
    # The custom kernel gradient (strided slices + matmuls) equals autodiff of XLA's
    # lhs-dilated conv, for asymmetric padding, even and odd kernels and 1x1.
    from styleavatar_jax.nn.resample import _dilated, transposed_conv

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, (2, h, h + 1, ci))
    w = jax.random.normal(k2, (k, k, ci, co))
    out = _dilated(x, w, pad, 2)
    np.testing.assert_array_equal(transposed_conv(x, w, pad, 2), out)
    g = jax.random.normal(k3, out.shape)
    ref = jax.vjp(lambda x, w: _dilated(x, w, pad, 2), x, w)[1](g)
    new = jax.vjp(lambda x, w: transposed_conv(x, w, pad, 2), x, w)[1](g)
    for a, b in zip(ref, new, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(jnp.abs(a).max()))


@pytest.mark.parametrize(
    "ci, co, stride, pad",
    [
        (64, 48, 1, ((1, 1), (1, 1))),
        (64, 48, 2, ((1, 1), (1, 1))),
        (32, 128, 1, ((0, 0), (2, 2))),
        (8, 8, 1, ((1, 1), (1, 1))),  # few channels: XLA's kernel gradient, unchanged
    ],
)
def test_plain_conv_gradients_equal_xla(ci, co, stride, pad):
    # The forward and input gradient are XLA's bit for bit; the kernel gradient (per-tap
    # matmuls on CPU) equals autodiff of XLA's conv to float rounding.
    from styleavatar_jax.nn.resample import _strided, plain_conv

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, (2, 9, 10, ci))
    w = jax.random.normal(k2, (3, 3, ci, co))
    out = _strided(x, w, stride, pad)
    np.testing.assert_array_equal(plain_conv(x, w, stride, pad), out)
    g = jax.random.normal(k3, out.shape)
    ref = jax.vjp(lambda x, w: _strided(x, w, stride, pad), x, w)[1](g)
    new = jax.jit(lambda x, w, g: jax.vjp(lambda x, w: plain_conv(x, w, stride, pad), x, w)[1](g))(
        x, w, g
    )
    np.testing.assert_array_equal(new[0], ref[0])
    np.testing.assert_allclose(new[1], ref[1], rtol=1e-5, atol=1e-5 * float(jnp.abs(ref[1]).max()))
