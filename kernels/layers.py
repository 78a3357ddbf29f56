"""Path-independent integer layers: depthwise conv, pooling, element-wise add.

They vectorize over the channel axis (innermost in NHWC) in plain numba, so every dispatch path
shares them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .im2col import check_conv_shape, window_sum
from .requant import requant_one


def pack_depthwise_weights(w_c1hw: np.ndarray) -> np.ndarray:
    """ONNX depthwise weights ``[C, 1, KH, KW]`` int8 -> 1-D int8 ``[KH, KW, C]`` (C contiguous)."""
    w = np.asarray(w_c1hw)
    if w.dtype != np.int8 or w.ndim != 4 or w.shape[1] != 1:
        raise ValueError("depthwise weights must be int8 [C, 1, KH, KW]")
    return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)).reshape(-1).copy()


@njit(cache=True)
def depthwise_conv_q(x, x_zp, wd, bias, kh, kw, stride_h, stride_w, pad_top, pad_bottom,
                     pad_left, pad_right, rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin, qmax,
                     y, h_out_start, h_out_stop, work):
    """Depthwise conv (channel multiplier 1), NHWC ``x[H, W, C]`` -> ``y[Ho, Wo, C]``.

    ``wd`` is ``pack_depthwise_weights`` output; ``work`` int32 1-D, size >= C.  Padded taps are
    skipped (they equal ``x_zp``, i.e. real 0).  Overflow: |acc| <= KH*KW*(2**16-1)*128 < 2**31
    for 8-bit or 16-bit activations when KH*KW <= 255.
    """
    h_in, w_in, c = x.shape
    ho, wo, c_out = y.shape
    check_conv_shape(h_in, w_in, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                     pad_right, ho, wo, h_out_start, h_out_stop)
    if c_out != c or work.shape[0] < c:
        raise ValueError("depthwise: channel mismatch or work buffer too small")
    w3 = wd[: kh * kw * c].reshape((kh, kw, c))
    acc = work[:c]
    vmin = np.inf
    vmax = -np.inf
    for oh in range(h_out_start, h_out_stop):
        for ow in range(wo):
            for ci in range(c):
                acc[ci] = bias[ci]
            for i in range(kh):
                hi = oh * stride_h - pad_top + i
                if hi < 0 or hi >= h_in:
                    continue
                for j in range(kw):
                    wi = ow * stride_w - pad_left + j
                    if wi < 0 or wi >= w_in:
                        continue
                    for ci in range(c):
                        acc[ci] += (np.int32(x[hi, wi, ci]) - x_zp) * np.int32(w3[i, j, ci])
            for ci in range(c):
                v, q = requant_one(acc[ci], ci, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                                   qmin, qmax)
                vmin = min(vmin, v)
                vmax = max(vmax, v)
                y[oh, ow, ci] = q
    return vmin, vmax


@njit(cache=True)
def avg_pool_q(x, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, qmin,
               qmax, y, h_out_start, h_out_stop, work):
    """Average pooling with TFLite int8 semantics (same input/output scale and zero point).

    ``y = clamp(round_half_away(sum(x) / count), qmin, qmax)`` over the taps inside the image
    (padding excluded from ``count``), on raw stored values.  Global average pooling is
    ``kh = H, kw = W``.  ``work`` int32, size >= C.
    """
    h_in, w_in, c = x.shape
    ho, wo, c_out = y.shape
    check_conv_shape(h_in, w_in, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                     pad_right, ho, wo, h_out_start, h_out_stop)
    if c_out != c or work.shape[0] < c:
        raise ValueError("avg_pool: channel mismatch or work buffer too small")
    acc = work[:c]
    vmin = np.inf
    vmax = -np.inf
    for oh in range(h_out_start, h_out_stop):
        for ow in range(wo):
            count = window_sum(x, oh, ow, kh, kw, stride_h, stride_w, pad_top, pad_left, acc)
            count = max(count, 1)  # a window wholly in the padding gives 0
            half = count // 2
            for ci in range(c):
                a = acc[ci]
                q = (a + half) // count if a > 0 else -((-a + half) // count)
                v = np.float64(a) / count
                vmin = min(vmin, v)
                vmax = max(vmax, v)
                y[oh, ow, ci] = min(max(q, qmin), qmax)
    return vmin, vmax


@njit(cache=True)
def sum_rows_i32(x, h_start, h_stop, acc):
    """``acc[c] += sum over h_start <= h < h_stop and all w of x[h, w, c]`` (running sums for a
    streaming global average pool); ``acc`` int32 (or int64) [C]."""
    c = x.shape[2]
    for h in range(h_start, h_stop):
        for w in range(x.shape[1]):
            for ci in range(c):
                acc[ci] += x[h, w, ci]
    return 0


@njit(cache=True)
def global_avg_pool_q(x, x_zp, h_start, h_stop, scale, y_zp, qmin, qmax, y, work):
    """Global average pool with float requantization over rows ``h_start..h_stop``:
    ``y[c] = clamp(rint(float32(sum(x[..., c]) - count * x_zp) * scale) + y_zp)`` where the
    caller passes ``scale = s_x / (count * s_y)`` (float32).  ``y`` is 1-D [C]; work int32 >= C.
    """
    c = x.shape[2]
    acc = work[:c]
    for ci in range(c):
        acc[ci] = 0
    sum_rows_i32(x, h_start, h_stop, acc)
    count = (h_stop - h_start) * x.shape[1]
    s = np.float32(scale)
    vmin = np.inf
    vmax = -np.inf
    for ci in range(c):
        f = np.float32(np.int64(acc[ci]) - np.int64(count) * x_zp) * s
        v = np.float64(f)
        vmin = min(vmin, v)
        vmax = max(vmax, v)
        q = np.int64(np.rint(f)) + y_zp
        y[ci] = min(max(q, qmin), qmax)
    return vmin, vmax


@njit(cache=True)
def add_q(a, a_zp, a_scale, b, b_zp, b_scale, y_zp, qmin, qmax, y):
    """Element-wise quantized add on 1-D arrays (any shape flattened by the caller):
    ``y = clamp(rint(float32(a - a_zp) * a_scale + float32(b - b_zp) * b_scale) + y_zp)`` with
    ``a_scale = s_a / s_y``, ``b_scale = s_b / s_y`` (float32; two float32 products then one
    float32 add, no FMA).  Returns (vmin, vmax) of the pre-clamp values in output steps."""
    sa = np.float32(a_scale)
    sb = np.float32(b_scale)
    lo = np.float32(qmin - y_zp)
    hi = np.float32(qmax - y_zp)
    vmin = np.float32(np.inf)
    vmax = np.float32(-np.inf)
    for i in range(y.shape[0]):
        pa = np.float32(np.int32(a[i]) - a_zp) * sa
        pb = np.float32(np.int32(b[i]) - b_zp) * sb
        f = pa + pb
        vmin = min(vmin, f)
        vmax = max(vmax, f)
        r = min(max(np.rint(f), lo), hi)
        y[i] = np.int32(r) + y_zp
    return np.float64(vmin), np.float64(vmax)


@njit(cache=True)
def clamp_q(x, qmin, qmax, y):
    """Element-wise clamp (a standalone ReLU / ReLU6 in the quantized domain), 1-D."""
    for i in range(y.shape[0]):
        y[i] = min(max(x[i], qmin), qmax)
    return 0
