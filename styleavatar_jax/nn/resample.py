"""FIR up/down-sampling and resampling convolutions, channels last.

JAX versions of EG3D's `torch_utils/ops/upfirdn2d.py` and `conv2d_resample.py` (which
follow StyleGAN2-ADA): the same filters, paddings, gains and fast paths, so a layer gives
EG3D's numbers. Arrays are NHWC; conv weights are HWIO; paddings keep EG3D's order
`(x0, x1, y0, y1)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

Padding = int | Sequence[int]


def setup_filter(f: Sequence[float] = (1, 3, 3, 1), *, gain: float = 1.0) -> np.ndarray:
    """A normalised 2-D FIR filter [fh, fw] as `upfirdn2d.setup_filter` makes it.

    A 1-D list becomes its outer product (EG3D keeps filters of < 8 taps non-separable; the
    outer product of a longer one is the same filter).
    """
    f = np.asarray(f, dtype=np.float32)
    if f.ndim == 1:
        f = np.outer(f, f)
    f = f / f.sum()
    return (f * gain ** (f.ndim / 2)).astype(np.float32)


def _pad4(padding: Padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) != 4:
        raise ValueError(f"padding={padding!r}: expected an int, (x, y) or (x0, x1, y0, y1)")
    return padding  # type: ignore[return-value]


def upfirdn2d(
    x: jax.Array,
    f: np.ndarray,
    *,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> jax.Array:
    """Upsample (zero insertion), pad, FIR-filter and downsample, as EG3D's `upfirdn2d`.

    x [B, H, W, C] -> [B, (H·up + py0 + py1 − fh)//down + 1, ..., C]
    """
    px0, px1, py0, py1 = _pad4(padding)
    fs = np.asarray(f, np.float32) * gain ** (np.ndim(f) / 2)
    fs = fs if flip_filter else fs[::-1, ::-1]
    ab = _separate(np.ascontiguousarray(fs)) if up > 1 else None
    if ab is not None:  # polyphase: never materialise the zero-inserted image
        x = _up_axis(x, ab[0], up, py0, py1, axis=1)
        x = _up_axis(x, ab[1], up, px0, px1, axis=2)
        return x[:, ::down, ::down] if down > 1 else x
    # Zero insertion puts (up − 1) zeros after every pixel, the last one included; lax.pad's
    # interior padding does the gaps and the extra high padding the tail. Negative pads crop.
    x = jax.lax.pad(
        x,
        jnp.zeros((), x.dtype),
        [(0, 0, 0), (py0, py1 + up - 1, up - 1), (px0, px1 + up - 1, up - 1), (0, 0, 0)],
    )
    f = np.asarray(f, np.float32) * gain ** (np.ndim(f) / 2)
    if not flip_filter:  # upfirdn2d convolves; we correlate
        f = f[::-1, ::-1]
    return _correlate(x, np.ascontiguousarray(f), down)


def _separate(f: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """f [fh, fw] = outer(a, b) exactly (EG3D's filters are), else None."""
    i, j = np.unravel_index(np.argmax(np.abs(f)), f.shape)
    if f[i, j] == 0:
        return None
    a, b = f[:, j], f[i, :] / f[i, j]
    return (a, b) if np.allclose(np.outer(a, b), f, rtol=0, atol=1e-7 * np.abs(f).max()) else None


def _up_axis(x: jax.Array, g: np.ndarray, up: int, p0: int, p1: int, axis: int) -> jax.Array:
    """1-D upfirdn along `axis` (up, pad p0/p1, correlate with g) by polyphase filtering.

    Output j = up·i + φ takes taps k ≡ p0 − φ (mod up) from x[i + (φ + k − p0)/up]: a short
    shifted-slice sum per phase on the small input, then the phases are interleaved.
    """
    n = x.shape[axis]
    n_out = n * up + p0 + p1 - len(g) + 1
    n_phase = -(-n_out // up)
    terms = [
        [(k, (phi + k - p0) // up) for k in range(len(g)) if (phi + k - p0) % up == 0 and g[k] != 0]
        for phi in range(up)
    ]
    offsets = [o for t in terms for _, o in t] or [0]
    lo, hi = max(0, -min(offsets)), max(0, max(offsets) + n_phase - n)
    xp = jnp.pad(x, [(lo, hi) if a == axis else (0, 0) for a in range(x.ndim)])
    phases = []
    for t in terms:
        acc = jnp.zeros_like(jax.lax.slice_in_dim(xp, 0, n_phase, axis=axis))
        for k, o in t:
            acc = acc + jax.lax.slice_in_dim(xp, o + lo, o + lo + n_phase, axis=axis) * jnp.asarray(
                g[k], x.dtype
            )
        phases.append(acc)
    y = jnp.stack(phases, axis=axis + 1)  # [..., n_phase, up, ...]
    shape = list(x.shape)
    shape[axis] = n_phase * up
    return jax.lax.slice_in_dim(y.reshape(shape), 0, n_out, axis=axis)


def _taps(x: jax.Array, weights: np.ndarray, axis: int, down: int) -> jax.Array:
    """Σ_k w[k] · x[k + down·i] along `axis`: a 1-D correlation as shifted slices.

    Elementwise work that XLA fuses; depthwise convolutions (feature_group_count = C) are
    an order of magnitude slower on CPU.
    """
    n_out = (x.shape[axis] - len(weights)) // down + 1
    out = None
    for k, wk in enumerate(weights):
        if wk == 0:
            continue
        piece = jax.lax.slice_in_dim(x, k, k + (n_out - 1) * down + 1, down, axis) * jnp.asarray(
            wk, x.dtype
        )
        out = piece if out is None else out + piece
    return out


def _correlate(x: jax.Array, f: np.ndarray, down: int) -> jax.Array:
    """Valid 2-D correlation of every channel of x [B, H, W, C] with f, keeping every down-th."""
    ab = _separate(f)
    if ab is not None:
        return _taps(_taps(x, ab[0], 1, down), ab[1], 2, down)
    n_h, n_w = (x.shape[1] - f.shape[0]) // down + 1, (x.shape[2] - f.shape[1]) // down + 1
    out = jnp.zeros((x.shape[0], n_h, n_w, x.shape[3]), x.dtype)
    for (i, j), wk in np.ndenumerate(f):
        if wk != 0:
            rows = jax.lax.slice_in_dim(x, i, i + (n_h - 1) * down + 1, down, 1)
            out = out + jax.lax.slice_in_dim(
                rows, j, j + (n_w - 1) * down + 1, down, 2
            ) * jnp.asarray(wk, x.dtype)
    return out


def upsample2d(x: jax.Array, f: np.ndarray, *, up: int = 2, padding: Padding = 0) -> jax.Array:
    """EG3D's `upsample2d`: x [B, H, W, C] -> [B, H·up, W·up, C] (with padding 0)."""
    px0, px1, py0, py1 = _pad4(padding)
    fh, fw = f.shape
    p = (
        px0 + (fw + up - 1) // 2,
        px1 + (fw - up) // 2,
        py0 + (fh + up - 1) // 2,
        py1 + (fh - up) // 2,
    )
    return upfirdn2d(x, f, up=up, padding=p, gain=up * up)


def downsample2d(x: jax.Array, f: np.ndarray, *, down: int = 2, padding: Padding = 0) -> jax.Array:
    """EG3D's `downsample2d`: x [B, H, W, C] -> [B, H/down, W/down, C] (with padding 0)."""
    px0, px1, py0, py1 = _pad4(padding)
    fh, fw = f.shape
    p = (
        px0 + (fw - down + 1) // 2,
        px1 + (fw - down) // 2,
        py0 + (fh - down + 1) // 2,
        py1 + (fh - down) // 2,
    )
    return upfirdn2d(x, f, down=down, padding=p)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _dilated(x, kernel, pad, up):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), pad, lhs_dilation=(up, up),
                                        dimension_numbers=_NHWC)  # fmt: skip


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def transposed_conv(x, kernel, pad, up: int):
    """Conv of the `up`-dilated x (zeros between pixels) with kernel [kh, kw, I, O], padding
    pad ((y0, y1), (x0, x1)): a transposed convolution. x [B, H, W, I] -> [B, H', W', O].

    Same forward as `lax.conv_general_dilated(..., lhs_dilation)`; the kernel gradient is
    computed here as kh·kw matmuls of x with strided slices of the output gradient
    (only the non-zero pixels of the dilated input): XLA:CPU's own kernel gradient of an
    lhs-dilated conv is ~40× slower than the forward (3.1 s vs 0.06 s at 64² → 128²,
    128 → 64 channels, batch 4), which made it most of a CPU training step.
    """
    return _dilated(x, kernel, pad, up)


def _transposed_conv_fwd(x, kernel, pad, up):
    return _dilated(x, kernel, pad, up), (x, kernel)


def _transposed_conv_bwd(pad, up, res, g):
    x, kernel = res
    _, vjp_x = jax.vjp(lambda x: _dilated(x, kernel, pad, up), x)
    (gx,) = vjp_x(g)
    kh, kw = kernel.shape[:2]
    (py0, _), (px0, _) = pad
    b, h, w, _ = x.shape
    # out[n] = Σ_k xd[n + k − p0] K[k], xd[u·m] = x[m]  =>  dK[k] = Σ_m x[m] · g[u·m + p0 − k].
    lo_y, lo_x = max(0, kh - 1 - py0), max(0, kw - 1 - px0)
    hi_y = max(0, up * (h - 1) + py0 + 1 - g.shape[1])
    hi_x = max(0, up * (w - 1) + px0 + 1 - g.shape[2])
    gp = jnp.pad(g, ((0, 0), (lo_y, hi_y), (lo_x, hi_x), (0, 0)))
    taps = []
    for i in range(kh):
        for j in range(kw):
            y0, x0 = py0 - i + lo_y, px0 - j + lo_x
            gs = gp[:, y0 : y0 + up * (h - 1) + 1 : up, x0 : x0 + up * (w - 1) + 1 : up]
            taps.append(jnp.einsum("bhwi,bhwo->io", x, gs, preferred_element_type=jnp.float32))
    gk = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
    return gx, gk


transposed_conv.defvjp(_transposed_conv_fwd, _transposed_conv_bwd)


def _strided(x, kernel, stride, pad):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pad,
                                        dimension_numbers=_NHWC)  # fmt: skip


# Below this many kernel channels (I·O), XLA:CPU's own kernel gradient is the faster one.
_MATMUL_KERNEL_GRAD_MIN_IO = 2048


def _use_matmul_kernel_grad(kernel) -> bool:
    kh, kw, i, o = kernel.shape
    return kh * kw > 1 and i * o >= _MATMUL_KERNEL_GRAD_MIN_IO


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _plain_conv(x, kernel, stride: int, pad):
    return _strided(x, kernel, stride, pad)


def _plain_conv_fwd(x, kernel, stride, pad):
    return _strided(x, kernel, stride, pad), (x, kernel)


def _kernel_grad_matmuls(x, g, kernel, stride, pad):
    """dK[k] = Σ_n xp[s·n + k] ⊗ g[n] (out[n] = Σ_k xp[s·n + k] K[k]): one matmul per tap,
    contracting batch and pixels of a strided slice of the padded input with g."""
    kh, kw = kernel.shape[:2]
    (py0, py1), (px0, px1) = pad
    _, ho, wo, _ = g.shape
    xp = jnp.pad(x, ((0, 0), (py0, py1), (px0, px1), (0, 0)))
    span_y, span_x = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    taps = []
    for i in range(kh):
        for j in range(kw):
            xs = xp[:, i : i + span_y : stride, j : j + span_x : stride]
            taps.append(jnp.einsum("bhwo,bhwi->oi", g, xs, preferred_element_type=jnp.float32))
    return jnp.stack(taps).transpose(0, 2, 1).reshape(kernel.shape).astype(kernel.dtype)


def _plain_conv_bwd(stride, pad, res, g):
    x, kernel = res
    (gx,) = jax.vjp(lambda x: _strided(x, kernel, stride, pad), x)[1](g)

    def xla(x, g):
        return jax.vjp(lambda k: _strided(x, k, stride, pad), kernel)[1](g)[0]

    def matmuls(x, g):
        return _kernel_grad_matmuls(x, g, kernel, stride, pad)

    return gx, jax.lax.platform_dependent(x, g, cpu=matmuls, default=xla)


_plain_conv.defvjp(_plain_conv_fwd, _plain_conv_bwd)


def plain_conv(x, kernel, stride: int, pad):
    """Conv (cross-correlation) of x [B, H, W, I] with kernel [kh, kw, I, O], stride, padding
    pad ((y0, y1), (x0, x1)), all ≥ 0 -> [B, H', W', O]: `lax.conv_general_dilated`.

    Same forward and input gradient as XLA's. On CPU, for kernels with many channels, the
    kernel gradient is computed as kh·kw matmuls (`_kernel_grad_matmuls`): XLA:CPU's own is
    a conv whose window is the whole image and whose contraction is the batch alone, slow
    and superlinear in the batch (EG3D's tiny SR, 3x3 at 64²-128², 32-128 channels: 1.46 s
    at batch 4, 4.45 s at batch 8 for three layers, a third of Gmain; one 128 -> 128 layer
    at 128², batch 8: 10 s vs 1.5 s). Equal to XLA's to float rounding.
    """
    pad = tuple((int(a), int(b)) for a, b in pad)
    if _use_matmul_kernel_grad(kernel):
        return _plain_conv(x, kernel, int(stride), pad)
    return _strided(x, kernel, stride, pad)


def _conv(x, w, *, stride=1, padding=(0, 0), flip_weight=True):
    """Plain conv: x [B, H, W, I], w [kh, kw, I, O]; flip_weight=False is true convolution."""
    py, px = padding
    if w.shape[:2] == (1, 1) and stride == 1 and padding == (0, 0):
        # A 1x1 conv is a matmul; XLA:CPU runs it ~5x faster as a dot than as a conv.
        return jnp.einsum("bhwi,io->bhwo", x, w[0, 0])
    if not flip_weight:
        w = w[::-1, ::-1]
    return plain_conv(x, w, stride, ((py, py), (px, px)))


def conv2d_resample(
    x: jax.Array,
    w: jax.Array,
    f: np.ndarray | None = None,
    *,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    flip_weight: bool = True,
) -> jax.Array:
    """Convolution with optional FIR up/down-sampling, EG3D's `conv2d_resample` path by path.

    x [B, H, W, I], w [kh, kw, I, O] -> [B, H·up/down, W·up/down, O] (padding = kh // 2).
    Padding is with respect to the upsampled image, as in EG3D.
    """
    kh, kw = w.shape[:2]
    fh, fw = f.shape if f is not None else (1, 1)
    px0, px1, py0, py1 = _pad4(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:  # downsample first, then 1x1 conv
        x = upfirdn2d(x, f, down=down, padding=(px0, px1, py0, py1))
        return _conv(x, w, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:  # 1x1 conv first, then upsample
        x = _conv(x, w, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=(px0, px1, py0, py1), gain=up * up)
    if down > 1 and up == 1:  # filter, then strided conv
        x = upfirdn2d(x, f, padding=(px0, px1, py0, py1))
        return _conv(x, w, stride=down, flip_weight=flip_weight)
    if up > 1:
        # EG3D: conv_transpose2d(stride=up) then filter. A transposed conv is a conv of the
        # zero-dilated input with the spatially flipped kernel and (k − 1 − p) padding.
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        # EG3D flips W for the transpose only when flip_weight; the transpose flips it again.
        kernel = w[::-1, ::-1] if not flip_weight else w
        pad = ((kh - 1 - pyt, kh - 1 - pyt), (kw - 1 - pxt, kw - 1 - pxt))
        x = transposed_conv(x, kernel, pad, up)
        x = upfirdn2d(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up * up)
        if down > 1:
            x = upfirdn2d(x, f, down=down)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=(py0, px0), flip_weight=flip_weight)
    x = upfirdn2d(x, np.ones((1, 1), np.float32), padding=(px0, px1, py0, py1))
    x = _conv(x, w, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down)
    return x


def resize_bilinear(x: jax.Array, size: int, *, antialias: bool = True) -> jax.Array:
    """torch `interpolate(mode='bilinear', align_corners=False, antialias=...)`, square output.

    x [B, H, W, C] -> [B, size, size, C]. Upsampling is plain half-pixel bilinear with edge
    clamping; downsampling with antialias widens the triangle kernel by the scale (PIL and
    torch's antialias rule), which `jax.image.resize` implements.
    """
    b, h, w, c = x.shape
    if (h, w) == (size, size):
        return x
    if not antialias and (h > size or w > size):
        return _resize_bilinear_aliased(x, size)
    return jax.image.resize(x, (b, size, size, c), method="linear", antialias=antialias)


def _resize_bilinear_aliased(x: jax.Array, size: int) -> jax.Array:
    """Bilinear resize without a low-pass filter (torch, align_corners=False, antialias=False)."""

    def axis_weights(n_in):
        src = (np.arange(size) + 0.5) * (n_in / size) - 0.5
        src = np.clip(src, 0, None)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        t = (src - i0).astype(np.float32)
        m = np.zeros((size, n_in), np.float32)
        np.add.at(m, (np.arange(size), i0), 1 - t)
        np.add.at(m, (np.arange(size), i1), t)
        return jnp.asarray(m, x.dtype)

    x = jnp.einsum("oh,bhwc->bowc", axis_weights(x.shape[1]), x)
    return jnp.einsum("pw,bowc->bopc", axis_weights(x.shape[2]), x)
