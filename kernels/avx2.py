"""AVX2 path: an explicit ``vpmaddwd`` micro-kernel (LLVM intrinsic) with register-blocked tiles.

Why ``vpmaddwd`` and not ``vpmaddubsw``: ``vpmaddubsw`` (u8 x s8 -> saturating s16 pair sums)
can saturate (2 * 255 * 128 > 32767) and is exact only for 7-bit activations or weights; the
engine needs exact int8 x int8 (TFLite / ONNX models), so operands are widened to int16 and
``vpmaddwd`` (int16 x int16 pairs -> int32, always exact) does the multiply-accumulate.  8-bit and
16-bit activations therefore run at the same speed on this path.

Packed weight layout (``pack_gemm_weights``): 1-D **int16** ``[NB, K4, 16, 4]`` with
``NB = ceil(N / 16)``, ``K4 = ceil(K / 4)``: for each block of 16 output channels and each group
of 4 consecutive k, 16 channels x 4 k (zero padded).  One ymm register holds 4 channels x 4 k;
an activation group ``x[m, 4k4:4k4+4]`` is broadcast to all 4 lanes-of-4, so each int32 lane
accumulates 2 products of one channel (lane pair ``2c, 2c+1`` = channel ``c``).

Tile: 3 rows x 16 channels = 12 ymm accumulators.  Activation rows of a tile are first widened
to int16 (zero padded to ``4 * K4``) into the ``work`` scratch, so K needs no tail handling.

Overflow: int32 accumulation throughout.  8-bit x: |product| <= 255 * 128 = 32640, exact for
K <= 65793, int16 x: |product| <= 2**22, exact for K <= 511 (larger K raises ValueError).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .im2col import im2col_rows, pixel_rows
from .requant import store_row

PATH_NAME = "avx2"
PACKED_DTYPE = np.int16
MAX_K_8BIT = 65793
MAX_K_INT16 = 511
MR = 3  # rows per tile
NR = 16  # output channels per tile
MB = 48  # activation rows widened per block (L1 resident)


def packed_size(k_size: int, n_out: int) -> int:
    """Number of int16 elements of packed weights for a ``K x N`` GEMM."""
    return ((n_out + NR - 1) // NR) * ((k_size + 3) // 4) * NR * 4


def pack_gemm_weights(w_nk: np.ndarray) -> np.ndarray:
    """Pack int8 weights ``w_nk[N, K]`` into this path's 1-D int16 ``[NB, K4, 16, 4]`` layout."""
    w = np.asarray(w_nk)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError("w_nk must be a 2-D int8 array [N, K]")
    n_out, k_size = w.shape
    nb = (n_out + NR - 1) // NR
    k4 = (k_size + 3) // 4
    padded = np.zeros((nb * NR, k4 * 4), dtype=np.int16)
    padded[:n_out, :k_size] = w
    # [NB, 16, K4, 4] -> [NB, K4, 16, 4]
    packed = padded.reshape(nb, NR, k4, 4).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(packed).reshape(-1)


def _make_microkernel(rows: int):
    """Intrinsic computing a ``rows x 16`` int32 tile over ``k4_count`` groups of 4 k.

    Arguments are addresses: ``x_addr`` int16 rows of ``x_stride`` bytes, ``w_addr`` packed int16
    block of this channel block, ``out_addr`` int32[rows * 16]: the tile, channel-contiguous.
    """

    @intrinsic
    def microkernel(typingctx, x_addr, x_stride, w_addr, k4_count, out_addr):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            xa, xs, wa, kc, oa = args
            i16 = ir.IntType(16)
            i32 = ir.IntType(32)
            i64 = ir.IntType(64)
            intp = xa.type
            v16i16 = ir.VectorType(i16, 16)
            v8i32 = ir.VectorType(i32, 8)
            pmadd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]), "llvm.x86.avx2.pmadd.wd")
            zero = ir.Constant(v8i32, None)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(4)]
                    for _ in range(rows)]
            v4i64 = ir.VectorType(i64, 4)
            splat = ir.Constant(ir.VectorType(i32, 4), [0, 0, 0, 0])
            with cgutils.for_range(builder, kc) as loop:
                k = loop.index
                w_base = builder.add(wa, builder.mul(k, ir.Constant(intp, 128)))
                wv = []
                for j in range(4):
                    p = builder.inttoptr(builder.add(w_base, ir.Constant(intp, 32 * j)),
                                         v16i16.as_pointer())
                    wv.append(builder.load(p, align=2))
                x_off = builder.mul(k, ir.Constant(intp, 8))
                for r in range(rows):
                    xaddr = builder.add(builder.add(xa, builder.mul(ir.Constant(intp, r), xs)),
                                        x_off)
                    q = builder.load(builder.inttoptr(xaddr, i64.as_pointer()), align=2)
                    qv = builder.insert_element(ir.Constant(v4i64, None), q,
                                                ir.Constant(i32, 0))
                    bq = builder.shuffle_vector(qv, qv, splat)
                    xb = builder.bitcast(bq, v16i16)
                    for j in range(4):
                        prod = builder.call(pmadd, [wv[j], xb])
                        acc = accs[r][j]
                        builder.store(builder.add(builder.load(acc), prod), acc)
            # pair-sum the two lanes of each channel: 4 ymm (4 ch x 2) -> 2 ymm (8 ch each)
            even = ir.Constant(ir.VectorType(i32, 8), list(range(0, 16, 2)))
            odd = ir.Constant(ir.VectorType(i32, 8), list(range(1, 16, 2)))
            for r in range(rows):
                a = [builder.load(accs[r][j]) for j in range(4)]
                for h in range(2):
                    lo_v, hi_v = a[2 * h], a[2 * h + 1]
                    s = builder.add(builder.shuffle_vector(lo_v, hi_v, even),
                                    builder.shuffle_vector(lo_v, hi_v, odd))
                    p = builder.inttoptr(builder.add(oa, ir.Constant(intp, (r * 2 + h) * 32)),
                                         v8i32.as_pointer())
                    builder.store(s, p, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return microkernel


_mk1 = _make_microkernel(1)
_mk2 = _make_microkernel(2)
_mk3 = _make_microkernel(3)


@njit(cache=True, inline="always")
def _run_tile(rows, x_addr, x_stride, w_addr, k4_count, out_addr):
    if rows == 3:
        _mk3(x_addr, x_stride, w_addr, k4_count, out_addr)
    elif rows == 2:
        _mk2(x_addr, x_stride, w_addr, k4_count, out_addr)
    else:
        _mk1(x_addr, x_stride, w_addr, k4_count, out_addr)


@njit(cache=True)
def _gemm_rows(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin,
               qmax, y, m_start, m_stop, y_row0, work):
    # rows m_start..m_stop of x go to rows y_row0.. of y; no slicing here: slices of C arrays
    # type as 'A' layout in numba, which blocks vectorization of the copy and the store
    k_size = x.shape[1]
    m_count = m_stop - m_start
    n_out = y.shape[1]
    k4 = (k_size + 3) // 4
    kp = k4 * 4
    if x.itemsize == 1 and k_size > MAX_K_8BIT:
        raise ValueError("K too large for exact int32 accumulation of 8-bit activations")
    if x.itemsize == 2 and k_size > MAX_K_INT16:
        raise ValueError("K too large for exact int32 accumulation of int16 activations")
    if wp.shape[0] < ((n_out + NR - 1) // NR) * k4 * NR * 4:
        raise ValueError("packed weights too small for this K x N")
    # work = [tile output int32[64] | activation rows widened to int16, kp apart]
    rows_fit = (work.shape[0] - 72) * 2 // kp
    if rows_fit < MR:
        raise ValueError("work buffer too small (see work_size)")
    mb = min(MB, rows_fit - rows_fit % MR)
    out = work[:64]
    xw = work[64:].view(np.int16)
    out_addr = out.ctypes.data
    xw_addr = xw.ctypes.data
    w_addr = wp.ctypes.data
    n_blocks = (n_out + NR - 1) // NR
    ukp = np.uint64(kp)
    uk = np.uint64(k_size)
    vmin = np.int64(2**62)
    vmax = np.int64(-(2**62))
    for b0 in range(0, m_count, mb):
        b_rows = min(mb, m_count - b0)
        # widen a block of activation rows once; it stays in L1 while all weight blocks pass
        for r in range(np.uint64(b_rows)):
            src = np.uint64(m_start + b0) + r
            for k in range(uk):
                xw[r * ukp + k] = x[src, k]
            for k in range(uk, ukp):
                xw[r * ukp + k] = 0
        for nb in range(n_blocks):
            w_blk = w_addr + nb * k4 * NR * 4 * 2
            n_here = min(NR, n_out - nb * NR)
            for t0 in range(0, b_rows, MR):
                rows = min(MR, b_rows - t0)
                _run_tile(rows, xw_addr + t0 * kp * 2, kp * 2, w_blk, k4, out_addr)
                for r in range(rows):
                    vmin, vmax = store_row(out, r * NR, nb * NR, n_here, x_zp, w_sum, bias,
                                           rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin,
                                           qmax, y, y_row0 + b0 + t0 + r, vmin, vmax)
    return np.float64(vmin), np.float64(vmax)


@njit(cache=True)
def gemm_q(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin, qmax,
           y, m_start, m_stop, work):
    """Quantized GEMM, rows ``m_start..m_stop`` (contract in ``voxquant.kernels``)."""
    return _gemm_rows(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                      qmin, qmax, y, m_start, m_stop, m_start, work)


@njit(cache=True)
def fully_connected_q(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                      qmin, qmax, y, work):
    """Fully connected layer on 1-D ``x[K]`` -> 1-D ``y[N]``."""
    return _gemm_rows(x.reshape((1, x.shape[0])), x_zp, wp, w_sum, bias, rq_mode, rq_scale,
                      rq_mult, rq_shift, y_zp, qmin, qmax, y.reshape((1, y.shape[0])), 0, 1, 0,
                      work)


@njit(cache=True)
def pointwise_conv_q(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                     qmin, qmax, y, h_out_start, h_out_stop, work):
    """1x1 convolution, stride 1, no padding, NHWC, output rows ``h_out_start..h_out_stop``."""
    x2, y2, a, b = pixel_rows(x, y, h_out_start, h_out_stop)
    return _gemm_rows(x2, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                      qmin, qmax, y2, a, b, a, work)


@njit(cache=True)
def conv2d_q(x, x_zp, wp, w_sum, bias, kh, kw, stride_h, stride_w, pad_top, pad_bottom,
             pad_left, pad_right, col, rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin, qmax,
             y, h_out_start, h_out_stop, work):
    """General 2-D convolution via im2col + GEMM, NHWC, rows ``h_out_start..h_out_stop``."""
    col2, y2 = im2col_rows(x, x_zp, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                           pad_right, col, y, h_out_start, h_out_stop)
    return _gemm_rows(col2, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
                      qmin, qmax, y2, 0, col2.shape[0], h_out_start * y.shape[1], work)
