"""im2col for NHWC 2-D convolution (path independent).

Column layout: ``col[r, (kh * KW + kw) * Cin + ci]`` for output position
``r = (h_out - h_out_start) * Wo + w_out``; out-of-image taps hold the input zero point, so the
``-x_zp * sum(w)`` correction of the GEMM stays exact with padding.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def im2col(x, x_zp, kh_size, kw_size, stride_h, stride_w, pad_top, pad_left, wo_size,
           h_out_start, h_out_stop, col):
    """Fill ``col[(h_out_stop - h_out_start) * Wo, KH * KW * Cin]`` from ``x[H, W, Cin]``."""
    h_in, w_in, c_in = x.shape
    for ho in range(h_out_start, h_out_stop):
        for wo in range(wo_size):
            r = (ho - h_out_start) * wo_size + wo
            for kh in range(kh_size):
                hi = ho * stride_h - pad_top + kh
                for kw in range(kw_size):
                    wi = wo * stride_w - pad_left + kw
                    base = (kh * kw_size + kw) * c_in
                    if hi < 0 or hi >= h_in or wi < 0 or wi >= w_in:
                        for ci in range(c_in):
                            col[r, base + ci] = x_zp
                    else:
                        for ci in range(c_in):
                            col[r, base + ci] = x[hi, wi, ci]
    return 0


@njit(cache=True)
def conv_out_size(in_size, k_size, stride, pad_lo, pad_hi):
    """Output length of a convolution / pooling window along one axis."""
    return (in_size + pad_lo + pad_hi - k_size) // stride + 1


@njit(cache=True)
def check_conv_shape(h_in, w_in, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                     pad_right, ho, wo, h_out_start, h_out_stop):
    """Raise ValueError unless output shape and row range agree with the conv geometry."""
    if conv_out_size(h_in, kh, stride_h, pad_top, pad_bottom) != ho:
        raise ValueError("output height does not match conv geometry")
    if conv_out_size(w_in, kw, stride_w, pad_left, pad_right) != wo:
        raise ValueError("output width does not match conv geometry")
    if h_out_start < 0 or h_out_stop > ho or h_out_start > h_out_stop:
        raise ValueError("bad output row range")
    return np.int64(0)


@njit(cache=True)
def im2col_rows(x, x_zp, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right,
                col, y, h_out_start, h_out_stop):
    """Shared prelude of the im2col convolutions (int8 paths and fp32).

    Checks the shapes, fills ``col`` with the patches of output rows
    ``h_out_start..h_out_stop`` and returns ``(col2 [rows, K], y2 [HO*WO, CO])``;
    the caller's GEMM writes rows ``h_out_start * WO`` onwards of ``y2``.
    """
    h_in, w_in, c_in = x.shape
    ho, wo, c_out = y.shape
    check_conv_shape(h_in, w_in, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                     pad_right, ho, wo, h_out_start, h_out_stop)
    k_size = kh * kw * c_in
    rows = (h_out_stop - h_out_start) * wo
    if col.shape[0] < rows * k_size:
        raise ValueError("col buffer too small")
    col2 = col[: rows * k_size].reshape((rows, k_size))
    im2col(x, x_zp, kh, kw, stride_h, stride_w, pad_top, pad_left, wo, h_out_start, h_out_stop,
           col2)
    return col2, y.reshape((ho * wo, c_out))


@njit(cache=True)
def window_sum(x, oh, ow, kh, kw, stride_h, stride_w, pad_top, pad_left, acc):
    """``acc[c]`` = sum of the pooling window of output pixel (oh, ow) over the taps inside
    the image (padding excluded); returns how many taps that is. Shared by the pools."""
    h_in, w_in, c = x.shape
    for ci in range(c):
        acc[ci] = 0
    count = 0
    for i in range(kh):
        hi = oh * stride_h - pad_top + i
        if hi < 0 or hi >= h_in:
            continue
        for j in range(kw):
            wi = ow * stride_w - pad_left + j
            if wi < 0 or wi >= w_in:
                continue
            count += 1
            for ci in range(c):
                acc[ci] += x[hi, wi, ci]
    return count


@njit(cache=True)
def pixel_rows(x, y, h_out_start, h_out_stop):
    """Shared prelude of the 1x1 convolutions: NHWC ``x``/``y`` as [pixels, channels] and
    the pixel range ``a..b`` of output rows ``h_out_start..h_out_stop``."""
    h, w_size, c_in = x.shape
    x2 = x.reshape((h * w_size, c_in))
    y2 = y.reshape((h * w_size, y.shape[2]))
    return x2, y2, h_out_start * w_size, h_out_stop * w_size
