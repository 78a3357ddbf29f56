"""fp32 reference path (numba): same layouts and row-range contract as the integer kernels.

Activations are clamped to ``[lo, hi]`` in the store (ReLU: ``lo=0``; ReLU6: ``hi=6``; none:
``-inf, inf``).  Every kernel returns ``(vmin, vmax)`` of the pre-clamp outputs (fused
reduction for dynamic scales).  Results match NumPy within float32 rounding of the summation
order (tests use rtol=1e-5 relative to the sum of |products|).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .im2col import check_conv_shape, im2col_rows, pixel_rows, window_sum


def pack_gemm_weights_f32(w_nk: np.ndarray) -> np.ndarray:
    """float32 weights ``[N, K]`` -> 1-D ``[N, K]`` (K contiguous)."""
    return np.ascontiguousarray(np.asarray(w_nk, dtype=np.float32)).reshape(-1).copy()


@njit(cache=True)
def _gemm_rows_f32(x, wp, bias, lo, hi, y):
    m_count, k_size = x.shape
    n_out = y.shape[1]
    w = wp[: n_out * k_size].reshape((n_out, k_size))
    vmin = np.float32(np.inf)
    vmax = np.float32(-np.inf)
    for m in range(m_count):
        for n in range(n_out):
            acc = np.float32(0.0)
            for k in range(k_size):
                acc += x[m, k] * w[n, k]
            v = acc + bias[n]
            vmin = min(vmin, v)
            vmax = max(vmax, v)
            y[m, n] = min(max(v, lo), hi)
    return np.float64(vmin), np.float64(vmax)


@njit(cache=True)
def gemm_f32(x, wp, bias, lo, hi, y, m_start, m_stop):
    """``y[m, n] = clamp(sum_k x[m, k] * w[n, k] + bias[n], lo, hi)`` for rows m_start..m_stop."""
    return _gemm_rows_f32(x[m_start:m_stop], wp, bias, np.float32(lo), np.float32(hi),
                          y[m_start:m_stop])


@njit(cache=True)
def fully_connected_f32(x, wp, bias, lo, hi, y):
    """1-D ``x[K]`` -> 1-D ``y[N]``."""
    return _gemm_rows_f32(x.reshape((1, x.shape[0])), wp, bias, np.float32(lo), np.float32(hi),
                          y.reshape((1, y.shape[0])))


@njit(cache=True)
def pointwise_conv_f32(x, wp, bias, lo, hi, y, h_out_start, h_out_stop):
    """1x1 conv, stride 1, NHWC, output rows ``h_out_start..h_out_stop``."""
    x2, y2, a, b = pixel_rows(x, y, h_out_start, h_out_stop)
    return _gemm_rows_f32(x2[a:b], wp, bias, np.float32(lo), np.float32(hi), y2[a:b])


@njit(cache=True)
def conv2d_f32(x, wp, bias, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right,
               col, lo, hi, y, h_out_start, h_out_stop):
    """General 2-D conv via im2col into ``col`` (float32 1-D), zero padding, NHWC."""
    col2, y2 = im2col_rows(x, 0.0, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                           pad_right, col, y, h_out_start, h_out_stop)
    wo = y.shape[1]
    return _gemm_rows_f32(col2, wp, bias, np.float32(lo), np.float32(hi),
                          y2[h_out_start * wo:h_out_stop * wo])


@njit(cache=True)
def depthwise_conv_f32(x, wd, bias, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                       pad_right, lo, hi, y, h_out_start, h_out_stop, work):
    """Depthwise conv, ``wd`` float32 1-D ``[KH, KW, C]``; ``work`` float32 1-D >= C."""
    h_in, w_in, c = x.shape
    ho, wo, _ = y.shape
    check_conv_shape(h_in, w_in, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                     pad_right, ho, wo, h_out_start, h_out_stop)
    w3 = wd[: kh * kw * c].reshape((kh, kw, c))
    acc = work[:c]
    flo = np.float32(lo)
    fhi = np.float32(hi)
    vmin = np.float32(np.inf)
    vmax = np.float32(-np.inf)
    for oh in range(h_out_start, h_out_stop):
        for ow in range(wo):
            for ci in range(c):
                acc[ci] = bias[ci]
            for i in range(kh):
                hi_ = oh * stride_h - pad_top + i
                if hi_ < 0 or hi_ >= h_in:
                    continue
                for j in range(kw):
                    wi = ow * stride_w - pad_left + j
                    if wi < 0 or wi >= w_in:
                        continue
                    for ci in range(c):
                        acc[ci] += x[hi_, wi, ci] * w3[i, j, ci]
            for ci in range(c):
                v = acc[ci]
                vmin = min(vmin, v)
                vmax = max(vmax, v)
                y[oh, ow, ci] = min(max(v, flo), fhi)
    return np.float64(vmin), np.float64(vmax)


@njit(cache=True)
def avg_pool_f32(x, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, y,
                 h_out_start, h_out_stop, work):
    """Average pool (padding excluded from the count), NHWC; ``work`` float32 >= C."""
    h_in, w_in, c = x.shape
    ho, wo, _ = y.shape
    check_conv_shape(h_in, w_in, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                     pad_right, ho, wo, h_out_start, h_out_stop)
    acc = work[:c]
    for oh in range(h_out_start, h_out_stop):
        for ow in range(wo):
            count = window_sum(x, oh, ow, kh, kw, stride_h, stride_w, pad_top, pad_left, acc)
            inv = np.float32(1.0) / np.float32(count)
            for ci in range(c):
                y[oh, ow, ci] = acc[ci] * inv
    return 0


@njit(cache=True)
def add_f32(a, b, lo, hi, y):
    """Element-wise ``y = clamp(a + b, lo, hi)`` on 1-D float32 arrays; returns (vmin, vmax)."""
    flo = np.float32(lo)
    fhi = np.float32(hi)
    vmin = np.float32(np.inf)
    vmax = np.float32(-np.inf)
    for i in range(y.shape[0]):
        v = a[i] + b[i]
        vmin = min(vmin, v)
        vmax = max(vmax, v)
        y[i] = min(max(v, flo), fhi)
    return np.float64(vmin), np.float64(vmax)
