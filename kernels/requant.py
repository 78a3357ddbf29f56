"""Requantization, quantize / dequantize and max-abs reductions.

Two requantization rules share every integer kernel's output stage (``rq_mode``):

``RQ_FLOAT`` (0)
    ``q = clamp(rint(float32(acc) * scale[c]) + y_zp, qmin, qmax)``, computed in float32,
    rounding half to even.  This is exactly onnxruntime's MLAS requantization (QLinearConv,
    QLinearMatMul), so ONNX QDQ models are reproduced bit for bit.
``RQ_TFLITE`` (1)
    ``q = clamp(MultiplyByQuantizedMultiplier(int32(acc), mult[c], shift[c]) + y_zp, ...)``:
    TFLite's reference fixed-point rule (double rounding: SaturatingRoundingDoublingHighMul then
    RoundingDivideByPOT, i.e. the default build without ``TFLITE_SINGLE_ROUNDING``), so TFLite int8
    models are reproduced bit for bit.  ``quantize_multiplier`` turns a real multiplier into
    ``(mult, shift)`` as TFLite's ``QuantizeMultiplier`` does.

``RQ_NONE`` (2)
    ``q = clamp(acc, qmin, qmax)``: raw accumulators (``y`` int32), for an exact per-window scale
    chosen after the producer ran.

In all modes ``acc`` already includes the bias and the input-zero-point correction.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

RQ_FLOAT = 0
RQ_TFLITE = 1
RQ_NONE = 2

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: real multiplier -> (int32 mantissa in Q31, shift).

    ``real ~= mult * 2**(shift - 31)``; ``shift > 0`` means a left shift.
    """
    if real_multiplier == 0.0:
        return 0, 0
    frac, shift = math.frexp(float(real_multiplier))
    q = int(math.floor(abs(frac) * (1 << 31) + 0.5))  # std::round: half away from zero
    q = q if frac >= 0 else -q
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        shift, q = 0, 0
    return q, shift


def quantize_multipliers(real_multipliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vector form of :func:`quantize_multiplier`: returns ``(mult int32[N], shift int32[N])``."""
    reals = np.asarray(real_multipliers, np.float64).ravel()
    pairs = [quantize_multiplier(float(m)) for m in reals]
    mult = np.array([p[0] for p in pairs], dtype=np.int32)
    shift = np.array([p[1] for p in pairs], dtype=np.int32)
    return mult, shift


@njit(cache=True, inline="always")
def saturating_rounding_doubling_high_mul(a: int, b: int) -> int:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values (returned as int64)."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = np.int64(a) * np.int64(b)
    nudge = np.int64(1 << 30) if ab >= 0 else np.int64(1 - (1 << 30))
    s = ab + nudge
    # C++ integer division truncates toward zero
    q = s // np.int64(1 << 31)
    if s < 0 and q * np.int64(1 << 31) != s:
        q += 1
    return q


@njit(cache=True, inline="always")
def rounding_divide_by_pot(x: int, exponent: int) -> int:
    """gemmlowp ``RoundingDivideByPOT`` (round half away from zero)."""
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


@njit(cache=True, inline="always")
def multiply_by_quantized_multiplier(x: int, mult: int, shift: int) -> int:
    """TFLite ``MultiplyByQuantizedMultiplier`` (int32 x, Q31 mult, shift; shift>0 = left)."""
    left = shift if shift > 0 else 0
    right = 0 if shift > 0 else -shift
    xs = np.int64(x) * (np.int64(1) << left)
    # TFLite multiplies in int32: wrap like the C++ code would on overflow
    xs = np.int64(np.int32(xs))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(xs, mult), right)


@njit(cache=True, inline="always")
def requant_one(acc, c, rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin, qmax):
    """Requantize one accumulator (bias and zero-point term included) of output channel ``c``.

    Returns ``(v, q)``: ``v`` the rounded pre-clamp value in output steps without the zero point
    (int64, for the fused min/max reduction), ``q`` the clamped quantized value (int64).
    """
    if rq_mode == RQ_NONE:
        v = np.int64(acc)
    elif rq_mode == RQ_TFLITE:
        v = np.int64(multiply_by_quantized_multiplier(np.int64(np.int32(acc)), rq_mult[c],
                                                      rq_shift[c]))
    else:
        f = np.float32(np.int32(acc)) * rq_scale[c]
        v = np.int64(np.rint(min(max(f, np.float32(-(2.0**30))), np.float32(2.0**30))))
    q = v if rq_mode == RQ_NONE else v + y_zp
    if q < qmin:
        q = qmin
    if q > qmax:
        q = qmax
    return v, q


@njit(cache=True, inline="always")
def _store_float(acc, acc_off, n0, count, x_zp, w_sum, bias, rq_scale, y_zp, qmin, qmax, y, row,
                 vmin, vmax):
    """RQ_FLOAT store: branch free, unsigned indices, so LLVM vectorizes it."""
    zp = np.int32(x_zp)
    ao = np.uint64(acc_off)
    nb = np.uint64(n0)
    ur = np.uint64(row)
    lo = np.float32(-(2.0**30))
    hi = np.float32(2.0**30)
    yzp = np.int32(y_zp)
    qlo = np.int32(qmin)
    qhi = np.int32(qmax)
    rmin = np.int32(2**30)
    rmax = np.int32(-(2**30))
    for c in range(np.uint64(count)):
        n = nb + c
        total = np.int32(acc[ao + c] + bias[n] - zp * w_sum[n])
        f = np.float32(total) * rq_scale[n]
        r = np.int32(np.rint(min(max(f, lo), hi)))
        rmin = min(rmin, r)
        rmax = max(rmax, r)
        y[ur, n] = min(max(np.int32(r + yzp), qlo), qhi)
    return min(vmin, np.int64(rmin)), max(vmax, np.int64(rmax))


@njit(cache=True)
def _store_other(acc, acc_off, n0, count, x_zp, w_sum, bias, rq_mode, rq_mult, rq_shift, y_zp,
                 qmin, qmax, y, row, vmin, vmax):
    """RQ_TFLITE and RQ_NONE stores (scalar)."""
    zp = np.int32(x_zp)
    for c in range(count):
        n = n0 + c
        if rq_mode == RQ_TFLITE:
            total = np.int32(acc[acc_off + c] + bias[n] - zp * w_sum[n])
            r = multiply_by_quantized_multiplier(total, rq_mult[n], rq_shift[n])
            q = r + y_zp
        else:
            r = np.int64(acc[acc_off + c]) + bias[n] - np.int64(zp) * w_sum[n]
            q = r
        vmin = min(vmin, r)
        vmax = max(vmax, r)
        y[row, n] = min(max(q, qmin), qmax)
    return vmin, vmax


@njit(cache=True, inline="always")
def store_row(acc, acc_off, n0, count, x_zp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift,
              y_zp, qmin, qmax, y, row, vmin, vmax):
    """Fused output stage of ``count`` channels ``n0..n0+count`` of output row ``y[row, :]``.

    ``acc[acc_off + c]`` (int32) is ``sum_k x*w`` of channel ``n0 + c``; the stored value is
    ``rq(acc + bias - x_zp * w_sum)`` clamped to ``[qmin, qmax]``.  The total is formed in int32:
    exact when ``|sum_k (x - x_zp) * w + bias| < 2**31`` (the TFLite / ONNX contract).  Returns the
    updated ``(vmin, vmax)`` (int64) of the rounded pre-clamp values in output steps, without the
    zero point.  The RQ_FLOAT store is a separate branch-free function (a store with all three
    modes inlined together ran 4x slower: LLVM stopped vectorizing it).
    """
    if rq_mode == RQ_FLOAT:
        return _store_float(acc, acc_off, n0, count, x_zp, w_sum, bias, rq_scale, y_zp, qmin,
                            qmax, y, row, vmin, vmax)
    return _store_other(acc, acc_off, n0, count, x_zp, w_sum, bias, rq_mode, rq_mult, rq_shift,
                        y_zp, qmin, qmax, y, row, vmin, vmax)


@njit(cache=True)
def requantize(acc, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin, qmax, y):
    """Requantize an int32 ``acc[M, N]`` (+ ``bias[N]``) into ``y[M, N]`` (int8/uint8/int16).

    Returns ``(vmin, vmax)`` of the rounded pre-clamp values in output steps (fused reduction).
    """
    m_count, n_count = acc.shape
    vmin = np.int64(2**62)
    vmax = np.int64(-(2**62))
    for m in range(m_count):
        for n in range(n_count):
            v, q = requant_one(np.int64(acc[m, n]) + bias[n], n, rq_mode, rq_scale, rq_mult,
                               rq_shift, y_zp, qmin, qmax)
            vmin = min(vmin, v)
            vmax = max(vmax, v)
            y[m, n] = q
    return np.float64(vmin), np.float64(vmax)


@njit(cache=True)
def quantize_f32(x, scale, zp, qmin, qmax, y):
    """Quantize float32 ``x`` (1-D) into ``y``: ``clamp(rint(x / scale) + zp, qmin, qmax)``.

    Division (not multiplication by a reciprocal), half to even: the ONNX QuantizeLinear rule.
    Returns ``max |x|`` of the input, gathered in the same loop (the running max for the next
    window's dynamic scale), and the number of saturated elements.
    """
    amax = np.float32(0.0)
    n_sat = 0
    s = np.float32(scale)
    lo = np.float32(qmin - zp)
    hi = np.float32(qmax - zp)
    for i in range(x.shape[0]):
        xi = x[i]
        amax = max(amax, abs(xi))
        r = np.rint(xi / s)
        if r < lo or r > hi:
            n_sat += 1
        r = min(max(r, lo), hi)
        y[i] = np.int32(r) + zp
    return amax, n_sat


@njit(cache=True)
def dequantize(xq, scale, zp, y):
    """Dequantize ``xq`` (1-D int) into float32 ``y``: ``(xq - zp) * scale``; returns max |y|."""
    amax = np.float32(0.0)
    s = np.float32(scale)
    for i in range(xq.shape[0]):
        v = np.float32(np.int32(xq[i]) - zp) * s
        amax = max(amax, abs(v))
        y[i] = v
    return amax


@njit(cache=True)
def max_abs_f32(x):
    """max |x| of a float32 1-D array (vectorizes: no data-dependent branch)."""
    amax = np.float32(0.0)
    for i in range(x.shape[0]):
        amax = max(amax, abs(x[i]))
    return amax


@njit(cache=True)
def max_abs_int(x, zp):
    """max |x - zp| of an integer 1-D array, as int64."""
    amax = np.int64(0)
    for i in range(x.shape[0]):
        amax = max(amax, abs(np.int64(x[i]) - zp))
    return amax
