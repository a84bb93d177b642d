"""The Numba kernels behind ``losskit._accel`` (imported only when a kernel first runs).

Each loss has scalar element functions that mirror its reference arithmetic (in
``losses/binary.py``, ``regression.py``, ``counts.py``) step by step in the input dtype, and
three drivers: value, value and gradient, gradient and Hessian. ``exp`` and ``log1p`` are
:func:`exp32` / :func:`log1p_unit32` for float32 and :func:`exp64` / :func:`log1p_unit` for
float64 (``log``, for ``kl_divergence``'s t log t: :func:`log32` / :func:`log64`), written with arithmetic and a bit cast only so that the loops vectorise (libm calls
would not), a few ulp like NumPy's and torch's own. The one fast-math flag is ``contract``: a
multiply and an add may become one fused multiply-add (rounded once where the reference rounds
twice; no change to NaN, infinities or signed zeros), which made the BCE value+gradient loop
a fifth faster.

Every driver runs the chunks ``[c0, c1)`` of ``CHUNK`` elements (``_accel`` hands the chunks
to one thread per core; the functions release the GIL). A driver given an empty ``values``
array writes each chunk's float64 sum to ``partial`` instead of the values (reductions "sum"
and "mean"); the chunks are added in order, so a sum does not depend on the thread count. Gradients and Hessians are multiplied
by ``scale`` (the reduction's multiplier in the input dtype), as ``_reduce.scale_elementwise``
does.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

CHUNK = 1 << 14

_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of log 2: k·_LN2_HI is exact for |k| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_LOG2E = 1.4426950408889634
_SQRT2_M1 = 0.41421356237309503

# error_model numpy: no ZeroDivisionError branch, so loops vectorise; contract: fused multiply-adds
_SERIAL = dict(fastmath={"contract"}, cache=True, nogil=True, boundscheck=False, error_model="numpy")
# inline="always": inlined in Numba's IR, not left to LLVM's inliner, which kept the float64
# BCE element function a call (no vectorisation: 19 ns per element instead of 3)
_inline = njit(fastmath={"contract"}, cache=True, error_model="numpy", inline="always")


@intrinsic
def _i64_as_f64(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def cast_like(typingctx, x, like):
    """``x`` converted to the type of ``like`` (rounded to nearest, as a store would)."""

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], signature.args[0], signature.return_type)

    return like(x, like), codegen


@intrinsic
def _f64_as_i64(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _f32_as_i32(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


# Rounding to an integer by adding 1.5·2^52 (float64) or 1.5·2^23 (float32): the sum's last
# bits are the integer, rounded to nearest; two adds and an integer subtraction of the bits,
# where floor and conversions cost twice as much vectorised (exp32: 0.31 ns per element
# instead of 0.74, the same results to the ulp)
_ROUND64 = 6755399441055744.0
_ROUND64_BITS = np.int64(0x4338000000000000)
_ROUND32 = 12582912.0
_ROUND32_BITS = 0x4B400000


@_inline
def exp64(x):
    """exp in float64 with arithmetic and bit casts only: 2^k·p(r) with k = round(x log2 e)
    (by adding 1.5·2^52), r = x − k log 2 (Cody–Waite) and p the degree-13 Taylor polynomial (|r| ≤ 0.35: remainder below 1e-17).
    ≤ 1.1 ulp; overflows to inf and underflows gradually like libm; NaN propagates."""
    if x < -760.0:  # NaN fails both comparisons and reaches r
        x = -760.0
    elif x > 714.0:
        x = 714.0
    t = x * _LOG2E + _ROUND64  # t − _ROUND64 is x·log2(e) rounded to an integer, k its low bits
    kf = t - _ROUND64
    r = (x - kf * _LN2_HI) - kf * _LN2_LO
    q = 1.0 / 6227020800.0
    q = q * r + 1.0 / 479001600.0
    q = q * r + 1.0 / 39916800.0
    q = q * r + 1.0 / 3628800.0
    q = q * r + 1.0 / 362880.0
    q = q * r + 1.0 / 40320.0
    q = q * r + 1.0 / 5040.0
    q = q * r + 1.0 / 720.0
    q = q * r + 1.0 / 120.0
    q = q * r + 1.0 / 24.0
    q = q * r + 1.0 / 6.0
    q = q * r + 0.5
    q = q * r + 1.0
    q = q * r + 1.0
    k = _f64_as_i64(t) - _ROUND64_BITS
    half = k >> 1  # 2^k as two normal factors, for k in [-1097, 1031]
    return q * _i64_as_f64((half + 1023) << 52) * _i64_as_f64((k - half + 1023) << 52)


@_inline
def log1p_unit(t):
    """log1p(t) for t in [0, 1] (or NaN) in float64: 2·atanh(s) with s = w/(2 + w), where
    1 + t = 2(1 + w) above √2 − 1 so that |s| ≤ 0.172 and eleven odd terms reach 1e-18."""
    m, series = _log1p_split(t)
    return m * _LN2_HI + (series + m * _LN2_LO)


@_inline
def _log1p_split(t):
    """``log1p_unit``'s parts: (m, series) with log1p(t) = m·log 2 + series, m 0 or 1."""
    m = 1.0 if t > _SQRT2_M1 else 0.0  # arithmetic on m, not branches, so that the loop vectorises
    w = (t - m) * (1.0 - 0.5 * m)  # (t − 1)/2 or t, exactly
    s = w / (2.0 + w)
    s2 = s * s
    q = 1.0 / 23.0
    q = q * s2 + 1.0 / 21.0
    q = q * s2 + 1.0 / 19.0
    q = q * s2 + 1.0 / 17.0
    q = q * s2 + 1.0 / 15.0
    q = q * s2 + 1.0 / 13.0
    q = q * s2 + 1.0 / 11.0
    q = q * s2 + 1.0 / 9.0
    q = q * s2 + 1.0 / 7.0
    q = q * s2 + 1.0 / 5.0
    q = q * s2 + 1.0 / 3.0
    return m, 2.0 * s + 2.0 * s * s2 * q


_EXPONENT64 = np.int64(0x7FF0000000000000)
_MANTISSA64 = np.int64(0x000FFFFFFFFFFFFF)
_ONE64_BITS = np.int64(0x3FF0000000000000)
_TWO52 = 4503599627370496.0
_TWO52_BITS = np.int64(0x4330000000000000)


@_inline
def log64(x):
    """log(x) for x > 0 (+inf and NaN returned as they are) in float64, with arithmetic and bit
    casts only so that loops vectorise: x = 2^e·(1 + t) with t in [0, 1) exact, and
    log x = (e + m)·log 2 + series from ``_log1p_split(t)``, the exponent added to the split
    of log 2 (so that log x near 1 keeps its relative precision). Subnormal x is scaled by
    2^52 first. A few ulp, like libm's (``tests/test_accel_kl.py`` checks it)."""
    tiny = x < 2.2250738585072014e-308
    y = x * _TWO52 if tiny else x
    b = _f64_as_i64(y)
    # the biased exponent as a float (its bits below 2^52's), then unbiased
    e = (_i64_as_f64(((b & _EXPONENT64) >> 52) | _TWO52_BITS) - _TWO52) - (1075.0 if tiny else 1023.0)
    t = _i64_as_f64((b & _MANTISSA64) | _ONE64_BITS) - 1.0
    m, series = _log1p_split(t)
    k = e + m
    out = k * _LN2_HI + (series + k * _LN2_LO)
    return out if x < np.inf else x  # +inf stays +inf, NaN NaN


@intrinsic
def _i32_as_f32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


_F = np.float32
_LN2_HI_F = _F(0.693359375)  # Cephes's split of log 2 for float32
_LN2_LO_F = _F(-2.12194440e-4)


@_inline
def exp32(x):
    """exp in float32 arithmetic (twice the vector lanes of float64): 2^k·p(r), r = x − k log 2,
    p the degree-7 Taylor polynomial (remainder 5e-9 for |r| ≤ 0.35). A few ulp; overflows to
    inf, underflows gradually; NaN propagates."""
    if x < _F(-104.0):
        x = _F(-104.0)
    elif x > _F(89.0):
        x = _F(89.0)
    t = x * _F(_LOG2E) + _F(_ROUND32)
    kf = t - _F(_ROUND32)
    k = _f32_as_i32(t) - np.int32(_ROUND32_BITS)
    r = (x - kf * _LN2_HI_F) - kf * _LN2_LO_F
    q = _F(1.0 / 5040.0)
    q = q * r + _F(1.0 / 720.0)
    q = q * r + _F(1.0 / 120.0)
    q = q * r + _F(1.0 / 24.0)
    q = q * r + _F(1.0 / 6.0)
    q = q * r + _F(0.5)
    q = q * r + _F(1.0)
    q = q * r + _F(1.0)
    half = k >> 1  # 2^k as two normal factors, for k in [-150, 129]
    return q * _i32_as_f32((half + 127) << 23) * _i32_as_f32((k - half + 127) << 23)


@_inline
def log1p_unit32(t):
    """log1p_unit in float32 arithmetic: five odd terms reach 2e-9 for |s| ≤ 0.172."""
    m, series = _log1p_split32(t)
    return m * _LN2_HI_F + (series + m * _LN2_LO_F)


@_inline
def _log1p_split32(t):
    """``_log1p_split`` in float32 arithmetic."""
    m = _F(1.0) if t > _F(_SQRT2_M1) else _F(0.0)
    w = (t - m) * (_F(1.0) - _F(0.5) * m)
    s = w / (_F(2.0) + w)
    s2 = s * s
    q = _F(1.0 / 11.0)
    q = q * s2 + _F(1.0 / 9.0)
    q = q * s2 + _F(1.0 / 7.0)
    q = q * s2 + _F(1.0 / 5.0)
    q = q * s2 + _F(1.0 / 3.0)
    return m, _F(2.0) * s + _F(2.0) * s * s2 * q


_EXPONENT32 = np.int32(0x7F800000)
_MANTISSA32 = np.int32(0x007FFFFF)
_ONE32_BITS = np.int32(0x3F800000)
_TWO23 = _F(8388608.0)
_TWO23_BITS = np.int32(0x4B000000)


@_inline
def log32(x):
    """``log64`` in float32 arithmetic (subnormal x scaled by 2^23)."""
    tiny = x < _F(1.1754943508222875e-38)
    y = x * _TWO23 if tiny else x
    b = _f32_as_i32(y)
    e = (_i32_as_f32(((b & _EXPONENT32) >> 23) | _TWO23_BITS) - _TWO23) - (_F(150.0) if tiny else _F(127.0))
    t = _i32_as_f32((b & _MANTISSA32) | _ONE32_BITS) - _F(1.0)
    m, series = _log1p_split32(t)
    k = e + m
    out = k * _LN2_HI_F + (series + k * _LN2_LO_F)
    return out if x < _F(np.inf) else x


def exp_for(x, like):
    """exp(x) in the precision of ``like``'s type: exp32 for float32, exp64 otherwise."""


def log1p_unit_for(t, like):
    """log1p_unit(t) in the precision of ``like``'s type."""


def log_for(x, like):
    """log(x) in the precision of ``like``'s type."""


@overload(log_for, jit_options=dict(error_model="numpy"))
def _log_for(x, like):
    if like == types.float32:
        return lambda x, like: log32(np.float32(x))
    return lambda x, like: log64(np.float64(x))


@overload(exp_for, jit_options=dict(error_model="numpy"))
def _exp_for(x, like):
    if like == types.float32:
        return lambda x, like: exp32(np.float32(x))
    return lambda x, like: exp64(np.float64(x))


@overload(log1p_unit_for, jit_options=dict(error_model="numpy"))
def _log1p_unit_for(t, like):
    if like == types.float32:
        return lambda t, like: log1p_unit32(np.float32(t))
    return lambda t, like: log1p_unit(np.float64(t))


@_inline
def _clip(x, bound):
    """clip(x, −bound, bound), keeping NaN as np.clip and torch.clamp do."""
    if x > bound:
        return bound
    if x < -bound:
        return -bound
    return x


@_inline
def _nan_where(x, value):
    """``value``, or NaN where ``x`` is NaN (``_array.nan_where``)."""
    return x if x != x else value


@_inline
def _chunk_sum(buf, m):
    """Σ buf[:m] with eight running sums, in a fixed order."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    j = 0
    while j + 8 <= m:
        s0 += buf[j]
        s1 += buf[j + 1]
        s2 += buf[j + 2]
        s3 += buf[j + 3]
        s4 += buf[j + 4]
        s5 += buf[j + 5]
        s6 += buf[j + 6]
        s7 += buf[j + 7]
        j += 8
    while j < m:
        s0 += buf[j]
        j += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


# --- binary_cross_entropy (pos_weight None, label_smoothing 0); k = (finite bound, 0) ----------
# ℓ = softplus(−|z|) + (max(z, 0) − y·z) on z clipped to ± half the dtype's range;
# σ(z) = 1/(1 + t) or t/(1 + t) with t = e^{−|z|} (the reference's exp(−softplus(−z)))


@_inline
def _bce_value(z, y, k):
    zc = _clip(z, k[0])
    tail = log1p_unit_for(exp_for(-abs(zc), z), z)
    return tail + ((k[1] if zc < 0 else zc) - y * zc)


@_inline
def _bce_value_grad(z, y, k):
    zc = _clip(z, k[0])
    t = exp_for(-abs(zc), z)
    one = cast_like(1.0, z)
    value = log1p_unit_for(t, z) + ((k[1] if zc < 0 else zc) - y * zc)
    return value, (one if zc >= k[1] else t) / (one + t) - y


@_inline
def _bce_grad_hess(z, y, k):
    t = exp_for(-abs(z), z)
    one = cast_like(1.0, z)
    d = one + t
    return (one if z >= k[1] else t) / d - y, _nan_where(y, t / (d * d))


# --- mse; k = (2,) -----------------------------------------------------------------------------


@_inline
def _mse_value(z, y, k):
    r = z - y
    return r * r


@_inline
def _mse_value_grad(z, y, k):
    r = z - y
    return r * r, k[0] * r


@_inline
def _mse_grad_hess(z, y, k):
    r = z - y
    return k[0] * r, _nan_where(r, k[0])


# --- huber; k = (δ, ½, ½δ, 1, 0) ----------------------------------------------------------------


@_inline
def _huber_value(z, y, k):
    r = z - y
    a = abs(r)
    return k[1] * r * r if a <= k[0] else k[0] * (a - k[2])


@_inline
def _huber_value_grad(z, y, k):
    r = z - y
    a = abs(r)
    return (k[1] * r * r if a <= k[0] else k[0] * (a - k[2])), _clip(r, k[0])


@_inline
def _huber_grad_hess(z, y, k):
    r = z - y
    return _clip(r, k[0]), _nan_where(r, k[3] if abs(r) <= k[0] else k[4])


# --- poisson_nll (full=False); k = (finite bound,) ------------------------------------------------


@_inline
def _poisson_value(z, y, k):
    return exp_for(z, z) - y * _clip(z, k[0])


@_inline
def _poisson_value_grad(z, y, k):
    e = exp_for(z, z)
    return e - y * _clip(z, k[0]), e - y


@_inline
def _poisson_grad_hess(z, y, k):
    e = exp_for(z, z)
    return e - y, _nan_where(y, e)


# --- drivers: the same three loops per loss (Numba caches module-level functions only) -------
# Each runs chunks [c0, c1) of CHUNK elements; _accel splits the chunks over threads. ``w``
# (the per-sample multiplier: weights, over their sum for "mean") and ``valid`` (the mask) are
# empty arrays when absent: one compiled signature per dtype serves every call, and the tests
# on them are loop-invariant (LLVM unswitches the loop). Their arithmetic is the reference's:
# ℓ·w and g·w in the dtype, 0 where not valid (NaN included), as _reduce.reduce_terms and
# scale_elementwise do.

@njit(**_SERIAL)
def bce_value(z, y, w, valid, values, partial, c0, c1, k):
    n = z.shape[0]
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    buf = np.empty(0 if values.shape[0] else CHUNK, values.dtype)
    for j in range(c0, c1):
        lo, hi = j * CHUNK, min(n, (j + 1) * CHUNK)
        zs, ys, ws, vs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi]  # slices: no wraparound checks
        out = values[lo:hi] if values.shape[0] else buf
        for i in range(hi - lo):
            v = _bce_value(zs[i], ys[i], k)
            if weighted:
                v = v * ws[i]
            if masked and not vs[i]:
                v = cast_like(0.0, v)
            out[i] = v
        if not values.shape[0]:
            partial[j] = _chunk_sum(buf, hi - lo)


@njit(**_SERIAL)
def bce_value_grad(z, y, w, valid, values, grad, partial, scale, c0, c1, k):
    n = z.shape[0]
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    buf = np.empty(0 if values.shape[0] else CHUNK, values.dtype)
    for j in range(c0, c1):
        lo, hi = j * CHUNK, min(n, (j + 1) * CHUNK)
        zs, ys, ws, vs, gs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi], grad[lo:hi]
        out = values[lo:hi] if values.shape[0] else buf
        for i in range(hi - lo):
            v, g = _bce_value_grad(zs[i], ys[i], k)
            if weighted:
                v, g = v * ws[i], g * ws[i]
            else:
                g = g * scale
            if masked and not vs[i]:
                v, g = cast_like(0.0, v), cast_like(0.0, g)
            out[i] = v
            gs[i] = g
        if not values.shape[0]:
            partial[j] = _chunk_sum(buf, hi - lo)


@njit(**_SERIAL)
def bce_grad_hess(z, y, w, valid, grad, hess, scale, c0, c1, k):
    lo, hi = c0 * CHUNK, min(z.shape[0], c1 * CHUNK)
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    zs, ys, ws, vs, gs, hs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi], grad[lo:hi], hess[lo:hi]
    for i in range(hi - lo):
        g, h = _bce_grad_hess(zs[i], ys[i], k)
        c = ws[i] if weighted else scale
        g, h = g * c, h * c
        if masked and not vs[i]:
            g, h = cast_like(0.0, g), cast_like(0.0, h)
        gs[i] = g
        hs[i] = h


@njit(**_SERIAL)
def mse_value(z, y, w, valid, values, partial, c0, c1, k):
    n = z.shape[0]
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    buf = np.empty(0 if values.shape[0] else CHUNK, values.dtype)
    for j in range(c0, c1):
        lo, hi = j * CHUNK, min(n, (j + 1) * CHUNK)
        zs, ys, ws, vs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi]  # slices: no wraparound checks
        out = values[lo:hi] if values.shape[0] else buf
        for i in range(hi - lo):
            v = _mse_value(zs[i], ys[i], k)
            if weighted:
                v = v * ws[i]
            if masked and not vs[i]:
                v = cast_like(0.0, v)
            out[i] = v
        if not values.shape[0]:
            partial[j] = _chunk_sum(buf, hi - lo)


@njit(**_SERIAL)
def mse_value_grad(z, y, w, valid, values, grad, partial, scale, c0, c1, k):
    n = z.shape[0]
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    buf = np.empty(0 if values.shape[0] else CHUNK, values.dtype)
    for j in range(c0, c1):
        lo, hi = j * CHUNK, min(n, (j + 1) * CHUNK)
        zs, ys, ws, vs, gs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi], grad[lo:hi]
        out = values[lo:hi] if values.shape[0] else buf
        for i in range(hi - lo):
            v, g = _mse_value_grad(zs[i], ys[i], k)
            if weighted:
                v, g = v * ws[i], g * ws[i]
            else:
                g = g * scale
            if masked and not vs[i]:
                v, g = cast_like(0.0, v), cast_like(0.0, g)
            out[i] = v
            gs[i] = g
        if not values.shape[0]:
            partial[j] = _chunk_sum(buf, hi - lo)


@njit(**_SERIAL)
def mse_grad_hess(z, y, w, valid, grad, hess, scale, c0, c1, k):
    lo, hi = c0 * CHUNK, min(z.shape[0], c1 * CHUNK)
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    zs, ys, ws, vs, gs, hs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi], grad[lo:hi], hess[lo:hi]
    for i in range(hi - lo):
        g, h = _mse_grad_hess(zs[i], ys[i], k)
        c = ws[i] if weighted else scale
        g, h = g * c, h * c
        if masked and not vs[i]:
            g, h = cast_like(0.0, g), cast_like(0.0, h)
        gs[i] = g
        hs[i] = h


@njit(**_SERIAL)
def huber_value(z, y, w, valid, values, partial, c0, c1, k):
    n = z.shape[0]
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    buf = np.empty(0 if values.shape[0] else CHUNK, values.dtype)
    for j in range(c0, c1):
        lo, hi = j * CHUNK, min(n, (j + 1) * CHUNK)
        zs, ys, ws, vs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi]  # slices: no wraparound checks
        out = values[lo:hi] if values.shape[0] else buf
        for i in range(hi - lo):
            v = _huber_value(zs[i], ys[i], k)
            if weighted:
                v = v * ws[i]
            if masked and not vs[i]:
                v = cast_like(0.0, v)
            out[i] = v
        if not values.shape[0]:
            partial[j] = _chunk_sum(buf, hi - lo)


@njit(**_SERIAL)
def huber_value_grad(z, y, w, valid, values, grad, partial, scale, c0, c1, k):
    n = z.shape[0]
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    buf = np.empty(0 if values.shape[0] else CHUNK, values.dtype)
    for j in range(c0, c1):
        lo, hi = j * CHUNK, min(n, (j + 1) * CHUNK)
        zs, ys, ws, vs, gs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi], grad[lo:hi]
        out = values[lo:hi] if values.shape[0] else buf
        for i in range(hi - lo):
            v, g = _huber_value_grad(zs[i], ys[i], k)
            if weighted:
                v, g = v * ws[i], g * ws[i]
            else:
                g = g * scale
            if masked and not vs[i]:
                v, g = cast_like(0.0, v), cast_like(0.0, g)
            out[i] = v
            gs[i] = g
        if not values.shape[0]:
            partial[j] = _chunk_sum(buf, hi - lo)


@njit(**_SERIAL)
def huber_grad_hess(z, y, w, valid, grad, hess, scale, c0, c1, k):
    lo, hi = c0 * CHUNK, min(z.shape[0], c1 * CHUNK)
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    zs, ys, ws, vs, gs, hs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi], grad[lo:hi], hess[lo:hi]
    for i in range(hi - lo):
        g, h = _huber_grad_hess(zs[i], ys[i], k)
        c = ws[i] if weighted else scale
        g, h = g * c, h * c
        if masked and not vs[i]:
            g, h = cast_like(0.0, g), cast_like(0.0, h)
        gs[i] = g
        hs[i] = h


@njit(**_SERIAL)
def poisson_value(z, y, w, valid, values, partial, c0, c1, k):
    n = z.shape[0]
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    buf = np.empty(0 if values.shape[0] else CHUNK, values.dtype)
    for j in range(c0, c1):
        lo, hi = j * CHUNK, min(n, (j + 1) * CHUNK)
        zs, ys, ws, vs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi]  # slices: no wraparound checks
        out = values[lo:hi] if values.shape[0] else buf
        for i in range(hi - lo):
            v = _poisson_value(zs[i], ys[i], k)
            if weighted:
                v = v * ws[i]
            if masked and not vs[i]:
                v = cast_like(0.0, v)
            out[i] = v
        if not values.shape[0]:
            partial[j] = _chunk_sum(buf, hi - lo)


@njit(**_SERIAL)
def poisson_value_grad(z, y, w, valid, values, grad, partial, scale, c0, c1, k):
    n = z.shape[0]
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    buf = np.empty(0 if values.shape[0] else CHUNK, values.dtype)
    for j in range(c0, c1):
        lo, hi = j * CHUNK, min(n, (j + 1) * CHUNK)
        zs, ys, ws, vs, gs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi], grad[lo:hi]
        out = values[lo:hi] if values.shape[0] else buf
        for i in range(hi - lo):
            v, g = _poisson_value_grad(zs[i], ys[i], k)
            if weighted:
                v, g = v * ws[i], g * ws[i]
            else:
                g = g * scale
            if masked and not vs[i]:
                v, g = cast_like(0.0, v), cast_like(0.0, g)
            out[i] = v
            gs[i] = g
        if not values.shape[0]:
            partial[j] = _chunk_sum(buf, hi - lo)


@njit(**_SERIAL)
def poisson_grad_hess(z, y, w, valid, grad, hess, scale, c0, c1, k):
    lo, hi = c0 * CHUNK, min(z.shape[0], c1 * CHUNK)
    weighted, masked = w.shape[0] != 0, valid.shape[0] != 0
    zs, ys, ws, vs, gs, hs = z[lo:hi], y[lo:hi], w[lo:hi], valid[lo:hi], grad[lo:hi], hess[lo:hi]
    for i in range(hi - lo):
        g, h = _poisson_grad_hess(zs[i], ys[i], k)
        c = ws[i] if weighted else scale
        g, h = g * c, h * c
        if masked and not vs[i]:
            g, h = cast_like(0.0, g), cast_like(0.0, h)
        gs[i] = g
        hs[i] = h


DRIVERS = {
    "binary_cross_entropy": (bce_value, bce_value_grad, bce_grad_hess),
    "mse": (mse_value, mse_value_grad, mse_grad_hess),
    "huber": (huber_value, huber_value_grad, huber_grad_hess),
    "poisson_nll": (poisson_value, poisson_value_grad, poisson_grad_hess),
}


# --- the range of non-negative targets: the validation pass of large inputs --------------------
# ``_accel.nonnegative_range`` runs it instead of the backend's min/max (torch.aminmax: its
# OpenMP workers then spin against these threads; NumPy: two passes). It reads the targets'
# bits as signed integers: for floats of sign bit 0 the integer order is the float order, +inf
# included and NaN above it, and every float of sign bit 1 (-0.0, negative numbers, negative
# NaN) is a negative integer. Integer min/max reductions vectorise (float ones, NaN-aware, do
# not). Per chunk: the smallest and largest bits of the elements where ``valid`` (empty: all);
# a chunk without valid elements gives (largest integer, 0).


@njit(**_SERIAL)
def bits_range(bits, valid, lows, highs, c0, c1):
    for j in range(c0, c1):
        _bits_range_chunk(bits, valid, lows, highs, j)


@njit(fastmath={"contract"}, cache=True, error_model="numpy", boundscheck=False)
def _bits_range_chunk(bits, valid, lows, highs, j):
    """Chunk ``j``'s range into ``lows[j % len]``, ``highs[j % len]``."""
    lo, hi = j * CHUNK, min(bits.shape[0], (j + 1) * CHUNK)
    bs, vs = bits[lo:hi], valid[lo:hi] if valid.shape[0] != 0 else valid
    zero = bs[0] & 0  # in the bits' own integer type
    biggest = zero + np.iinfo(bits.dtype).max
    low, high = biggest, zero
    if valid.shape[0] != 0:
        for i in range(hi - lo):
            b = bs[i]
            b_low = b if vs[i] else biggest
            b_high = b if vs[i] else zero
            low = b_low if b_low < low else low
            high = b_high if b_high > high else high
    else:
        for i in range(hi - lo):
            b = bs[i]
            low = b if b < low else low
            high = b if b > high else high
    slot = j % lows.shape[0]
    lows[slot], highs[slot] = low, high


@njit(**_SERIAL)
def bits_range_serial(bits, valid):
    """``bits_range`` of the whole array in one call, returned (small arrays: no output arrays)."""
    lows, highs = np.empty(1, bits.dtype), np.empty(1, bits.dtype)
    low, high = bits[0] & 0, bits[0] & 0
    for j in range(0, (bits.shape[0] + CHUNK - 1) // CHUNK):
        _bits_range_chunk(bits, valid, lows, highs, j)
        if j == 0 or lows[0] < low:
            low = lows[0]
        if j == 0 or highs[0] > high:
            high = highs[0]
    return low, high


# --- cross_entropy with integer class ids (no label smoothing, no z-loss) -----------------------
# Per row of logits z (the class axis last, C classes) and label y, the arithmetic of
# ``_softmax.ids_nll_numpy``: m = max z, e_k = e^{z_k − m}, rest = Σ_{k≠argmax} e_k (the other
# maxima count 1 each), ℓ = (m − z_y) + log1p(rest), p = e / (1 + rest), gradient
# p − onehot(y), Hessian diagonal p(1 − p). Each row's factor is class_weight[y] (``cw``; empty:
# none) times its multiplier (``w``; empty: the number ``scale``); rows where ``valid`` is False
# (empty: all valid) get 0. A row with a NaN, a +inf or only −inf logits, or a label outside
# [0, C), is left to the reference path: the driver returns how many such rows it met.
# ``mode``: 0 value, 1 value and gradient, 2 gradient, 3 gradient and Hessian. Rows run in
# chunks of ``rows_per_chunk``; ``partial[j]`` gets chunk j's float64 sum of values when
# ``values`` is empty (reductions "sum" and "mean"), in a fixed order (no dependence on threads).


def bits_as_float(b, like):
    """The float of ``like``'s type whose bits are the integer ``b``."""


@overload(bits_as_float, jit_options=dict(error_model="numpy"))
def _bits_as_float(b, like):
    if like == types.float32:
        return lambda b, like: _i32_as_f32(np.int32(b))
    return lambda b, like: _i64_as_f64(np.int64(b))


@_inline
def _row_max(bits, num_classes, sign_shift, low_bits):
    """max of a row of floats read as integers (``bits``): b ^ ((b >> sign_shift) & low_bits)
    orders floats as signed integers (−0 just below +0, a positive NaN above +inf, a negative NaN
    below −inf); an integer maximum vectorises where a float one (NaN-aware) does not."""
    b = np.int64(bits[0])
    best = b ^ ((b >> sign_shift) & low_bits)
    for k in range(1, num_classes):
        b = np.int64(bits[k])
        key = b ^ ((b >> sign_shift) & low_bits)
        best = key if key > best else best
    return best ^ ((best >> sign_shift) & low_bits)


@njit(fastmath={"contract", "reassoc"}, cache=True, error_model="numpy", boundscheck=False)
def _rest(e, num_classes, one):
    """Σ_{k≠argmax} e_k for e = e^{z − max z} ≤ 1: the entries below 1, plus 1 for each other
    entry equal to 1 (the maxima, and entries within rounding of it), in float64. NaN
    propagates. Summed in any order (reassoc: the loop vectorises); the terms are non-negative,
    so the order changes the sum by a few ulp only."""
    below = 0.0
    ties = 0.0
    for k in range(num_classes):
        x = e[k]
        top = x >= one
        below += 0.0 if top else np.float64(x)
        ties += 1.0 if top else 0.0
    return below + (ties - 1.0)


ROW_EXP_MIN = 64  # classes from which a row's exponentials are computed in the row's own pass


@_inline
def _chunk_exponentials(z, bits, y, out, maxima, valid, lo, hi, first, num_classes, scale):
    """Steps 1 and 2 of a chunk of rows [lo, hi): each row's maximum into ``maxima`` and
    e^{z − max} into ``out`` from offset ``first`` (rows where ``valid`` is False: max 0). Returns
    how many rows the reference path must take: a NaN or ±inf maximum, or (``y`` not empty) a
    label outside [0, C)."""
    masked, labelled = valid.shape[0] != 0, y.shape[0] != 0
    long_rows = num_classes >= ROW_EXP_MIN
    sign_shift = bits.itemsize * 8 - 1
    low_bits = (np.int64(1) << sign_shift) - 1
    zero = cast_like(0.0, scale)
    bad = 0
    # 1. per row: the maximum, and z − max into ``out`` (or its exponentials, for long rows)
    for r in range(hi - lo):
        i = lo + r
        base, o = i * num_classes, first + r * num_classes
        zr, e = z[base : base + num_classes], out[o : o + num_classes]  # slices: no wraparound checks
        m = zero
        if not (masked and not valid[i]):
            m = bits_as_float(_row_max(bits[base : base + num_classes], num_classes, sign_shift, low_bits), scale)
            if not (abs(m) < np.inf) or (labelled and (y[i] < 0 or y[i] >= num_classes)):
                bad += 1
                m = zero
        maxima[r] = m
        if long_rows:
            for k in range(num_classes):
                e[k] = exp_for(zr[k] - m, zero)
        else:
            for k in range(num_classes):
                e[k] = zr[k] - m
    # 2. short rows: the exponentials of the whole chunk in one loop (a row of a few classes
    # would end in a scalar remainder each)
    if bad == 0 and not long_rows:
        ec = out[first : first + (hi - lo) * num_classes]
        for k in range(ec.shape[0]):
            ec[k] = exp_for(ec[k], zero)
    return bad


@_inline
def _zero_row(e, hess, o, num_classes, mode, zero):
    """A row that is not valid: 0 in its gradient (and Hessian), whatever its logits hold."""
    for k in range(num_classes):
        e[k] = zero
    if mode == 3:
        h = hess[o : o + num_classes]
        for k in range(num_classes):
            h[k] = zero


@njit(**_SERIAL)
def ce_ids(z, bits, y, w, valid, cw, values, grad, hess, partial, scale, num_classes, rows_per_chunk, c0, c1, mode):
    n = y.shape[0]
    weighted, masked, class_weighted = w.shape[0] != 0, valid.shape[0] != 0, cw.shape[0] != 0
    per_row = values.shape[0] != 0
    want_grad = mode != 0
    # the exponentials, then p: in the gradient, or in a buffer of one chunk
    out = grad if want_grad else np.empty(rows_per_chunk * num_classes, z.dtype)
    maxima = np.empty(rows_per_chunk, z.dtype)
    zero = cast_like(0.0, scale)
    one = cast_like(1.0, scale)
    for j in range(c0, c1):
        lo, hi = j * rows_per_chunk, min(n, (j + 1) * rows_per_chunk)
        first = lo * num_classes if want_grad else 0  # the chunk's offset in ``out``
        bad = _chunk_exponentials(z, bits, y, out, maxima, valid, lo, hi, first, num_classes, scale)
        if bad:
            return bad
        # 3. per row: the value, the gradient (and Hessian)
        total = 0.0
        for r in range(hi - lo):
            i = lo + r
            o = first + r * num_classes
            e = out[o : o + num_classes]
            if masked and not valid[i]:
                if per_row:
                    values[i] = zero
                if want_grad:
                    _zero_row(e, hess, o, num_classes, mode, zero)
                continue
            label = y[i]
            m = maxima[r]
            rest = _rest(e, num_classes, one)
            if rest != rest:
                return 1  # a NaN below the maximum
            factor = cw[label] if class_weighted else one
            factor_c = factor * (w[i] if weighted else scale)
            if mode <= 1:
                v = (m - z[i * num_classes + label]) + cast_like(math.log1p(rest), m)
                if class_weighted:
                    v = v * factor
                if per_row:
                    values[i] = v * w[i] if weighted else v * scale
                elif weighted:
                    total += v * w[i]
                else:
                    total += v
            if want_grad:
                inv = cast_like(1.0 / (1.0 + rest), m)
                p_label = e[label] * inv
                if mode == 3:
                    h = hess[o : o + num_classes]
                    for k in range(num_classes):
                        p = e[k] * inv
                        h[k] = (p * (one - p)) * factor_c
                        e[k] = p * factor_c
                else:
                    for k in range(num_classes):
                        e[k] = (e[k] * inv) * factor_c
                e[label] = (p_label - one) * factor_c
        if not per_row and partial.shape[0] != 0:
            partial[j] = total
    return 0


@njit(**_SERIAL)
def ce_probs(z, bits, t, w, valid, cw, values, grad, hess, partial, scale, num_classes, rows_per_chunk, c0, c1, mode, entropy=False):
    """``ce_ids`` for a target distribution per row (``t``, the shape of ``z``), as
    ``_softmax.weighted_nll`` and its derivatives: with q = t (times ``cw`` per class),
    ℓ = Σ_{q_k≠0} q_k·((m − z_k) + log1p(rest)), gradient (Σq)·p − q, Hessian diagonal
    (Σq)·p(1 − p). Classes with q_k = 0 add nothing, even where z_k = −inf. ``entropy``
    (``kl_probs``) adds Σ_k t_k log t_k to each row's value first, as the reference adds
    ``_kl_parts``'s negative entropy: KL(t ‖ softmax z), whose derivatives are these."""
    n = z.shape[0] // num_classes
    weighted, masked, class_weighted = w.shape[0] != 0, valid.shape[0] != 0, cw.shape[0] != 0
    per_row = values.shape[0] != 0
    want_grad = mode != 0
    out = grad if want_grad else np.empty(rows_per_chunk * num_classes, z.dtype)
    maxima = np.empty(rows_per_chunk, z.dtype)
    no_labels = np.empty(0, np.int64)
    # Σ t log t (``entropy``): the chunk's terms t·log(t if t > 0 else 1), as ``_array.xlogx``
    # on NumPy (0·log 0 = 0), in one loop that vectorises, then summed per row in float64
    # beside the row's cross-entropy. A target outside [0, inf) (only with validate=False:
    # negative, NaN or +inf, where the backends' references disagree) sends the call to the
    # reference path, so that this kernel does not define x·log x there.
    with_entropy = entropy and mode <= 1
    terms = np.empty(rows_per_chunk * num_classes if with_entropy else 0, z.dtype)
    zero = cast_like(0.0, scale)
    one = cast_like(1.0, scale)
    inf = cast_like(np.inf, scale)
    for j in range(c0, c1):
        lo, hi = j * rows_per_chunk, min(n, (j + 1) * rows_per_chunk)
        first = lo * num_classes if want_grad else 0
        bad = _chunk_exponentials(z, bits, no_labels, out, maxima, valid, lo, hi, first, num_classes, scale)
        if bad:
            return bad
        if with_entropy:
            tc = t[lo * num_classes : hi * num_classes]
            outside = 0
            for k in range(tc.shape[0]):
                x = tc[k]
                terms[k] = x * log_for(x if x > zero else one, zero)
                outside += 0 if zero <= x < inf else 1
            if outside:
                return outside
        total = 0.0
        for r in range(hi - lo):
            i = lo + r
            base, o = i * num_classes, first + r * num_classes
            e, zr, tr = out[o : o + num_classes], z[base : base + num_classes], t[base : base + num_classes]
            if masked and not valid[i]:
                if per_row:
                    values[i] = zero
                if want_grad:
                    _zero_row(e, hess, o, num_classes, mode, zero)
                continue
            m = maxima[r]
            rest = _rest(e, num_classes, one)
            if rest != rest:
                return 1
            c = w[i] if weighted else scale
            if mode <= 1:
                lse_rest = cast_like(math.log1p(rest), m)
                v = zero
                h = 0.0
                hr = terms[r * num_classes : (r + 1) * num_classes]
                for k in range(num_classes):
                    q = tr[k] * cw[k] if class_weighted else tr[k]
                    v += q * ((m - zr[k]) + lse_rest) if q != zero else zero
                    if with_entropy:
                        h += np.float64(hr[k])
                if with_entropy:
                    v = cast_like(h, zero) + v
                if per_row:
                    values[i] = v * c
                elif weighted:
                    total += v * c
                else:
                    total += v
            if want_grad:
                q_sum = zero
                for k in range(num_classes):
                    q_sum += tr[k] * cw[k] if class_weighted else tr[k]
                inv = cast_like(1.0 / (1.0 + rest), m)
                if mode == 3:
                    h = hess[o : o + num_classes]
                    for k in range(num_classes):
                        p = e[k] * inv
                        h[k] = (q_sum * p * (one - p)) * c
                        e[k] = (q_sum * p - (tr[k] * cw[k] if class_weighted else tr[k])) * c
                else:
                    for k in range(num_classes):
                        p = e[k] * inv
                        e[k] = (q_sum * p - (tr[k] * cw[k] if class_weighted else tr[k])) * c
        if not per_row and partial.shape[0] != 0:
            partial[j] = total
    return 0


@njit(**_SERIAL)
def kl_probs(z, bits, t, w, valid, cw, values, grad, hess, partial, scale, num_classes, rows_per_chunk, c0, c1, mode):
    """Forward KL(t ‖ softmax z) with probability targets: ``ce_probs`` plus each row's
    Σ_k t_k log t_k (the gradient and Hessian are soft-target cross-entropy's)."""
    return ce_probs(z, bits, t, w, valid, cw, values, grad, hess, partial, scale, num_classes, rows_per_chunk, c0, c1, mode, True)


ROW_DRIVERS = {"cross_entropy": ce_ids, "cross_entropy_probs": ce_probs, "kl_divergence": kl_probs}


def _as_bits(x):
    """The float array ``x`` viewed as signed integers of its width."""


@overload(_as_bits, jit_options=dict(error_model="numpy"))
def _as_bits_impl(x):
    if x.dtype == types.float32:
        return lambda x: x.view(np.int32)
    return lambda x: x.view(np.int64)


def _inf_bits(like):
    """The bits of +inf in the type of ``like`` (as a signed integer of its width)."""


@overload(_inf_bits, jit_options=dict(error_model="numpy"))
def _inf_bits_impl(like):
    if like == types.float32:
        return lambda like: np.int32(0x7F800000)
    return lambda like: np.int64(0x7FF0000000000000)


@njit(**_SERIAL)
def float_range_serial(x, valid):
    """``bits_range_serial`` of a 1-D float array (``valid``: empty, or its mask), returned as
    ``(ok, low, high)`` with floats of its dtype: ok is False where an element has sign bit 1
    (−0.0 included) or is a NaN, or none is valid. Small arrays: the view and the conversions
    in the one call."""
    bits = _as_bits(x)
    low, high = bits_range_serial(bits, valid)
    ok = low >= 0 and high <= _inf_bits(x[0]) and low <= high
    return ok, bits_as_float(low, x[0]), bits_as_float(high, x[0])


@njit(**_SERIAL)
def distribution_ranges(t, num_classes):
    """(ok, min, max, min row sum, max row sum) of ``t`` read as rows of ``num_classes``
    entries, row sums in float64, in one pass: the value check of a small target distribution.
    ok is False where an entry is NaN (the caller's exact check decides there)."""
    lo = hi = np.float64(t[0])
    sum_lo = sum_hi = 0.0
    nan = False
    for i in range(t.shape[0] // num_classes):
        s = 0.0
        base = i * num_classes
        for k in range(num_classes):
            v = np.float64(t[base + k])
            s += v
            lo = v if v < lo else lo
            hi = v if v > hi else hi
        nan = nan or s != s
        if i == 0 or s < sum_lo:
            sum_lo = s
        if i == 0 or s > sum_hi:
            sum_hi = s
    return not nan, lo, hi, sum_lo, sum_hi
