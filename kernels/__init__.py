"""voxquant.kernels: integer (int8 / int16) and fp32 kernels in numba.

Every kernel is a plain ``@njit(cache=True)`` function taking only arrays and scalars, writing
into caller-provided arrays, never allocating, and callable from another njit function (a whole
network runs inside ONE numba call).

Dispatch paths
--------------
``portable`` (plain numba loops, any CPU), ``avx2`` (x86 AVX2, explicit ``vpmaddwd`` micro-kernel
via an LLVM intrinsic), ``vnni`` (selected on AVX-512 VNNI CPUs; the ``vpdpbusd`` kernel is not
written yet, so it runs the AVX2 kernels: see ``vnni.py``).  The path is chosen once at import:
``$VOXQUANT_KERNELS=portable|avx2|vnni|auto`` (default ``auto`` = fastest the CPU supports).
``KERNEL_PATH`` names the chosen one.  Each path is its own module
(``voxquant.kernels.portable`` / ``.avx2`` / ``.vnni``) with the same names and its own numba
cache entries; the names re-exported here are the chosen module's.  Packed GEMM weights are
path specific: always pack with the ``pack_gemm_weights`` of the module whose kernels you call.
NOTE for cached callers: numba freezes the global functions a cached function calls, so an njit
function that calls ``voxquant.kernels.gemm_q`` and is cached keeps the path it was first
compiled with.  Call the path module explicitly (one network function per path) if the path can
change between processes.

Layout
------
* Activations NHWC without N: ``x[H, W, C]``, H = time frames, W = frequency bins, C = channels,
  C-contiguous (typically ``arena[off:off + H*W*C].reshape((H, W, C))``).  1-D for FC / add.
* GEMM: ``x[M, K]`` C-contiguous, ``y[M, N]``; packed weights are a 1-D array of dtype
  ``PACKED_DTYPE`` (path specific: int8 for portable / vnni, int16 for avx2) from
  ``pack_gemm_weights(w_nk)`` where ``w_nk[N, K]`` (int8) has one row per output channel;
  ``packed_size(K, N)`` gives its length.  Conv weights
  ONNX ``[Cout, Cin, KH, KW]`` -> ``pack_conv_weights`` (K order ``(kh, kw, cin)``, matching
  ``im2col``).  Depthwise: ``pack_depthwise_weights([C, 1, KH, KW]) -> [KH, KW, C]``.
* ``w_sum[N]`` int32 = ``weight_sums(w_nk)``, used for the input-zero-point correction
  ``acc = sum_k x*w - x_zp * w_sum[n] + bias[n]`` (exact with padding because im2col fills pads
  with ``x_zp``).
* Every producer computes only output rows ``h_out_start <= h < h_out_stop`` (``m_start..m_stop``
  for GEMM) so streaming can compute just the newest rows.
* ``work``: int32 1-D scratch, at least ``work_size(max(K, C))`` elements; ``col``: im2col buffer
  (dtype of x, 1-D, at least ``(h_out_stop - h_out_start) * Wo * KH * KW * Cin``).

Output stage (all integer producers): ``bias`` int32[N], ``rq_mode`` (``RQ_FLOAT`` = float32
per-channel multiplier, round half to even, onnxruntime's rule; ``RQ_TFLITE`` = TFLite fixed-point
``MultiplyByQuantizedMultiplier``; ``RQ_NONE`` = raw int32), ``rq_scale`` float32[N],
``rq_mult`` int32[N], ``rq_shift`` int32[N] (unused arrays may be any int32/float32 arrays of
length N), ``y_zp``, and ``qmin, qmax``: ReLU / ReLU6 / clamp are fused as these bounds.
Every producer returns ``(vmin, vmax)`` (float64 holding integers): the range of the rounded,
pre-clamp values in output quantization steps without the zero point (fused max reduction for
dynamic scales; saturation happened iff ``vmax + y_zp > qmax`` or ``vmin + y_zp < qmin``; for
``RQ_NONE`` the raw accumulator range).

Precisions: x uint8 / int8 (int8 path) or int16 (int16 path) x int8 weights, int32 accumulate.
Overflow bounds (int32 accumulation, all paths): 8-bit x: |x*w| <= 255*128 = 32640, exact for
K <= 65793; int16 x: |x*w| <= 2**22, exact for K <= 511 (32767*127*516 < 2**31 holds only for
symmetric weights, so the bound used is the strict one).  Larger K raises ValueError.  The final
``acc + bias - x_zp * w_sum`` is formed in int32: keep ``|sum (x - x_zp) * w + bias| < 2**31``.

Kernel signatures (integer; same in every path)
-----------------------------------------------
``gemm_q(x, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp, qmin, qmax,
y, m_start, m_stop, work)``
``fully_connected_q(x1d, x_zp, wp, w_sum, bias, rq_mode, rq_scale, rq_mult, rq_shift, y_zp,
qmin, qmax, y1d, work)``
``pointwise_conv_q(x, x_zp, wp, w_sum, bias, rq..., y_zp, qmin, qmax, y, h_out_start,
h_out_stop, work)`` (1x1, stride 1, no pad)
``conv2d_q(x, x_zp, wp, w_sum, bias, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
pad_right, col, rq..., y_zp, qmin, qmax, y, h_out_start, h_out_stop, work)``
``depthwise_conv_q(x, x_zp, wd, bias, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left,
pad_right, rq..., y_zp, qmin, qmax, y, h_out_start, h_out_stop, work)``
``avg_pool_q(x, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, qmin, qmax,
y, h_out_start, h_out_stop, work)`` (TFLite rounding, same in/out qparams)
``global_avg_pool_q(x, x_zp, h_start, h_stop, scale, y_zp, qmin, qmax, y1d, work)``,
``sum_rows_i32(x, h_start, h_stop, acc)``
``add_q(a, a_zp, a_scale, b, b_zp, b_scale, y_zp, qmin, qmax, y)`` (1-D), ``clamp_q(x, qmin,
qmax, y)``
``requantize(acc2d, bias, rq..., y_zp, qmin, qmax, y2d)``
``quantize_f32(x, scale, zp, qmin, qmax, y) -> (max|x|, n_saturated)``,
``dequantize(xq, scale, zp, y) -> max|y|``, ``max_abs_f32(x)``, ``max_abs_int(x, zp)``
(where ``rq...`` = ``rq_mode, rq_scale, rq_mult, rq_shift``).

fp32 path: ``gemm_f32(x, wp, bias, lo, hi, y, m_start, m_stop)``, ``fully_connected_f32``,
``pointwise_conv_f32``, ``conv2d_f32(x, wp, bias, kh, kw, sh, sw, pt, pb, pl, pr, col, lo, hi, y,
h0, h1)``, ``depthwise_conv_f32(..., lo, hi, y, h0, h1, work_f32)``, ``avg_pool_f32``,
``add_f32`` (weights from ``pack_gemm_weights_f32`` / ``pack_depthwise_weights_f32``).

Load-time helpers (plain Python): ``pack_gemm_weights``, ``pack_conv_weights``,
``pack_depthwise_weights``, ``weight_sums``, ``quantize_multiplier(s)``, ``work_size``,
``packed_size``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from ._cpu import ENV_VAR, PATHS, best_path, host_cpu_features, path_supported, select_path
from .fp32 import (
    add_f32,
    avg_pool_f32,
    conv2d_f32,
    depthwise_conv_f32,
    fully_connected_f32,
    gemm_f32,
    pack_gemm_weights_f32,
    pointwise_conv_f32,
)
from .im2col import conv_out_size, im2col
from .layers import (
    add_q,
    avg_pool_q,
    clamp_q,
    depthwise_conv_q,
    global_avg_pool_q,
    pack_depthwise_weights,
    sum_rows_i32,
)
from .requant import (
    RQ_FLOAT,
    RQ_NONE,
    RQ_TFLITE,
    dequantize,
    max_abs_f32,
    max_abs_int,
    multiply_by_quantized_multiplier,
    quantize_f32,
    quantize_multiplier,
    quantize_multipliers,
    requantize,
)

MAX_K_8BIT = 65793  # (2**31 - 1) // (255 * 128)
WORK_MIN = 512


def work_size(n: int) -> int:
    """Elements of the int32 ``work`` scratch a kernel needs, ``n = max(K, C_in, C_out)`` of the
    layer (GEMM reduction length or channel count), valid for every path."""
    return WORK_MIN + 24 * (int(n) + 4)


def weight_sums(w_nk: np.ndarray) -> np.ndarray:
    """Per-output-channel sums of int8 weights ``[N, K]`` (int32), for the zero-point term."""
    return np.asarray(w_nk, dtype=np.int64).sum(axis=1).astype(np.int32)


def conv_weights_nk(w_oihw: np.ndarray) -> np.ndarray:
    """ONNX conv weights ``[Cout, Cin, KH, KW]`` -> GEMM rows ``[Cout, KH*KW*Cin]`` (im2col
    order)."""
    w = np.asarray(w_oihw)
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))


def pack_depthwise_weights_f32(w_c1hw: np.ndarray) -> np.ndarray:
    """float32 depthwise weights ``[C, 1, KH, KW]`` -> 1-D ``[KH, KW, C]``."""
    w = np.asarray(w_c1hw, dtype=np.float32)
    return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)).reshape(-1).copy()


def path_module(path: str) -> ModuleType:
    """The kernel module of ``path`` (``portable``, ``avx2`` or ``vnni``)."""
    if path not in PATHS:
        raise ValueError(f"unknown kernel path {path!r}")
    return importlib.import_module(f"{__name__}.{path}")


KERNEL_PATH: str = select_path()
_impl = path_module(KERNEL_PATH)

pack_gemm_weights = _impl.pack_gemm_weights
PACKED_DTYPE = _impl.PACKED_DTYPE
packed_size = _impl.packed_size
gemm_q = _impl.gemm_q
fully_connected_q = _impl.fully_connected_q
pointwise_conv_q = _impl.pointwise_conv_q
conv2d_q = _impl.conv2d_q


def pack_conv_weights(w_oihw: np.ndarray) -> np.ndarray:
    """Pack ONNX int8 conv weights ``[Cout, Cin, KH, KW]`` for ``conv2d_q`` of the chosen path."""
    return pack_gemm_weights(conv_weights_nk(w_oihw))


__all__ = [
    "ENV_VAR", "PATHS", "KERNEL_PATH", "PACKED_DTYPE", "MAX_K_8BIT", "RQ_FLOAT", "RQ_NONE",
    "RQ_TFLITE",
    "add_f32", "add_q", "avg_pool_f32", "avg_pool_q", "best_path", "clamp_q", "conv2d_f32",
    "conv2d_q", "conv_out_size", "conv_weights_nk", "depthwise_conv_f32", "depthwise_conv_q",
    "dequantize", "fully_connected_f32", "fully_connected_q", "gemm_f32", "gemm_q",
    "global_avg_pool_q", "host_cpu_features", "im2col", "max_abs_f32", "max_abs_int",
    "multiply_by_quantized_multiplier", "pack_conv_weights", "pack_depthwise_weights",
    "pack_depthwise_weights_f32", "pack_gemm_weights", "pack_gemm_weights_f32", "packed_size",
    "path_module", "path_supported", "pointwise_conv_f32", "pointwise_conv_q", "quantize_f32",
    "quantize_multiplier", "quantize_multipliers", "requantize", "select_path", "sum_rows_i32",
    "weight_sums", "work_size",
]
