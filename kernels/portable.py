"""Portable integer GEMM path: plain numba loops, any CPU numba supports (x86, Arm).

Packed weight layout (``pack_gemm_weights``): int8, 1-D, row-major ``[N, K]`` (K contiguous), so
the inner dot product vectorizes (LLVM emits ``pmaddwd`` on x86).  The packed array of this path
is only valid for this path's kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .im2col import im2col_rows, pixel_rows
from .requant import store_row

PATH_NAME = "portable"
PACKED_DTYPE = np.int8
MAX_K_8BIT = 65793  # (2**31 - 1) // (255 * 128)
MAX_K_INT16 = 511  # (2**31 - 1) // 2**22



def packed_size(k_size: int, n_out: int) -> int:
    """Number of int8 elements of packed weights for a ``K x N`` GEMM."""
    return k_size * n_out


def pack_gemm_weights(w_nk: np.ndarray) -> np.ndarray:
    """Pack int8 weights ``w_nk[N, K]`` (one row per output channel) for this path."""
    w = np.asarray(w_nk)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError("w_nk must be a 2-D int8 array [N, K]")
    return np.ascontiguousarray(w).reshape(-1).copy()


@njit(cache=True)
def _gemm_rows(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin,
               qmax, y, m_start, m_stop, y_row0, work):
    # rows m_start..m_stop of x go to rows y_row0.. of y; no slicing here: slices of C arrays
    # type as 'A' layout in numba, which blocks vectorization of the copy and the store
    k_size = x.shape[1]
    m_count = m_stop - m_start
    n_out = y.shape[1]
    if x.itemsize == 1 and k_size > MAX_K_8BIT:
        raise ValueError("K too large for exact int32 accumulation of 8-bit activations")
    if x.itemsize == 2 and k_size > MAX_K_INT16:
        raise ValueError("K too large for exact int32 accumulation of int16 activations")
    if work.shape[0] < n_out:
        raise ValueError("work buffer too small (see work_size)")
    w = wp[: n_out * k_size].reshape((n_out, k_size))
    acc_row = work[:n_out]
    vmin = np.int64(2**62)
    vmax = np.int64(-(2**62))
    for m in range(m_count):
        for n in range(n_out):
            acc = np.int32(0)
            for k in range(k_size):
                acc += np.int32(x[m_start + m, k]) * np.int32(w[n, k])
            acc_row[n] = acc
        vmin, vmax = store_row(acc_row, 0, 0, n_out, x_zp, w_sum, bias, rq_mode, rq_scale,
                               rq_mult, rq_shift, y_zp, qmin, qmax, y, y_row0 + m, vmin, vmax)
    return np.float64(vmin), np.float64(vmax)


@njit(cache=True)
def gemm_q(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin, qmax,
           y, m_start, m_stop, work):
    """Quantized GEMM ``y[m, :] = rq(sum_k (x[m, k] - x_zp) * w[n, k] + bias[n])``, rows
    ``m_start <= m < m_stop`` only.  See ``voxquant.kernels`` for the argument contract."""
    return _gemm_rows(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                      qmin, qmax, y, m_start, m_stop, m_start, work)


@njit(cache=True)
def fully_connected_q(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                      qmin, qmax, y, work):
    """Fully connected layer on 1-D ``x[K]`` -> 1-D ``y[N]`` (a one-row GEMM)."""
    x2 = x.reshape((1, x.shape[0]))
    y2 = y.reshape((1, y.shape[0]))
    return _gemm_rows(x2, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                      qmin, qmax, y2, 0, 1, 0, work)


@njit(cache=True)
def pointwise_conv_q(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                     qmin, qmax, y, h_out_start, h_out_stop, work):
    """1x1 convolution, stride 1, no padding, NHWC ``x[H, W, Cin]`` -> ``y[H, W, Cout]``,
    output rows ``h_out_start <= h < h_out_stop``."""
    x2, y2, a, b = pixel_rows(x, y, h_out_start, h_out_stop)
    return _gemm_rows(x2, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                      qmin, qmax, y2, a, b, a, work)


@njit(cache=True)
def conv2d_q(x, x_zp, wp, w_sum, bias, kh, kw, stride_h, stride_w, pad_top, pad_bottom,
             pad_left, pad_right, col, rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin, qmax,
             y, h_out_start, h_out_stop, work):
    """General 2-D convolution (im2col into ``col`` then GEMM), NHWC, asymmetric padding,
    output rows ``h_out_start <= h < h_out_stop``."""
    col2, y2 = im2col_rows(x, x_zp, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                           pad_right, col, y, h_out_start, h_out_stop)
    return _gemm_rows(col2, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                      qmin, qmax, y2, 0, col2.shape[0], h_out_start * y.shape[1], work)
