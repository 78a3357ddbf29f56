"""The whole network in ONE numba call.

A plan (``voxquant.models.plan``) is flattened into arrays: one row of integer
parameters per layer (op code, tensor ids, shapes, strides, pads, weight and
channel offsets), a per-layer precision code (the ``PrecisionPlan``), arena
offsets per tensor, and per-tensor quantization state. :func:`run_network`
walks the layers in a jitted loop; no Python runs between layers.

Precision codes: 0 = fp32, 1 = int8, 2 = int16. Every tensor has one element
offset in the arena and can be held in any of three typed regions (fp32,
int8, int16 views of the same byte buffer); a layer converts its input when
its precision differs from its producer's (only at precision boundaries).

Activation scales (per tensor, per window), chosen by ``qmode``:

* 0 exact per window: the producer stores real values in the fp32 region and
  their min/max in the same loop, then one light pass quantizes;
* 1 running: scale from an EMA of previous windows' min/max, quantized directly
  in the store; this window's min/max is gathered in the same store and
  saturated values are counted;
* 2 static: frozen scale (calibration, or a full-integer model's own).

A full-integer TFLite layer (``LP_FIXED``) in int8 uses TFLite's fixed-point
requantization (``MultiplyByQuantizedMultiplier``) so results are bit-exact.

These kernels are written here (not taken from the kernels package) so the
executor has one consistent set of row-range kernels that incremental mode
can call on a few output rows at a time.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.experimental import structref
from numba.extending import intrinsic

OP_CONV, OP_AVGPOOL, OP_MAXPOOL, OP_ADD, OP_SOFTMAX = 1, 2, 3, 4, 5
P_F32, P_I8, P_I16 = 0, 1, 2
Q_EXACT, Q_RUNNING, Q_STATIC = 0, 1, 2

(LP_OP, LP_IN0, LP_IN1, LP_OUT, LP_H, LP_W, LP_C, LP_HO, LP_WO, LP_CO, LP_KH, LP_KW, LP_SH,
 LP_SW, LP_PT, LP_PL, LP_G, LP_DH, LP_DW, LP_WOFF, LP_COFF, LP_FIXED, LP_QAMIN,
 LP_QAMAX, LP_PKI, LP_PKF, LP_PKD) = range(27)
N_LP = 27  # LP_PKI / LP_PKF / LP_PKD: GEMM-packed int8-as-int16 / fp32 / int16-as-float64
# weight offsets (-1: none)

# observer state columns per tensor
OS_EMA_MIN, OS_EMA_MAX, OS_N, OS_WIN_MIN, OS_WIN_MAX, OS_SAT, OS_SEEN = range(7)
N_OS = 7

# ring state columns per tensor (incremental mode; RING_ROWS == 0: not a ring)
# RING_VALID: which precision copies of its cached rows the last call left valid
# RING_CAP: physical rows in the arena (more than RING_ROWS, see _advance_rings)
RING_BASE, RING_START, RING_ROWS, RING_VALID, RING_CAP = range(5)
N_RING = 5


@njit(cache=True, inline="always")
def _qrange(p):
    if p == P_I8:
        return -128, 127
    return -32768, 32767


@njit(cache=True)
def qparams_from_range(mn, mx, qmin, qmax):
    """Asymmetric (scale, zero point) covering [min(mn,0), max(mx,0)]."""
    mn = min(mn, 0.0)
    mx = max(mx, 0.0)
    scale = (mx - mn) / (qmax - qmin)
    if not scale > 1e-12:
        scale = 1e-12 if mx - mn > 0 else 1.0
    zp = qmin - int(math.floor(mn / scale + 0.5))
    zp = max(qmin, min(qmax, zp))
    return scale, zp


@njit(cache=True, inline="always")
def _srdhm(a, b):
    if a == b and a == -2147483648:
        return 2147483647
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else (1 - (1 << 30))
    v = ab + nudge
    if v >= 0:
        return v >> 31
    return -((-v) >> 31)


@njit(cache=True, inline="always")
def _rdbpot(x, exponent):
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


@njit(cache=True, inline="always")
def mbqm_single(x, mult, shift, reduced):
    """TFLite single-rounding requantization (its int64-accumulator form when ``reduced``)."""
    if reduced:
        m = (mult + (1 << 15)) >> 16 if mult < 0x7FFF0000 else 0x7FFF
        total = 15 - shift
    else:
        m = mult
        total = 31 - shift
    return (x * m + (1 << (total - 1))) >> total


@njit(cache=True, inline="always")
def mbqm(x, mult, shift):
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding, int32 saturating)."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    v = x * (1 << left)
    if v > 2147483647:
        v = 2147483647
    elif v < -2147483648:
        v = -2147483648
    return _rdbpot(_srdhm(v, mult), right)


@njit(cache=True, inline="always")
def _mbqm_vec(x, mult, shift):
    """Branch-free ``mbqm`` for int32-range x and a positive multiplier (vectorizes).

    Same result as :func:`mbqm`: saturating left shift, rounding doubling high mul
    (division truncating toward zero), rounding divide by a power of two.
    """
    left = max(shift, 0)
    right = max(-shift, 0)
    v = min(max(x << left, -2147483648), 2147483647)
    ab = v * mult
    nudge = (1 << 30) if ab >= 0 else (1 - (1 << 30))
    t = ab + nudge
    hi = (t + ((t >> 63) & 0x7FFFFFFF)) >> 31  # truncating division by 2^31
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (hi < 0)
    return (hi >> right) + ((hi & mask) > threshold)


# ----------------------------------------------------------------------------- vector helpers
#
# Plain numba loops over these arrays stay scalar here (LLVM does not vectorize them), so the
# depthwise tap update, the exact-mode store and the quantize pass are written as vector IR:
# 8 lanes per step; ``n8`` counts groups of 8 elements (callers handle the remainder).


def _ptr(builder, addr, ty):
    return builder.inttoptr(addr, ty.as_pointer())


@intrinsic
def _madd_i8_v(typingctx, x_addr, w_addr, acc_addr, n8, zp):
    """acc_i32[j] += (int32(x_i8[j]) - zp) * int32(w_i8[j]) for 8 * n8 elements."""
    sig = types.void(types.intp, types.intp, types.intp, types.intp, types.int32)

    def codegen(context, builder, signature, args):
        xa, wa, aa, n, z = args
        i8, i32 = ir.IntType(8), ir.IntType(32)
        intp = xa.type
        v8i8, v8i32 = ir.VectorType(i8, 8), ir.VectorType(i32, 8)
        zv = builder.insert_element(ir.Constant(v8i32, None), z, ir.Constant(i32, 0))
        zv = builder.shuffle_vector(zv, zv, ir.Constant(v8i32, [0] * 8))
        with cgutils.for_range(builder, n) as loop:
            k = loop.index
            o8 = builder.mul(k, ir.Constant(intp, 8))
            x = builder.sext(builder.load(_ptr(builder, builder.add(xa, o8), v8i8), align=1),
                             v8i32)
            w = builder.sext(builder.load(_ptr(builder, builder.add(wa, o8), v8i8), align=1),
                             v8i32)
            ap = _ptr(builder, builder.add(aa, builder.mul(k, ir.Constant(intp, 32))), v8i32)
            acc = builder.load(ap, align=4)
            builder.store(builder.add(acc, builder.mul(builder.sub(x, zv), w)), ap, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _madd_f32_v(typingctx, x_addr, w_addr, acc_addr, n8):
    """acc_f32[j] += x[j] * w[j] for 8 * n8 elements (one FMA, as the fastmath scalar loop)."""
    sig = types.void(types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        xa, wa, aa, n = args
        intp = xa.type
        v8f = ir.VectorType(ir.FloatType(), 8)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]), "llvm.fma.v8f32")
        with cgutils.for_range(builder, n) as loop:
            o = builder.mul(loop.index, ir.Constant(intp, 32))
            x = builder.load(_ptr(builder, builder.add(xa, o), v8f), align=4)
            w = builder.load(_ptr(builder, builder.add(wa, o), v8f), align=4)
            ap = _ptr(builder, builder.add(aa, o), v8f)
            builder.store(builder.call(fma, [x, w, builder.load(ap, align=4)]), ap, align=4)
        return context.get_dummy_value()

    return sig, codegen


def _splat(builder, val, vty):
    i32 = ir.IntType(32)
    v = builder.insert_element(ir.Constant(vty, None), val, ir.Constant(i32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, vty.count), [0] * vty.count))


@intrinsic
def _store_exact_v(typingctx, acc_addr, ms_addr, b_addr, out_addr, n8, amin, amax, mm_addr):
    """out_f32 = clamp(float(acc_i32) * ms + b, amin, amax) for 8 * n8 elements; the running
    lane-wise min / max vectors live in ``mm_addr`` (float32[16]) and are updated."""
    sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.float32,
                     types.float32, types.intp)

    def codegen(context, builder, signature, args):
        aa, ma, ba, oa, n, lo, hi, mma = args
        intp = aa.type
        f32 = ir.FloatType()
        v8f, v8i = ir.VectorType(f32, 8), ir.VectorType(ir.IntType(32), 8)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]), "llvm.fma.v8f32")
        lov, hiv = _splat(builder, lo, v8f), _splat(builder, hi, v8f)
        mnp = _ptr(builder, mma, v8f)
        mxp = _ptr(builder, builder.add(mma, ir.Constant(intp, 32)), v8f)
        mn = cgutils.alloca_once_value(builder, builder.load(mnp, align=4))
        mx = cgutils.alloca_once_value(builder, builder.load(mxp, align=4))
        with cgutils.for_range(builder, n) as loop:
            o = builder.mul(loop.index, ir.Constant(intp, 32))
            a = builder.sitofp(builder.load(_ptr(builder, builder.add(aa, o), v8i), align=4), v8f)
            m = builder.load(_ptr(builder, builder.add(ma, o), v8f), align=4)
            b = builder.load(_ptr(builder, builder.add(ba, o), v8f), align=4)
            v = builder.call(fma, [a, m, b])
            v = builder.select(builder.fcmp_ordered(">", v, lov), v, lov)
            v = builder.select(builder.fcmp_ordered("<", v, hiv), v, hiv)
            builder.store(v, _ptr(builder, builder.add(oa, o), v8f), align=4)
            cm, cx = builder.load(mn), builder.load(mx)
            builder.store(builder.select(builder.fcmp_ordered("<", v, cm), v, cm), mn)
            builder.store(builder.select(builder.fcmp_ordered(">", v, cx), v, cx), mx)
        builder.store(builder.load(mn), mnp, align=4)
        builder.store(builder.load(mx), mxp, align=4)
        return context.get_dummy_value()

    return sig, codegen


def _hsum_i64(builder, v):
    """Sum of the 8 int32 lanes of ``v`` as an int64 (codegen helper)."""
    i32, i64 = ir.IntType(32), ir.IntType(64)
    total = ir.Constant(i64, 0)
    for j in range(8):
        total = builder.add(total, builder.sext(builder.extract_element(v, ir.Constant(i32, j)),
                                                i64))
    return total


def _make_quantize_v(bits: int):
    @intrinsic
    def quantize_v(typingctx, f_addr, q_addr, n8, inv, lo, hi, z):
        """q = int(clamp(floor(x * inv + 0.5), lo, hi) + z) for 8 * n8 elements; returns
        how many were clamped (exactly :func:`_quantize_fast`'s arithmetic)."""
        sig = types.int64(types.intp, types.intp, types.intp, types.float32, types.float32,
                          types.float32, types.float32)

        def codegen(context, builder, signature, args):
            fa, qa, n, inv, lo, hi, z = args
            intp = fa.type
            f32, i32 = ir.FloatType(), ir.IntType(32)
            v8f, v8i = ir.VectorType(f32, 8), ir.VectorType(i32, 8)
            vq = ir.VectorType(ir.IntType(bits), 8)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]), "llvm.fma.v8f32")
            floor = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v8f, [v8f]), "llvm.floor.v8f32")
            invv, lov, hiv, zv = (_splat(builder, a, v8f) for a in (inv, lo, hi, z))
            half = ir.Constant(v8f, [0.5] * 8)
            satv = cgutils.alloca_once_value(builder, ir.Constant(v8i, None))
            with cgutils.for_range(builder, n) as loop:
                k = loop.index
                x = builder.load(_ptr(builder, builder.add(fa, builder.mul(
                    k, ir.Constant(intp, 32))), v8f), align=4)
                r = builder.call(floor, [builder.call(fma, [x, invv, half])])
                out = builder.or_(builder.fcmp_ordered("<", r, lov),
                                  builder.fcmp_ordered(">", r, hiv))
                builder.store(builder.sub(builder.load(satv), builder.sext(out, v8i)), satv)
                c = builder.select(builder.fcmp_ordered(">", r, lov), r, lov)
                c = builder.select(builder.fcmp_ordered("<", c, hiv), c, hiv)
                q = builder.trunc(builder.fptosi(builder.fadd(c, zv), v8i), vq)
                builder.store(q, _ptr(builder, builder.add(qa, builder.mul(
                    k, ir.Constant(intp, bits))), vq), align=1)
            return _hsum_i64(builder, builder.load(satv))

        return sig, codegen

    return quantize_v


_quantize_v8 = _make_quantize_v(8)
_quantize_v16 = _make_quantize_v(16)


@intrinsic
def _minmax_i32_v(typingctx, addr, stride, count, min_addr, max_addr):
    """Lane-wise min and max of ``count`` int32[8] vectors ``stride`` bytes apart."""
    sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        a, st, n, mna, mxa = args
        i32 = ir.IntType(32)
        v8i = ir.VectorType(i32, 8)
        mn = cgutils.alloca_once_value(builder, ir.Constant(v8i, [2147483647] * 8))
        mx = cgutils.alloca_once_value(builder, ir.Constant(v8i, [-2147483648] * 8))
        with cgutils.for_range(builder, n) as loop:
            v = builder.load(_ptr(builder, builder.add(a, builder.mul(loop.index, st)), v8i),
                             align=4)
            cm, cx = builder.load(mn), builder.load(mx)
            builder.store(builder.select(builder.icmp_signed("<", v, cm), v, cm), mn)
            builder.store(builder.select(builder.icmp_signed(">", v, cx), v, cx), mx)
        builder.store(builder.load(mn), _ptr(builder, mna, v8i), align=4)
        builder.store(builder.load(mx), _ptr(builder, mxa, v8i), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _make_acc_quant(nvec: int, clamp_hi: bool):
    """int8 outputs straight from int32 accumulators: ``count`` pixels (``acc_stride`` /
    ``q_stride`` bytes apart) of ``8 * nvec`` channels each. The arithmetic of
    :func:`_store_exact_v` followed by :func:`_quantize_fast` (same float32 value, never
    stored); returns how many were clamped. ``clamp_hi=False``: the activation has no upper
    bound (min(v, inf) is v). Channel count fixed at compile time: scales and biases stay in
    registers over the pixel loop."""

    @intrinsic
    def acc_quant(typingctx, acc_addr, acc_stride, q_addr, q_stride, count, ms_addr, b_addr,
                  amin, amax, inv, lo, hi, z):
        sig = types.int64(types.intp, types.intp, types.intp, types.intp, types.intp,
                          types.intp, types.intp, types.float32, types.float32, types.float32,
                          types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            aa, ast, qa, qst, n, ma, ba, lo_a, hi_a, inv, lo, hi, z = args
            intp = aa.type
            f32, i32 = ir.FloatType(), ir.IntType(32)
            v8f, v8i, v8q = ir.VectorType(f32, 8), ir.VectorType(i32, 8), ir.VectorType(
                ir.IntType(8), 8)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]), "llvm.fma.v8f32")
            floor = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v8f, [v8f]), "llvm.floor.v8f32")
            lov_a, hiv_a = _splat(builder, lo_a, v8f), _splat(builder, hi_a, v8f)
            invv, lov, hiv, zv = (_splat(builder, a, v8f) for a in (inv, lo, hi, z))
            half = ir.Constant(v8f, [0.5] * 8)
            ms = [builder.load(_ptr(builder, builder.add(ma, ir.Constant(intp, 32 * g)), v8f),
                               align=4) for g in range(nvec)]
            bs = [builder.load(_ptr(builder, builder.add(ba, ir.Constant(intp, 32 * g)), v8f),
                               align=4) for g in range(nvec)]
            satv = cgutils.alloca_once_value(builder, ir.Constant(v8i, None))
            with cgutils.for_range(builder, n) as px:
                ap = builder.add(aa, builder.mul(px.index, ast))
                qp = builder.add(qa, builder.mul(px.index, qst))
                for g in range(nvec):
                    a = builder.sitofp(builder.load(_ptr(builder, builder.add(
                        ap, ir.Constant(intp, 32 * g)), v8i), align=4), v8f)
                    v = builder.call(fma, [a, ms[g], bs[g]])
                    v = builder.select(builder.fcmp_ordered(">", v, lov_a), v, lov_a)
                    if clamp_hi:
                        v = builder.select(builder.fcmp_ordered("<", v, hiv_a), v, hiv_a)
                    r = builder.call(floor, [builder.call(fma, [v, invv, half])])
                    c = builder.select(builder.fcmp_ordered(">", r, lov), r, lov)
                    c = builder.select(builder.fcmp_ordered("<", c, hiv), c, hiv)
                    out = builder.fcmp_unordered("!=", c, r)  # clamped (r is never NaN)
                    builder.store(builder.sub(builder.load(satv), builder.sext(out, v8i)), satv)
                    q = builder.trunc(builder.fptosi(builder.fadd(c, zv), v8i), v8q)
                    builder.store(q, _ptr(builder, builder.add(qp, ir.Constant(intp, 8 * g)),
                                          v8q), align=1)
            return _hsum_i64(builder, builder.load(satv))

        return sig, codegen

    return acc_quant


_aq1, _aq1h, _aq2, _aq2h = (_make_acc_quant(n, h) for n in (1, 2) for h in (False, True))


@njit(cache=True, inline="always")
def _acc_quant_chunk(nvec, clamp_hi, aa, ast, qa, qst, n, ma, ba, amn, amx, inv, lo, hi, z):
    if nvec == 2:
        if clamp_hi:
            return _aq2h(aa, ast, qa, qst, n, ma, ba, amn, amx, inv, lo, hi, z)
        return _aq2(aa, ast, qa, qst, n, ma, ba, amn, amx, inv, lo, hi, z)
    if clamp_hi:
        return _aq1h(aa, ast, qa, qst, n, ma, ba, amn, amx, inv, lo, hi, z)
    return _aq1(aa, ast, qa, qst, n, ma, ba, amn, amx, inv, lo, hi, z)


@njit(cache=True, inline="always")
def _store_exact(acc, ab, mscale, c0, bias_f, cb, F, ob, n, amn, amx, mm):
    """F[ob:ob+n] = clamp(float(acc[ab:]) * mscale[c0:] + bias_f[cb:]); min/max into mm."""
    ab, c0, cb, ob, n = np.int64(ab), np.int64(c0), np.int64(cb), np.int64(ob), np.int64(n)
    n8 = n // 8 if acc.itemsize == 4 else 0
    if n8 > 0:
        _store_exact_v(acc.ctypes.data + ab * 4, mscale.ctypes.data + c0 * 4,
                       bias_f.ctypes.data + cb * 4, F.ctypes.data + ob * 4, n8, amn, amx,
                       mm.ctypes.data)
    for c in range(n8 * 8, n):
        v = np.float32(acc[ab + c]) * mscale[c0 + c] + bias_f[cb + c]
        v = min(max(v, amn), amx)
        mm[0] = min(mm[0], v)
        mm[8] = max(mm[8], v)
        F[ob + c] = v


@njit(cache=True, inline="always")
def _mm_init(mm):
    for j in range(8):
        mm[j] = np.inf
        mm[8 + j] = -np.inf


@njit(cache=True, inline="always")
def _mm_reduce(mm, mn, mx):
    for j in range(8):
        mn = min(mn, mm[j])
        mx = max(mx, mm[8 + j])
    return mn, mx


def _make_dw_pixel(is_int: bool, nvec: int):
    """Depthwise pixel, ``8 * nvec`` channels: acc[c] = sum over the valid tap rectangle of
    x[c] * w[c] (int8: (x - zp) * w in int32; float: FMA), all channels held in registers.

    Taps are walked ky-major then kx, the order of the scalar loop, so sums are the same.
    """

    @intrinsic
    def dw_pixel(typingctx, x_addr, x_row, x_col, w_addr, w_row, w_col, nky, nkx, zp,
                 acc_addr):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp,
                         types.intp, types.intp, types.intp, types.int32, types.intp)

        def codegen(context, builder, signature, args):
            xa, xr, xc, wa, wr, wc, ny, nx, z, aa = args
            intp = xa.type
            i32 = ir.IntType(32)
            if is_int:
                ev = ir.VectorType(ir.IntType(8), 8)
                av = ir.VectorType(i32, 8)
                esz = 8
                zv = _splat(builder, z, av)
            else:
                ev = av = ir.VectorType(ir.FloatType(), 8)
                esz = 32
                fma = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(av, [av, av, av]), "llvm.fma.v8f32")
            accs = [cgutils.alloca_once_value(builder, ir.Constant(av, None))
                    for _ in range(nvec)]
            with cgutils.for_range(builder, ny) as yl:
                xy = builder.add(xa, builder.mul(yl.index, xr))
                wy = builder.add(wa, builder.mul(yl.index, wr))
                with cgutils.for_range(builder, nx) as xl:
                    xp = builder.add(xy, builder.mul(xl.index, xc))
                    wp = builder.add(wy, builder.mul(xl.index, wc))
                    for v in range(nvec):
                        o = ir.Constant(intp, v * esz)
                        x = builder.load(_ptr(builder, builder.add(xp, o), ev), align=1)
                        w = builder.load(_ptr(builder, builder.add(wp, o), ev), align=1)
                        a = builder.load(accs[v])
                        if is_int:
                            x = builder.sub(builder.sext(x, av), zv)
                            a = builder.add(a, builder.mul(x, builder.sext(w, av)))
                        else:
                            a = builder.call(fma, [x, w, a])
                        builder.store(a, accs[v])
            for v in range(nvec):
                ap = _ptr(builder, builder.add(aa, ir.Constant(intp, 32 * v)), av)
                builder.store(builder.load(accs[v]), ap, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return dw_pixel


_dwi1, _dwi2, _dwi4, _dwi8 = (_make_dw_pixel(True, n) for n in (1, 2, 4, 8))
_dwf1, _dwf2, _dwf4, _dwf8 = (_make_dw_pixel(False, n) for n in (1, 2, 4, 8))


def _make_dw_pixel16(nvec: int):
    """int16 depthwise pixel, ``4 * nvec`` channels: exact sums of (x - zp) * w in float64
    FMA lanes (|term| < 2**31), written to int64 accumulators."""

    @intrinsic
    def dw_pixel(typingctx, x_addr, x_row, x_col, w_addr, w_row, w_col, nky, nkx, zp,
                 acc_addr):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp,
                         types.intp, types.intp, types.intp, types.int32, types.intp)

        def codegen(context, builder, signature, args):
            xa, xr, xc, wa, wr, wc, ny, nx, z, aa = args
            intp = xa.type
            ev = ir.VectorType(ir.IntType(16), 4)
            av = ir.VectorType(ir.DoubleType(), 4)
            zv = _splat(builder, builder.sitofp(z, ir.DoubleType()), av)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(av, [av, av, av]), "llvm.fma.v4f64")
            accs = [cgutils.alloca_once_value(builder, ir.Constant(av, None))
                    for _ in range(nvec)]
            with cgutils.for_range(builder, ny) as yl:
                xy = builder.add(xa, builder.mul(yl.index, xr))
                wy = builder.add(wa, builder.mul(yl.index, wr))
                with cgutils.for_range(builder, nx) as xl:
                    xp = builder.add(xy, builder.mul(xl.index, xc))
                    wp = builder.add(wy, builder.mul(xl.index, wc))
                    for v in range(nvec):
                        o = ir.Constant(intp, v * 8)
                        x = builder.load(_ptr(builder, builder.add(xp, o), ev), align=2)
                        w = builder.load(_ptr(builder, builder.add(wp, o), ev), align=2)
                        x = builder.fsub(builder.sitofp(x, av), zv)
                        w = builder.sitofp(w, av)
                        builder.store(builder.call(fma, [x, w, builder.load(accs[v])]),
                                      accs[v])
            i64v = ir.VectorType(ir.IntType(64), 4)
            for v in range(nvec):
                ap = _ptr(builder, builder.add(aa, ir.Constant(intp, 32 * v)), i64v)
                builder.store(builder.fptosi(builder.load(accs[v]), i64v), ap, align=8)
            return context.get_dummy_value()

        return sig, codegen

    return dw_pixel


_dws1, _dws8 = _make_dw_pixel16(1), _make_dw_pixel16(8)


@njit(cache=True, inline="always")
def _dw_pixel(is_int, x_addr, x_row, x_col, esz, w_addr, w_row, w_col, wsz, nky, nkx, zp,
              acc_addr, n_ch):
    """Run the depthwise pixel kernels over ``n_ch`` (a multiple of 8) channels."""
    c = 0
    while c < n_ch:
        left = (n_ch - c) // 8
        xa = x_addr + c * esz
        wa = w_addr + c * wsz
        aa = acc_addr + c * 4
        if left >= 8:
            if is_int:
                _dwi8(xa, x_row, x_col, wa, w_row, w_col, nky, nkx, zp, aa)
            else:
                _dwf8(xa, x_row, x_col, wa, w_row, w_col, nky, nkx, zp, aa)
            c += 64
        elif left >= 4:
            if is_int:
                _dwi4(xa, x_row, x_col, wa, w_row, w_col, nky, nkx, zp, aa)
            else:
                _dwf4(xa, x_row, x_col, wa, w_row, w_col, nky, nkx, zp, aa)
            c += 32
        elif left >= 2:
            if is_int:
                _dwi2(xa, x_row, x_col, wa, w_row, w_col, nky, nkx, zp, aa)
            else:
                _dwf2(xa, x_row, x_col, wa, w_row, w_col, nky, nkx, zp, aa)
            c += 16
        else:
            if is_int:
                _dwi1(xa, x_row, x_col, wa, w_row, w_col, nky, nkx, zp, aa)
            else:
                _dwf1(xa, x_row, x_col, wa, w_row, w_col, nky, nkx, zp, aa)
            c += 8


@njit(cache=True, inline="always")
def _dw_rect(oh, ow, H, W, KH, KW, SH, SW, PT, PL, DH, DW):
    """Valid tap rectangle [ky0, ky1) x [kx0, kx1) of one output pixel."""
    y0 = oh * SH - PT
    x0 = ow * SW - PL
    ky0 = 0
    while ky0 < KH and y0 + ky0 * DH < 0:
        ky0 += 1
    ky1 = KH
    while ky1 > ky0 and y0 + (ky1 - 1) * DH >= H:
        ky1 -= 1
    kx0 = 0
    while kx0 < KW and x0 + kx0 * DW < 0:
        kx0 += 1
    kx1 = KW
    while kx1 > kx0 and x0 + (kx1 - 1) * DW >= W:
        kx1 -= 1
    return y0, x0, ky0, ky1, kx0, kx1


# ----------------------------------------------------------------------------- conv


@njit(cache=True, inline="always")
def _accumulate4_f32(X, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT, PL, DH, DW, CO, oh, ow,
                     acc):
    """fp32 G == 1 conv: 4 neighbouring output pixels at once (each weight load used 4x).

    Unsigned indices: numba then skips negative-index wraparound and LLVM vectorizes.
    Out-of-range taps read a valid address and are multiplied by 0.
    """
    uco = np.uint64(CO)
    uc = np.uint64(C)
    for c in range(np.uint64(4) * uco):
        acc[c] = 0.0
    for ky in range(KH):
        iy = oh * SH - PT + ky * DH
        if iy < 0 or iy >= H:
            continue
        for kx in range(KW):
            ix0 = ow * SW - PL + kx * DW
            rb = in_off + iy * W * C
            v0 = 0 <= ix0 < W
            v1 = 0 <= ix0 + SW < W
            v2 = 0 <= ix0 + 2 * SW < W
            v3 = 0 <= ix0 + 3 * SW < W
            u0 = np.uint64(rb + ix0 * C if v0 else in_off)
            u1 = np.uint64(rb + (ix0 + SW) * C if v1 else in_off)
            u2 = np.uint64(rb + (ix0 + 2 * SW) * C if v2 else in_off)
            u3 = np.uint64(rb + (ix0 + 3 * SW) * C if v3 else in_off)
            f0 = np.float32(1.0 if v0 else 0.0)
            f1 = np.float32(1.0 if v1 else 0.0)
            f2 = np.float32(1.0 if v2 else 0.0)
            f3 = np.float32(1.0 if v3 else 0.0)
            wb = np.uint64(woff + (ky * KW + kx) * C * CO)
            for ci in range(uc):
                x0 = X[u0 + ci] * f0
                x1 = X[u1 + ci] * f1
                x2 = X[u2 + ci] * f2
                x3 = X[u3 + ci] * f3
                wr = wb + ci * uco
                for co in range(uco):
                    wv = w[wr + co]
                    acc[co] += x0 * wv
                    acc[uco + co] += x1 * wv
                    acc[np.uint64(2) * uco + co] += x2 * wv
                    acc[np.uint64(3) * uco + co] += x3 * wv


@njit(cache=True, inline="always")
def _accumulate1_f32(X, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT, PL, G, DH, DW, CO, oh,
                     ow, acc):
    """fp32 grouped/depthwise conv, one output pixel."""
    cin_g = C // G
    cout_g = CO // G
    if cin_g == 1 and cout_g == 1 and CO % 8 == 0:
        y0, x0, ky0, ky1, kx0, kx1 = _dw_rect(oh, ow, H, W, KH, KW, SH, SW, PT, PL, DH, DW)
        xb = in_off + ((y0 + ky0 * DH) * W + x0 + kx0 * DW) * C
        wb = woff + (ky0 * KW + kx0) * CO
        _dw_pixel(False, X.ctypes.data + xb * 4, DH * W * C * 4, DW * C * 4, 4,
                  w.ctypes.data + wb * 4, KW * CO * 4, CO * 4, 4, ky1 - ky0, kx1 - kx0,
                  np.int32(0), acc.ctypes.data, CO)
        return
    for c in range(np.uint64(CO)):
        acc[c] = 0.0
    for ky in range(KH):
        iy = oh * SH - PT + ky * DH
        if iy < 0 or iy >= H:
            continue
        for kx in range(KW):
            ix = ow * SW - PL + kx * DW
            if ix < 0 or ix >= W:
                continue
            ib = in_off + (iy * W + ix) * C
            wb = woff + (ky * KW + kx) * cin_g * CO
            if cin_g == 1 and cout_g == 1:  # depthwise: unsigned indices, no slices
                ub = np.uint64(ib)
                uw = np.uint64(wb)
                n8 = CO // 8
                _madd_f32_v(X.ctypes.data + ib * 4, w.ctypes.data + wb * 4, acc.ctypes.data, n8)
                for c in range(np.uint64(n8 * 8), np.uint64(CO)):
                    acc[c] += X[ub + c] * w[uw + c]
            else:
                xs = X[ib:ib + C]
                for g in range(G):
                    a = acc[g * cout_g:(g + 1) * cout_g]
                    for ci in range(cin_g):
                        x = xs[g * cin_g + ci]
                        wr = wb + ci * CO + g * cout_g
                        ws = w[wr:wr + cout_g]
                        for co in range(cout_g):
                            a[co] += x * ws[co]


@njit(cache=True, fastmath=True)
def conv_f32_rows(F, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT, PL, G, DH, DW, CO, WO,
                  bias, coff, out_off, r0, r1, amin, amax, acc):
    """fp32 conv (grouped/depthwise too) on output rows [r0, r1); fused bias and clamp.

    ``acc`` needs 4 * CO elements. Every output pixel always goes through the same
    code path (blocks are fixed by column), so row ranges give identical values.
    """
    for oh in range(r0, r1):
        ow = 0
        while ow < WO:
            nb = 4 if (G == 1 and ow + 4 <= WO) else 1
            if nb == 4:
                _accumulate4_f32(F, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT, PL, DH, DW,
                                 CO, oh, ow, acc)
            else:
                _accumulate1_f32(F, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT, PL, G, DH,
                                 DW, CO, oh, ow, acc)
            ob = np.uint64(out_off + (oh * WO + ow) * CO)
            ub = np.uint64(coff)
            for j in range(np.uint64(nb)):
                oj = ob + j * np.uint64(CO)
                aj = j * np.uint64(CO)
                for c in range(np.uint64(CO)):
                    v = acc[aj + c] + bias[ub + c]
                    F[oj + c] = min(max(v, amin), amax)
            ow += nb


@njit(cache=True, inline="always")
def _accumulate4_int(Q, zp_in, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT, PL, DH, DW, CO,
                     oh, ow, acc):
    """Integer G == 1 conv, 4 output pixels: sum((x - zp) * w), padding = real zero."""
    uco = np.uint64(CO)
    uc = np.uint64(C)
    for c in range(np.uint64(4) * uco):
        acc[c] = 0
    zp = np.int32(zp_in)
    one = np.int32(1)
    zero = np.int32(0)
    for ky in range(KH):
        iy = oh * SH - PT + ky * DH
        if iy < 0 or iy >= H:
            continue
        for kx in range(KW):
            ix0 = ow * SW - PL + kx * DW
            rb = in_off + iy * W * C
            v0 = 0 <= ix0 < W
            v1 = 0 <= ix0 + SW < W
            v2 = 0 <= ix0 + 2 * SW < W
            v3 = 0 <= ix0 + 3 * SW < W
            u0 = np.uint64(rb + ix0 * C if v0 else in_off)
            u1 = np.uint64(rb + (ix0 + SW) * C if v1 else in_off)
            u2 = np.uint64(rb + (ix0 + 2 * SW) * C if v2 else in_off)
            u3 = np.uint64(rb + (ix0 + 3 * SW) * C if v3 else in_off)
            f0 = one if v0 else zero
            f1 = one if v1 else zero
            f2 = one if v2 else zero
            f3 = one if v3 else zero
            wb = np.uint64(woff + (ky * KW + kx) * C * CO)
            for ci in range(uc):
                x0 = np.int32((np.int32(Q[u0 + ci]) - zp) * f0)
                x1 = np.int32((np.int32(Q[u1 + ci]) - zp) * f1)
                x2 = np.int32((np.int32(Q[u2 + ci]) - zp) * f2)
                x3 = np.int32((np.int32(Q[u3 + ci]) - zp) * f3)
                wr = wb + ci * uco
                for co in range(uco):
                    wv = np.int32(w[wr + co])
                    acc[co] += x0 * wv
                    acc[uco + co] += x1 * wv
                    acc[np.uint64(2) * uco + co] += x2 * wv
                    acc[np.uint64(3) * uco + co] += x3 * wv


@njit(cache=True, inline="always")
def conv_int_accumulate(Q, zp_in, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT, PL, G, DH, DW,
                        CO, oh, ow, acc):
    """Integer accumulators sum((x - zp) * w) of one output pixel (padding = real 0)."""
    cin_g = C // G
    cout_g = CO // G
    zp32 = np.int32(zp_in)
    if (cin_g == 1 and cout_g == 1 and CO % 8 == 0 and Q.itemsize == 1
            and acc.itemsize == 4):
        y0, x0, ky0, ky1, kx0, kx1 = _dw_rect(oh, ow, H, W, KH, KW, SH, SW, PT, PL, DH, DW)
        xb = in_off + ((y0 + ky0 * DH) * W + x0 + kx0 * DW) * C
        wb = woff + (ky0 * KW + kx0) * CO
        _dw_pixel(True, Q.ctypes.data + xb, DH * W * C, DW * C, 1, w.ctypes.data + wb,
                  KW * CO, CO, 1, ky1 - ky0, kx1 - kx0, zp32, acc.ctypes.data, CO)
        return
    if (cin_g == 1 and cout_g == 1 and CO % 4 == 0 and Q.itemsize == 2
            and acc.itemsize == 8):
        y0, x0, ky0, ky1, kx0, kx1 = _dw_rect(oh, ow, H, W, KH, KW, SH, SW, PT, PL, DH, DW)
        xb = in_off + ((y0 + ky0 * DH) * W + x0 + kx0 * DW) * C
        wb = woff + (ky0 * KW + kx0) * CO
        ny = ky1 - ky0
        nx = kx1 - kx0
        c = 0
        while c < CO:
            xa = Q.ctypes.data + (xb + c) * 2
            wa = w.ctypes.data + (wb + c) * 2
            if CO - c >= 32:
                _dws8(xa, DH * W * C * 2, DW * C * 2, wa, KW * CO * 2, CO * 2, ny, nx, zp32,
                      acc.ctypes.data + c * 8)
                c += 32
            else:
                _dws1(xa, DH * W * C * 2, DW * C * 2, wa, KW * CO * 2, CO * 2, ny, nx, zp32,
                      acc.ctypes.data + c * 8)
                c += 4
        return
    for c in range(np.uint64(CO)):
        acc[c] = 0
    for ky in range(KH):
        iy = oh * SH - PT + ky * DH
        if iy < 0 or iy >= H:
            continue
        for kx in range(KW):
            ix = ow * SW - PL + kx * DW
            if ix < 0 or ix >= W:
                continue
            ib = in_off + (iy * W + ix) * C
            wb = woff + (ky * KW + kx) * cin_g * CO
            if cin_g == 1 and cout_g == 1:  # depthwise: unsigned indices, no slices
                ub = np.uint64(ib)
                uw = np.uint64(wb)
                c0 = 0
                if Q.itemsize == 1 and acc.itemsize == 4:  # int8 x int8 -> int32 lanes
                    c0 = CO // 8 * 8
                    _madd_i8_v(Q.ctypes.data + ib, w.ctypes.data + wb, acc.ctypes.data, CO // 8,
                               zp32)
                for c in range(np.uint64(c0), np.uint64(CO)):
                    acc[c] += np.int32(np.int32(Q[ub + c]) - zp32) * np.int32(w[uw + c])
            else:
                xs = Q[ib:ib + C]
                for g in range(G):
                    a = acc[g * cout_g:(g + 1) * cout_g]
                    for ci in range(cin_g):
                        x = np.int32(xs[g * cin_g + ci]) - zp_in
                        if x == 0:
                            continue
                        wr = wb + ci * CO + g * cout_g
                        ws = w[wr:wr + cout_g]
                        for co in range(cout_g):
                            a[co] += x * np.int32(ws[co])


@njit(cache=True, fastmath=True)
def conv_int_rows(Q, zp_in, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT, PL, G, DH, DW, CO, WO,
                  out_off, r0, r1, acc, store_mode, mscale, bias_f, coff, amin, amax, F,
                  inv_s, zp_out, qmin, qmax, b_i32, mult, shift, rounding, mm):
    """Integer conv on rows [r0, r1) with its store (``acc`` needs 4 * CO elements).

    store_mode 0: real values to the fp32 region (exact per-window mode);
    1: quantize directly with ``inv_s``/``zp_out`` (running/static);
    2: TFLite fixed-point requantization (bit-exact int8; ``rounding`` 1 = double,
    2 = single rounding).
    Returns (min, max, saturated count) of the real outputs (0, 0, 0 for mode 2).
    """
    mn = np.float32(np.inf)
    mx = np.float32(-np.inf)
    sat = 0
    amn = np.float32(amin)
    amx = np.float32(amax)
    _mm_init(mm)
    for oh in range(r0, r1):
        ow = 0
        while ow < WO:
            nb = 4 if (G == 1 and ow + 4 <= WO) else 1
            if nb == 4:
                _accumulate4_int(Q, zp_in, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT, PL,
                                 DH, DW, CO, oh, ow, acc)
            else:
                conv_int_accumulate(Q, zp_in, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT,
                                    PL, G, DH, DW, CO, oh, ow, acc)
            for j in range(nb):
                ob = out_off + (oh * WO + ow + j) * CO
                ab = j * CO
                if store_mode == 2:
                    uob = np.uint64(ob)
                    uab = np.uint64(ab)
                    ucf = np.uint64(coff)
                    if rounding == 1:
                        for c in range(np.uint64(CO)):
                            a = np.int64(acc[uab + c]) + b_i32[ucf + c]
                            v = _mbqm_vec(a, mult[ucf + c], shift[ucf + c]) + zp_out
                            Q[uob + c] = min(max(v, qmin), qmax)
                    else:
                        for c in range(np.uint64(CO)):
                            a = np.int64(acc[uab + c]) + b_i32[ucf + c]
                            v = mbqm_single(a, mult[ucf + c], shift[ucf + c],
                                            rounding == 3) + zp_out
                            Q[uob + c] = min(max(v, qmin), qmax)
                    continue
                _store_exact(acc, ab, mscale, 0, bias_f, coff, F, ob, CO, amn, amx, mm)
            ow += nb
        if store_mode == 1:  # quantize the finished row with the known scale
            sat += _quantize_fast(F, Q, out_off + oh * WO * CO, WO * CO, inv_s, zp_out, qmin,
                                  qmax)
    mn, mx = _mm_reduce(mm, mn, mx)
    return mn, mx, sat


# ----------------------------------------------------------------------------- GEMM tiles
#
# G == 1 convolutions (pointwise, the first conv, fully connected) run as im2col + a
# register-blocked GEMM: TILE_R output pixels x 16 output channels held in ymm registers over
# the whole K loop, weights prepacked at load (see ``models/plan.py``). Both micro-kernels are
# written in generic LLVM vector IR (no x86-only intrinsics), so they compile on any CPU;
# on AVX2 the integer one becomes ``vpmaddwd`` and the float one ``vfmadd231ps``.
#
# Integer packed layout: int8 [NB, K2, 16, 2] (16 channels x 2 consecutive k, zero padded);
# activations (x - zp) widened to int16 rows of kp = K rounded up to 4. pmaddwd sums each
# channel's pair of products into one int32 lane (exact: |x - zp| <= 255 for int8).
# Float packed layout: float32 [NB, K, 16].

GEMM_NR = 16
TILE_RI = 5  # rows per integer tile: 10 accumulators + 2 weights (4 rows: 7% slower)
TILE_RF = 6  # rows per float tile: 12 accumulators + 2 weight registers


def _make_int_tile(rows: int):
    """``rows x 16`` int32 tile = sum over k2 of x[r, 2k2:2k2+2] . w[k2, c, 0:2] (vpmaddwd).

    Each weight vector holds 8 channels x 2 consecutive k, stored as int8 and widened to
    int16 as it is loaded (vpmovsxbw); the activation pair is broadcast as one 32-bit lane,
    so a pmaddwd lane is one channel's exact partial sum. Storing the weights as int8
    halves the bytes a step streams through the caches (kws12: 115 KB -> 58 KB).
    """

    @intrinsic
    def tile(typingctx, x_addr, x_stride, w_addr, k2_count, out_addr):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            xa, xs, wa, kc, oa = args
            i16, i32 = ir.IntType(16), ir.IntType(32)
            intp = xa.type
            v16i16 = ir.VectorType(i16, 16)
            v16i32 = ir.VectorType(i32, 16)
            v8i32 = ir.VectorType(i32, 8)
            even = ir.Constant(v8i32, list(range(0, 16, 2)))
            odd = ir.Constant(v8i32, list(range(1, 16, 2)))
            splat = ir.Constant(v8i32, [0] * 8)

            def pmadd(a, b):
                p = builder.mul(builder.sext(a, v16i32), builder.sext(b, v16i32))
                return builder.add(builder.shuffle_vector(p, p, even),
                                   builder.shuffle_vector(p, p, odd))

            zero = ir.Constant(v8i32, None)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(2)]
                    for _ in range(rows)]
            v16i8 = ir.VectorType(ir.IntType(8), 16)
            with cgutils.for_range(builder, kc) as loop:
                k = loop.index
                w_base = builder.add(wa, builder.mul(k, ir.Constant(intp, 32)))
                wv = [builder.sext(builder.load(builder.inttoptr(
                    builder.add(w_base, ir.Constant(intp, 16 * j)), v16i8.as_pointer()),
                    align=1), v16i16) for j in range(2)]
                x_off = builder.mul(k, ir.Constant(intp, 4))
                for r in range(rows):
                    xaddr = builder.add(builder.add(xa, builder.mul(ir.Constant(intp, r), xs)),
                                        x_off)
                    q = builder.load(builder.inttoptr(xaddr, i32.as_pointer()), align=2)
                    qv = builder.insert_element(ir.Constant(v8i32, None), q,
                                                ir.Constant(i32, 0))
                    xb = builder.bitcast(builder.shuffle_vector(qv, qv, splat), v16i16)
                    for j in range(2):
                        acc = accs[r][j]
                        builder.store(builder.add(builder.load(acc), pmadd(wv[j], xb)), acc)
            for r in range(rows):
                for j in range(2):
                    p = builder.inttoptr(builder.add(oa, ir.Constant(intp, (r * 2 + j) * 32)),
                                         v8i32.as_pointer())
                    builder.store(builder.load(accs[r][j]), p, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _make_float_tile(rows: int, double: bool):
    """``rows x 16`` float tile = sum over k of x[r, k] * w[k, 0:16] (FMA, k in order).

    float32 (``double=False``): two 8-lane vectors per row. float64 (``double=True``,
    the int16 path): four 4-lane vectors per row; its sums are exact integers because
    the int16 operands give |x - zp| * |w| < 2**31 and K < 2**22.
    """
    width = 8 if double else 4  # bytes per element
    lanes = 32 // width  # one 256-bit register
    n_vec = 16 // lanes
    name = "llvm.fma.v4f64" if double else "llvm.fma.v8f32"

    @intrinsic
    def tile(typingctx, x_addr, x_stride, w_addr, k_count, out_addr):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            xa, xs, wa, kc, oa = args
            fty, i32 = (ir.DoubleType() if double else ir.FloatType()), ir.IntType(32)
            intp = xa.type
            vty = ir.VectorType(fty, lanes)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty, vty, vty]), name)
            splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
            zero = ir.Constant(vty, None)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(n_vec)]
                    for _ in range(rows)]
            with cgutils.for_range(builder, kc) as loop:
                k = loop.index
                w_base = builder.add(wa, builder.mul(k, ir.Constant(intp, 16 * width)))
                wv = [builder.load(builder.inttoptr(
                    builder.add(w_base, ir.Constant(intp, 32 * j)), vty.as_pointer()),
                    align=width) for j in range(n_vec)]
                x_off = builder.mul(k, ir.Constant(intp, width))
                for r in range(rows):
                    xaddr = builder.add(builder.add(xa, builder.mul(ir.Constant(intp, r), xs)),
                                        x_off)
                    sx = builder.load(builder.inttoptr(xaddr, fty.as_pointer()), align=width)
                    sv = builder.insert_element(ir.Constant(vty, None), sx, ir.Constant(i32, 0))
                    xb = builder.shuffle_vector(sv, sv, splat)
                    for j in range(n_vec):
                        acc = accs[r][j]
                        builder.store(builder.call(fma, [xb, wv[j], builder.load(acc)]), acc)
            for r in range(rows):
                for j in range(n_vec):
                    p = builder.inttoptr(
                        builder.add(oa, ir.Constant(intp, (r * n_vec + j) * 32)),
                        vty.as_pointer())
                    builder.store(builder.load(accs[r][j]), p, align=width)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_it1, _it2, _it3, _it4, _it5 = (_make_int_tile(r) for r in range(1, 6))
TILE_RD = 2  # rows per float64 tile: 8 accumulators + 4 weight registers
_dt1, _dt2 = _make_float_tile(1, True), _make_float_tile(2, True)


_ft1, _ft2, _ft3, _ft4, _ft5, _ft6 = (_make_float_tile(r, False) for r in range(1, 7))


@njit(cache=True)
def gemm_int_tiles(xw, kp, M, wpk, pk_off, CO, acc_t):
    """int32 ``acc_t[NB, M, 16]`` = widened rows ``xw[M, kp]`` x packed int8 weights."""
    k2 = kp // 2
    nblk = (CO + GEMM_NR - 1) // GEMM_NR
    xa = xw.ctypes.data
    wa = wpk.ctypes.data + pk_off
    oa = acc_t.ctypes.data
    for nb in range(nblk):
        wb = wa + nb * kp * GEMM_NR
        t0 = 0
        while t0 < M:
            r = min(TILE_RI, M - t0)
            xr = xa + t0 * kp * 2
            ob = oa + (nb * M + t0) * GEMM_NR * 4
            if r == 5:
                _it5(xr, kp * 2, wb, k2, ob)
            elif r == 4:
                _it4(xr, kp * 2, wb, k2, ob)
            elif r == 3:
                _it3(xr, kp * 2, wb, k2, ob)
            elif r == 2:
                _it2(xr, kp * 2, wb, k2, ob)
            else:
                _it1(xr, kp * 2, wb, k2, ob)
            t0 += r


@njit(cache=True)
def gemm_f32_tiles(xf, x_off, K, M, wpk, pk_off, CO, acc_t):
    """float32 ``acc_t[NB, M, 16]`` = rows ``xf[x_off:][M, K]`` x packed float32 weights."""
    nblk = (CO + GEMM_NR - 1) // GEMM_NR
    xa = xf.ctypes.data + x_off * 4
    wa = wpk.ctypes.data + pk_off * 4
    oa = acc_t.ctypes.data
    for nb in range(nblk):
        wb = wa + nb * K * GEMM_NR * 4
        t0 = 0
        while t0 < M:
            r = min(TILE_RF, M - t0)
            xr = xa + t0 * K * 4
            ob = oa + (nb * M + t0) * GEMM_NR * 4
            if r == 6:
                _ft6(xr, K * 4, wb, K, ob)
            elif r == 5:
                _ft5(xr, K * 4, wb, K, ob)
            elif r == 4:
                _ft4(xr, K * 4, wb, K, ob)
            elif r == 3:
                _ft3(xr, K * 4, wb, K, ob)
            elif r == 2:
                _ft2(xr, K * 4, wb, K, ob)
            else:
                _ft1(xr, K * 4, wb, K, ob)
            t0 += r


@njit(cache=True, inline="always")
def _is_pointwise(H, W, KH, KW, SH, SW, PT, PL, WO):
    """1x1, stride 1, no padding: output pixel m reads input pixel m."""
    return KH == 1 and KW == 1 and SH == 1 and SW == 1 and PT == 0 and PL == 0 and WO == W


@njit(cache=True, inline="always")
def _rows_are_contiguous(H, W, KW, SW, PL, DH, DW, WO, y_first, y_end):
    """A conv whose kernel spans the whole input width (one output column, no width
    padding) and whose input rows [y_first, y_end) all exist: each output row then reads
    one contiguous run of KH * W * C values."""
    return (KW == W and WO == 1 and PL == 0 and SW == 1 and DW == 1 and DH == 1
            and y_first >= 0 and y_end <= H)


@intrinsic
def _widen_sub_v(typingctx, src_addr, dst_addr, n16, zp):
    """dst_i16[j] = int16(src_i8[j]) - zp for 16 * n16 elements (|result| <= 255)."""
    sig = types.void(types.intp, types.intp, types.intp, types.int16)

    def codegen(context, builder, signature, args):
        sa, da, n, z = args
        intp = sa.type
        v16i8 = ir.VectorType(ir.IntType(8), 16)
        v16i16 = ir.VectorType(ir.IntType(16), 16)
        zv = _splat(builder, z, v16i16)
        with cgutils.for_range(builder, n) as loop:
            k = loop.index
            x = builder.load(_ptr(builder, builder.add(sa, builder.mul(
                k, ir.Constant(intp, 16))), v16i8), align=1)
            y = builder.sub(builder.sext(x, v16i16), zv)
            builder.store(y, _ptr(builder, builder.add(da, builder.mul(
                k, ir.Constant(intp, 32))), v16i16), align=2)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def gemm_f64_tiles(xd, K, M, wpk, pk_off, CO, acc_t):
    """float64 ``acc_t[NB, M, 16]`` = rows ``xd[M, K]`` x packed float64 weights."""
    nblk = (CO + GEMM_NR - 1) // GEMM_NR
    xa = xd.ctypes.data
    wa = wpk.ctypes.data + pk_off * 8
    oa = acc_t.ctypes.data
    for nb in range(nblk):
        wb = wa + nb * K * GEMM_NR * 8
        t0 = 0
        while t0 < M:
            r = min(TILE_RD, M - t0)
            xr = xa + t0 * K * 8
            ob = oa + (nb * M + t0) * GEMM_NR * 8
            if r == 2:
                _dt2(xr, K * 8, wb, K, ob)
            else:
                _dt1(xr, K * 8, wb, K, ob)
            t0 += r


@njit(cache=True)
def im2col_rows(X, zp, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, WO, r0, r1, xw, kp):
    """Rows [r0, r1) of the conv input as ``xw[M, kp]`` (x - zp; padding and k >= K are 0).

    k order is (ky, kx, ci), the order of the packed weights.
    """
    ukp = np.uint64(kp)
    K = KH * KW * C
    m = np.uint64(0)
    for oh in range(r0, r1):
        for ow in range(WO):
            base = m * ukp
            ix0 = ow * SW - PL
            if DW == 1:  # taps kx in [lo, hi) are inside the row: one contiguous copy
                lo = min(max(-ix0, 0), KW)
                hi = max(min(W - ix0, KW), lo)
            for ky in range(KH):
                iy = oh * SH - PT + ky * DH
                kb = base + np.uint64(ky * KW * C)
                if iy < 0 or iy >= H:
                    for k in range(np.uint64(KW * C)):
                        xw[kb + k] = 0
                elif DW == 1:
                    for k in range(np.uint64(lo * C)):
                        xw[kb + k] = 0
                    src = np.uint64(in_off + (iy * W + ix0 + lo) * C)
                    dst = kb + np.uint64(lo * C)
                    for k in range(np.uint64((hi - lo) * C)):
                        xw[dst + k] = X[src + k] - zp
                    for k in range(np.uint64(hi * C), np.uint64(KW * C)):
                        xw[kb + k] = 0
                else:
                    for kx in range(KW):
                        ix = ix0 + kx * DW
                        kb2 = kb + np.uint64(kx * C)
                        if ix < 0 or ix >= W:
                            for ci in range(np.uint64(C)):
                                xw[kb2 + ci] = 0
                        else:
                            src = np.uint64(in_off + (iy * W + ix) * C)
                            for ci in range(np.uint64(C)):
                                xw[kb2 + ci] = X[src + ci] - zp
            for k in range(np.uint64(K), ukp):
                xw[base + k] = 0
            m += np.uint64(1)


@njit(cache=True)
def im2col_padded(X, zp, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, WO, r0, r1, xw, kp):
    """:func:`im2col_rows` through a zero-padded copy of the input rows (x - zp), kept in
    ``xw`` after the M * kp im2col rows; each tap row is then one branch-free copy. Returns
    False (nothing done) when ``xw`` is too small. Measured on the MLPerf DS-CNN first conv
    (10x4, stride 2, C = 1): 6.3 -> 1.3 us, the per-tap bounds checks dominated.
    """
    M = (r1 - r0) * WO
    PH = (r1 - r0 - 1) * SH + (KH - 1) * DH + 1
    PW = (WO - 1) * SW + (KW - 1) * DW + 1
    p_off = M * kp
    if p_off + PH * PW * C > xw.size:
        return False
    y_lo = r0 * SH - PT
    ub = np.uint64(p_off)
    uc = np.uint64(C)
    for py in range(PH):
        iy = y_lo + py
        rowb = ub + np.uint64(py * PW * C)
        if iy < 0 or iy >= H:
            for k in range(np.uint64(PW * C)):
                xw[rowb + k] = 0
            continue
        for px in range(PW):
            ix = px - PL
            d = rowb + np.uint64(px * C)
            if ix < 0 or ix >= W:
                for c in range(uc):
                    xw[d + c] = 0
            else:
                src = np.uint64(in_off + (iy * W + ix) * C)
                for c in range(uc):
                    xw[d + c] = X[src + c] - zp
    ukp = np.uint64(kp)
    K = KH * KW * C
    m = np.uint64(0)
    for oh in range(r1 - r0):
        for ow in range(WO):
            base = m * ukp
            for ky in range(KH):
                src = ub + np.uint64(((oh * SH + ky * DH) * PW + ow * SW) * C)
                dst = base + np.uint64(ky * KW * C)
                if DW == 1:  # the KW taps are adjacent in the padded row
                    for k in range(np.uint64(KW * C)):
                        xw[dst + k] = xw[src + k]
                else:
                    for kx in range(KW):
                        s2 = src + np.uint64(kx * DW * C)
                        d2 = dst + np.uint64(kx * C)
                        for c in range(uc):
                            xw[d2 + c] = xw[s2 + c]
            for k in range(np.uint64(K), ukp):
                xw[base + k] = 0
            m += np.uint64(1)
    return True


@njit(cache=True, fastmath=True)
def conv_f32_gemm_rows(F, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, CO, WO, wpk, pk_off,
                       bias, coff, out_off, r0, r1, amin, amax, xf, acc_t):
    """fp32 G == 1 conv on output rows [r0, r1) via im2col + FMA tiles; fused bias and clamp.

    Each output pixel's sum runs over k in the same order whatever rows are asked for,
    so row ranges (incremental mode) give identical values.
    """
    M = (r1 - r0) * WO
    K = KH * KW * C
    if _is_pointwise(H, W, KH, KW, SH, SW, PT, PL, WO):  # rows are already [M, C]: no copy
        gemm_f32_tiles(F, in_off + r0 * W * C, K, M, wpk, pk_off, CO, acc_t)
    else:
        if not im2col_padded(F, np.float32(0.0), in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH,
                             DW, WO, r0, r1, xf, K):
            im2col_rows(F, np.float32(0.0), in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW,
                        WO, r0, r1, xf, K)
        gemm_f32_tiles(xf, 0, K, M, wpk, pk_off, CO, acc_t)
    uM = np.uint64(M)
    nblk = np.uint64((CO + GEMM_NR - 1) // GEMM_NR)
    for m in range(uM):
        ob = np.uint64(out_off + (r0 * WO) * CO) + m * np.uint64(CO)
        for nb in range(nblk):
            c0 = nb * np.uint64(GEMM_NR)
            n_here = min(np.uint64(GEMM_NR), np.uint64(CO) - c0)
            ab = (nb * uM + m) * np.uint64(GEMM_NR)
            cb = np.uint64(coff) + c0
            for c in range(n_here):
                v = acc_t[ab + c] + bias[cb + c]
                F[ob + c0 + c] = min(max(v, amin), amax)


@njit(cache=True, inline="always")
def _widen_run(Q, src, zp_in, xw, dst, n):
    """``xw[dst:dst + n] = Q[src:src + n] - zp_in``, int8 widened to int16: 16 at a time
    (:func:`_widen_sub_v`), then the tail."""
    n16 = n // 16
    _widen_sub_v(Q.ctypes.data + src, xw.ctypes.data + dst * 2, n16, np.int16(zp_in))
    for k in range(n16 * 16, n):
        xw[dst + k] = Q[src + k] - zp_in


@njit(cache=True, inline="always")
def _int8_gemm_acc(Q, zp_in, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, CO, WO, wpk,
                   pk_off, r0, r1, xw, acc_t):
    """int8 G == 1 conv sums of rows [r0, r1) into ``acc_t[NB, M, 16]`` (im2col + vpmaddwd)."""
    M = (r1 - r0) * WO
    K = KH * KW * C
    kp = (K + 3) // 4 * 4
    if _is_pointwise(H, W, KH, KW, SH, SW, PT, PL, WO) and kp == K:
        _widen_run(Q, in_off + r0 * W * C, zp_in, xw, 0, M * K)  # the rows are [M, K]
    elif _rows_are_contiguous(H, W, KW, SW, PL, DH, DW, WO, r0 * SH - PT,
                              (r1 - 1) * SH - PT + KH):
        # a full-width conv inside the input (kws12's first layer: 3 x 40 over 40 bins):
        # output row m reads KH whole input rows, one contiguous run of K values. Measured
        # on kws12's 5 new rows (K = 120, 2-core EPYC): 32 ns against 410 ns through
        # im2col_padded
        for m in range(M):
            src = in_off + ((r0 + m) * SH - PT) * W * C
            dst = m * kp
            _widen_run(Q, src, zp_in, xw, dst, K)
            for k in range(K, kp):
                xw[dst + k] = 0
    elif not im2col_padded(Q, zp_in, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, WO, r0,
                           r1, xw, kp):
        im2col_rows(Q, zp_in, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, WO, r0, r1, xw,
                    kp)
    gemm_int_tiles(xw, kp, M, wpk, pk_off, CO, acc_t)


@njit(cache=True, inline="always")
def _dw_int8_acc(Q, zp_in, in_off, H, W, C, w, woff, KH, KW, SH, SW, PT, PL, DH, DW, CO, WO,
                 r0, r1, acc_t):
    """int8 depthwise sums (CO % 8 == 0) of rows [r0, r1) into ``acc_t[M, CO]``."""
    zp32 = np.int32(zp_in)
    m = 0
    for oh in range(r0, r1):
        for ow in range(WO):
            y0, x0, ky0, ky1, kx0, kx1 = _dw_rect(oh, ow, H, W, KH, KW, SH, SW, PT, PL, DH, DW)
            xb = in_off + ((y0 + ky0 * DH) * W + x0 + kx0 * DW) * C
            wb = woff + (ky0 * KW + kx0) * CO
            _dw_pixel(True, Q.ctypes.data + xb, DH * W * C, DW * C, 1, w.ctypes.data + wb,
                      KW * CO, CO, 1, ky1 - ky0, kx1 - kx0, zp32, acc_t.ctypes.data + m * CO * 4,
                      CO)
            m += 1


@njit(cache=True)
def _acc_range(acc_t, gemm, M, CO, mscale, bias_f, coff, amn, amx, ext, fscr, mm):
    """(min, max) of the real outputs clamp(float(acc) * mscale + bias) of int32 sums
    ``acc_t`` (layout [NB, M, 16] when ``gemm``, else [M, CO]; CO % 8 == 0, M > 0).

    Per channel the real output is a monotone function of its sum (float conversion, FMA
    and clamp all round monotonically), so the tensor's extremes are among those of each
    channel's smallest and largest sum: integer min/max over the sums, then the store's
    arithmetic on 2 * CO values only (bit-identical to storing every value).
    """
    ng = CO // 8
    base = acc_t.ctypes.data
    for g in range(ng):
        if gemm:
            a = base + (g // 2) * M * GEMM_NR * 4 + (g % 2) * 32
            st = GEMM_NR * 4
        else:
            a = base + g * 32
            st = CO * 4
        _minmax_i32_v(a, st, M, ext.ctypes.data + g * 32, ext.ctypes.data + (CO + g * 8) * 4)
    _mm_init(mm)
    for h in range(2):
        _store_exact_v(ext.ctypes.data + h * CO * 4, mscale.ctypes.data,
                       bias_f.ctypes.data + coff * 4, fscr.ctypes.data, ng, amn, amx,
                       mm.ctypes.data)
    return _mm_reduce(mm, np.float32(np.inf), np.float32(-np.inf))


@njit(cache=True)
def _acc_quantize(acc_t, gemm, M, CO, mscale, bias_f, coff, amn, amx, Q, q_off, inv_s, zp,
                  qmin, qmax):
    """Q[q_off:][M, CO] = int8 outputs of the sums ``acc_t`` (layouts as :func:`_acc_range`);
    returns the saturated count. Same values as the exact store + :func:`_quantize_fast`."""
    lo = np.float32(qmin - zp)
    hi = np.float32(qmax - zp)
    inv = np.float32(inv_s)
    z = np.float32(zp)
    qa = Q.ctypes.data + q_off
    ma = mscale.ctypes.data
    ba = bias_f.ctypes.data + coff * 4
    clamp_hi = amx < np.float32(np.inf)
    sat = 0
    for c0 in range(0, CO, GEMM_NR):  # 16-channel chunks (8 for a CO % 16 == 8 tail)
        nvec = min(GEMM_NR, CO - c0) // 8
        if gemm:
            aa, ast = acc_t.ctypes.data + c0 * M * 4, GEMM_NR * 4
        else:
            aa, ast = acc_t.ctypes.data + c0 * 4, CO * 4
        sat += _acc_quant_chunk(nvec, clamp_hi, aa, ast, qa + c0, CO, M, ma + c0 * 4,
                                ba + c0 * 4, amn, amx, inv, lo, hi, z)
    return sat


@njit(cache=True, fastmath=True)
def conv_int_gemm_rows(Q, zp_in, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, CO, WO,
                       wpk, pk_off, out_off, r0, r1, store_mode, mscale, bias_f, coff, amin,
                       amax, F, inv_s, zp_out, qmin, qmax, b_i32, mult, shift, rounding, xw,
                       acc_t, mm, wpk_d, pk_off_d, xd, acc_td):
    """int8 / int16 G == 1 conv on rows [r0, r1) via im2col + GEMM tiles (int8: vpmaddwd;
    int16: exact float64 FMA); same stores and return value as :func:`conv_int_rows`
    (the integer sums are identical)."""
    M = (r1 - r0) * WO
    K = KH * KW * C
    if Q.itemsize == 2:  # int16: exact integer sums in float64 FMA tiles
        im2col_rows(Q, zp_in, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, WO, r0, r1,
                    xd, K)
        gemm_f64_tiles(xd, K, M, wpk_d, pk_off_d, CO, acc_td)
        return _int_gemm_store(acc_td, M, CO, out_off, r0, WO, Q, store_mode, mscale, bias_f,
                               coff, amin, amax, F, inv_s, zp_out, qmin, qmax, b_i32, mult,
                               shift, rounding, mm)
    _int8_gemm_acc(Q, zp_in, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, CO, WO, wpk,
                   pk_off, r0, r1, xw, acc_t)
    return _int_gemm_store(acc_t, M, CO, out_off, r0, WO, Q, store_mode, mscale, bias_f, coff,
                           amin, amax, F, inv_s, zp_out, qmin, qmax, b_i32, mult, shift,
                           rounding, mm)


@njit(cache=True, fastmath=True, inline="always")
def _int_gemm_store(acc_t, M, CO, out_off, r0, WO, Q, store_mode, mscale, bias_f, coff, amin,
                    amax, F, inv_s, zp_out, qmin, qmax, b_i32, mult, shift, rounding, mm):
    """Stores of :func:`conv_int_gemm_rows` from ``acc_t[NB, M, 16]`` (int32 or exact
    float64 integer sums)."""
    mn = np.float32(np.inf)
    mx = np.float32(-np.inf)
    sat = 0
    amn = np.float32(amin)
    amx = np.float32(amax)
    uM = np.uint64(M)
    nblk = np.uint64((CO + GEMM_NR - 1) // GEMM_NR)
    o0 = out_off + r0 * WO * CO
    _mm_init(mm)
    for m in range(uM):
        ob = np.uint64(o0) + m * np.uint64(CO)
        for nb in range(nblk):
            c0 = nb * np.uint64(GEMM_NR)
            n_here = min(np.uint64(GEMM_NR), np.uint64(CO) - c0)
            ab = (nb * uM + m) * np.uint64(GEMM_NR)
            ucf = np.uint64(coff) + c0
            uob = ob + c0
            if store_mode == 2:
                if rounding == 1:
                    for c in range(n_here):
                        a = np.int64(acc_t[ab + c]) + b_i32[ucf + c]
                        v = _mbqm_vec(a, mult[ucf + c], shift[ucf + c]) + zp_out
                        Q[uob + c] = min(max(v, qmin), qmax)
                else:
                    for c in range(n_here):
                        a = np.int64(acc_t[ab + c]) + b_i32[ucf + c]
                        v = mbqm_single(a, mult[ucf + c], shift[ucf + c],
                                        rounding == 3) + zp_out
                        Q[uob + c] = min(max(v, qmin), qmax)
            else:
                _store_exact(acc_t, ab, mscale, c0, bias_f, ucf, F, uob, n_here, amn, amx, mm)
    mn, mx = _mm_reduce(mm, mn, mx)
    if store_mode == 1:
        sat += _quantize_fast(F, Q, o0, M * CO, inv_s, zp_out, qmin, qmax)
    return mn, mx, sat


# ----------------------------------------------------------------------------- pools


@njit(cache=True, inline="always")
def _store_int_average(X, ob, sums, C, cnt):
    """X[ob:ob + C] = the integer sums divided by ``cnt``, rounded half away from zero
    (TFLite), as floor((|s| + half) / cnt) in float64 (exact: every value is an integer
    below 2**53), by a multiply with 1 / cnt corrected by the remainder, so that it
    vectorizes. Per 96-channel kws12 head (2-core EPYC): an int64 division per channel
    ~0.8 us, a float64 division 0.12 us, the multiply with an int32 result 0.08 us (AVX2
    converts doubles to int64 one at a time)."""
    half = np.float64(cnt // 2)
    fc = np.float64(cnt)
    inv = 1.0 / fc
    uob = np.uint64(ob)
    for c in range(np.uint64(C)):
        si = sums[c]
        t = np.float64(abs(si)) + half
        q = np.floor(t * inv)  # the quotient or one off it; the remainder says which
        r = t - q * fc
        q = q + 1.0 if r >= fc else q
        q = q - 1.0 if r < 0.0 else q
        qi = np.int32(q)  # a packed conversion (|average| <= 32768)
        X[uob + c] = qi if si > 0 else -qi


@njit(cache=True)
def global_avg_int8(X, in_off, H, row, C, out_off, sums, at, layer):
    """Average of all ``H`` rows (``row`` = W * C int8 values each, channels innermost) into
    ``C`` outputs, TFLite rounding; the int32 channel sums stay in ``sums``.

    ``at`` = (layer, in_off) of the sums kept: when this layer's window is the kept one
    moved on by one row (the head of an incremental call, once per new window), the sums
    slide (add the newest row, drop the oldest: exact in integers) instead of being redone.
    The caller resets ``at`` whenever the rows may have changed (each network call).
    Measured on kws12's head (17 x 96 int8, the 5 windows of a 100 ms call, 2-core EPYC):
    0.6-0.7 us against 1.3-1.6 us through :func:`pool_rows` (a whole sum per window).
    """
    nw = row // C
    uc = np.uint64(C)  # unsigned indices: no wrap-around checks in the vector loops
    if at[0] == layer and at[1] + row == in_off:
        for j in range(nw):
            old = np.uint64(at[1] + j * C)
            new = np.uint64(in_off + (H - 1) * row + j * C)
            for c in range(uc):
                sums[c] += np.int32(X[new + c]) - np.int32(X[old + c])
    else:
        for c in range(uc):
            sums[c] = 0
        for y in range(H * nw):
            b = np.uint64(in_off + y * C)
            for c in range(uc):
                sums[c] += np.int32(X[b + c])
    at[0] = layer
    at[1] = in_off
    _store_int_average(X, out_off, sums, C, H * nw)


@njit(cache=True, fastmath=True)
def pool_rows(X, in_off, H, W, C, KH, KW, SH, SW, PT, PL, WO, out_off, r0, r1, is_max, is_int,
              accf, acci):
    """Average (padding excluded; TFLite integer rounding when ``is_int``) or max pool.

    Channels innermost (vectorized); ``accf``/``acci`` are C-element scratch arrays
    (``acci`` int32 for int8 input: eight lanes per vector instead of four).
    """
    for oh in range(r0, r1):
        for ow in range(WO):
            ob = out_off + (oh * WO + ow) * C
            for c in range(C):
                accf[c] = -np.inf if is_max else 0.0
                acci[c] = 0
            cnt = 0
            for ky in range(KH):
                iy = oh * SH - PT + ky
                if iy < 0 or iy >= H:
                    continue
                for kx in range(KW):
                    ix = ow * SW - PL + kx
                    if ix < 0 or ix >= W:
                        continue
                    cnt += 1
                    xs = X[in_off + (iy * W + ix) * C:in_off + (iy * W + ix + 1) * C]
                    if is_max:
                        for c in range(C):
                            accf[c] = max(accf[c], np.float32(xs[c]))
                    elif is_int:
                        for c in range(C):
                            acci[c] += xs[c]
                    else:
                        for c in range(C):
                            accf[c] += xs[c]
            if cnt == 0:
                for c in range(C):
                    X[ob + c] = 0
            elif is_max:
                for c in range(C):
                    X[ob + c] = accf[c]
            elif is_int:
                _store_int_average(X, ob, acci, C, cnt)
            else:
                for c in range(C):
                    X[ob + c] = accf[c] / cnt


# ----------------------------------------------------------------------------- conversions


@njit(cache=True)
def _tensor_qparams(t, p, qmode, st_scale, st_zp, ost, mn, mx):
    """Scale/zp for tensor t in precision p given this window's real range."""
    qmin, qmax = _qrange(p)
    m = qmode[t]
    if m == Q_STATIC:
        return st_scale[t, p], st_zp[t, p]
    if m == Q_RUNNING and ost[t, OS_N] > 0:
        return qparams_from_range(ost[t, OS_EMA_MIN], ost[t, OS_EMA_MAX], qmin, qmax)
    return qparams_from_range(mn, mx, qmin, qmax)


@njit(cache=True)
def _note_range(t, ost, mn, mx, sat):
    if ost[t, OS_SEEN] == 0:
        ost[t, OS_WIN_MIN] = mn
        ost[t, OS_WIN_MAX] = mx
    else:
        ost[t, OS_WIN_MIN] = min(ost[t, OS_WIN_MIN], mn)
        ost[t, OS_WIN_MAX] = max(ost[t, OS_WIN_MAX], mx)
    ost[t, OS_SEEN] = 1
    ost[t, OS_SAT] += sat


@njit(cache=True)
def _quantize_region(F, Q, off, n, scale, zp, qmin, qmax):
    """Round half away from zero of x / scale in float32 (TFLite QUANTIZE rule)."""
    s32 = np.float32(scale)
    lo = np.float64(qmin - zp)
    hi = np.float64(qmax - zp)
    z = np.int32(zp)
    sat = 0
    # branch-free so that it vectorizes (no fastmath: exact division); unsigned indices
    # need no wrap-around checks, so the loads and stores are contiguous vectors instead
    # of one element at a time (kws12's 5 new input rows, 200 values: 0.41 -> 0.18 us)
    uoff = np.uint64(off)
    for i in range(np.uint64(n)):
        v = F[uoff + i] / s32
        r = np.floor(np.float64(abs(v)) + 0.5)
        r = r if v >= 0 else -r
        sat += (r < lo) | (r > hi)
        Q[uoff + i] = np.int32(min(max(r, lo), hi)) + z
    return sat


@njit(cache=True, fastmath=True)
def _quantize_fast(F, Q, off, n, inv_s, zp, qmin, qmax):
    """Quantize with a multiply by 1/scale (round half up); returns the saturated count.

    Branch-free float clamp then one float->int conversion, so LLVM vectorizes it.
    """
    lo = np.float32(qmin - zp)
    hi = np.float32(qmax - zp)
    inv = np.float32(inv_s)
    z = np.float32(zp)
    half = np.float32(0.5)
    sat = 0
    n8 = n // 8
    if Q.itemsize == 1:
        sat += _quantize_v8(F.ctypes.data + off * 4, Q.ctypes.data + off, n8, inv, lo, hi, z)
    else:
        sat += _quantize_v16(F.ctypes.data + off * 4, Q.ctypes.data + off * 2, n8, inv, lo,
                             hi, z)
    uoff = np.uint64(off)
    for i in range(np.uint64(n8 * 8), np.uint64(n)):
        r = np.floor(F[uoff + i] * inv + half)
        sat += (r < lo) | (r > hi)
        Q[uoff + i] = np.int32(min(max(r, lo), hi) + z)
    return sat


@njit(cache=True)
def _range(F, off, n):
    mn = np.inf
    mx = -np.inf
    for i in range(n):
        v = F[off + i]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    return mn, mx


@njit(cache=True, inline="always")
def _ensure(t, p, valid, t_off, t_size, qsc, qzp, qmode, st_scale, st_zp, ost, F, Q8, Q16):
    """Make tensor t available in precision p (convert at a precision boundary).

    The check is inlined and the conversion a call: ~55 calls of 14 arguments per
    5-frame kws12 step, nearly all finding the tensor valid, took 7% of its time."""
    if not valid[t] & (1 << p):
        _convert(t, p, valid, t_off, t_size, qsc, qzp, qmode, st_scale, st_zp, ost, F, Q8,
                 Q16)


@njit(cache=True)
def _convert(t, p, valid, t_off, t_size, qsc, qzp, qmode, st_scale, st_zp, ost, F, Q8, Q16):
    """The conversion of :func:`_ensure` (tensor t not yet valid in precision p)."""
    off = t_off[t]
    n = t_size[t]
    if not valid[t] & 1:
        # dequantize from whichever integer copy exists
        if valid[t] & (1 << P_I8):
            s = qsc[t, P_I8]
            z = qzp[t, P_I8]
            for i in range(n):
                F[off + i] = (Q8[off + i] - z) * s
        else:
            s = qsc[t, P_I16]
            z = qzp[t, P_I16]
            for i in range(n):
                F[off + i] = (Q16[off + i] - z) * s
        valid[t] |= 1
    if p == P_F32:
        return
    mn, mx = _range(F, off, n)
    scale, zp = _tensor_qparams(t, p, qmode, st_scale, st_zp, ost, mn, mx)
    qmin, qmax = _qrange(p)
    if p == P_I8:
        sat = _quantize_region(F, Q8, off, n, scale, zp, qmin, qmax)
    else:
        sat = _quantize_region(F, Q16, off, n, scale, zp, qmin, qmax)
    _note_range(t, ost, mn, mx, sat)
    qsc[t, p] = scale
    qzp[t, p] = zp
    valid[t] |= 1 << p


# ----------------------------------------------------------------------------- layers


@intrinsic
def _memmove(typingctx, dst_addr, src_addr, n_bytes):
    """memmove of ``n_bytes`` (overlap allowed). Plain numba loops over the arena views stay
    scalar, and slice assignment of overlapping views copies through a temporary array."""
    sig = types.void(types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8)
        cgutils.raw_memmove(builder, _ptr(builder, args[0], i8p), _ptr(builder, args[1], i8p),
                            args[2], 1)

    return sig, codegen


@njit(cache=True)
def _advance_rings(ring, t_off, t_size, F, Q8, Q16, k):
    """Slide every ring tensor's window by ``k`` rows (incremental mode).

    A ring tensor of ``rows`` logical rows lives in ``cap`` physical rows; its
    window starts at physical row ``start``. Sliding moves ``start`` ``k`` rows
    on, so the oldest rows drop out and the newest ``k`` logical rows are free for
    the layer to compute. The ``k - 1`` rows before the new start stay in place,
    so the windows ending at each of the ``k`` new rows can be read too (see
    :func:`run_network`). Only when the window would run past the end are the
    ``rows - 1`` rows after the old start copied back to the front: the precision
    copies the last call left valid (``RING_VALID``; the input's fp32 always). Needs
    ``k <= cap - rows + 1``.

    Measured on kws12: shifting the whole tensor cost 42 us per step; a ring of
    twice its rows, copied back every ``rows / k`` calls, about 10 us per call of 5
    frames; with ``cap = rows + max(rows, 64)`` (``models.plan``) about 0.7 us (perf), of
    which copying only the valid copies (int8: 1 of 7 bytes per element) leaves a seventh.
    """
    for t in range(ring.shape[0]):
        rows = ring[t, RING_ROWS]
        if rows == 0:
            continue
        row = t_size[t] // rows
        base = ring[t, RING_BASE]
        s = ring[t, RING_START] + k
        if s + rows > ring[t, RING_CAP]:
            src = base + (ring[t, RING_START] + 1) * row
            n = (rows - 1) * row
            copies = ring[t, RING_VALID] | (1 if t == 0 else 0)  # the input's fp32 always
            if copies & 1:
                _memmove(F.ctypes.data + base * 4, F.ctypes.data + src * 4, n * 4)
            if copies & (1 << P_I8):
                _memmove(Q8.ctypes.data + base, Q8.ctypes.data + src, n)
            if copies & (1 << P_I16):
                _memmove(Q16.ctypes.data + base * 2, Q16.ctypes.data + src * 2, n * 2)
            s = k - 1
        ring[t, RING_START] = s
        t_off[t] = base + s * row


@njit(cache=True, inline="always")
def _conv_layer(i, p, L, LF, rows, valid, t_off, t_size, qsc, qzp, qmode, st_scale, st_zp, ost,
                F, Q8, Q16, ring, weights, scratch):
    """One convolution layer's rows. Inlined into :func:`_run_layers`: a call passing the
    ~40 arena arrays one by one cost about 0.5 us, 16 times per 5-frame kws12 step. The
    weights and scratch arrays come as two tuples so the call has under 30 arguments
    (CPython compiles longer calls as ``CALL_FUNCTION_EX``, which numba cannot inline)."""
    w_f32, w_i8, w_i16, b_f32, ws8, ws16, b_i32, mult, shift, wpk_i, wpk_f, wpk_d = weights
    acc_f, acc_i32, acc_i64, mscale, xw_i, xw_f, acc_ti, acc_tf, xw_d, acc_td = scratch[:10]
    tin = L[i, LP_IN0]
    tout = L[i, LP_OUT]
    H, W, C = L[i, LP_H], L[i, LP_W], L[i, LP_C]
    WO, CO = L[i, LP_WO], L[i, LP_CO]
    KH, KW, SH, SW = L[i, LP_KH], L[i, LP_KW], L[i, LP_SH], L[i, LP_SW]
    PT, PL, G, DH, DW = L[i, LP_PT], L[i, LP_PL], L[i, LP_G], L[i, LP_DH], L[i, LP_DW]
    woff, coff = L[i, LP_WOFF], L[i, LP_COFF]
    amin, amax = LF[i, 0], LF[i, 1]
    in_off, out_off = t_off[tin], t_off[tout]
    if p == P_F32:
        for k in range(2):
            r0, r1 = rows[i, 2 * k], rows[i, 2 * k + 1]
            if r1 > r0 and L[i, LP_PKF] >= 0:
                conv_f32_gemm_rows(F, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, CO, WO,
                                   wpk_f, L[i, LP_PKF], b_f32, coff, out_off, r0, r1,
                                   np.float32(amin), np.float32(amax), xw_f, acc_tf)
            elif r1 > r0:
                conv_f32_rows(F, in_off, H, W, C, w_f32, woff, KH, KW, SH, SW, PT, PL, G, DH,
                              DW, CO, WO, b_f32, coff, out_off, r0, r1, np.float32(amin),
                              np.float32(amax), acc_f)
        valid[tout] = 1
        return
    qmin, qmax = _qrange(p)
    s_in = qsc[tin, p]
    zp_in = qzp[tin, p]
    fixed = L[i, LP_FIXED] >= 1 and p == P_I8 and qmode[tout] == Q_STATIC
    ws = (ws8 if p == P_I8 else ws16)[coff:coff + CO]  # a slice: no wraparound checks
    for c in range(CO):
        mscale[c] = s_in * ws[c]
    if fixed:
        mode = 2
        s_out, zp_out = st_scale[tout, p], st_zp[tout, p]
        qlo, qhi = L[i, LP_QAMIN], L[i, LP_QAMAX]
    elif qmode[tout] == Q_EXACT or (qmode[tout] == Q_RUNNING and ost[tout, OS_N] == 0):
        mode = 0
        s_out, zp_out = 1.0, 0
        qlo, qhi = qmin, qmax
    else:
        mode = 1
        s_out, zp_out = _tensor_qparams(tout, p, qmode, st_scale, st_zp, ost, 0.0, 0.0)
        qlo, qhi = qmin, qmax
    inv_s = 1.0 / s_out
    mn = np.inf
    mx = -np.inf
    sat = 0
    # int8, exact, running or static scale: one pass from the int32 sums to int8 (no fp32 store, no
    # second quantize pass; range from per-channel extreme sums, see _acc_range). Measured on
    # the MLPerf DS-CNN: the fp32 store + quantize pass cost ~5 us of ~12 us per 64x64
    # pointwise layer. Needs one row range; exact mode also the whole tensor and no ring
    # (the fp32 copy of cached rows is re-quantized by later incremental calls).
    HO = L[i, LP_HO]
    r0, r1 = rows[i, 0], rows[i, 1]
    if rows[i, 3] > rows[i, 2]:
        r0, r1 = (rows[i, 2], rows[i, 3]) if r1 <= r0 else (0, 0)
    M = (r1 - r0) * WO
    gemm = L[i, LP_PKI] >= 0
    if (p == P_I8 and mode != 2 and CO % 8 == 0 and M > 0
            and (mode == 1 or (r0 == 0 and r1 == HO and ring[tout, RING_ROWS] == 0))
            and (gemm or (G == C and G == CO and M * CO <= acc_ti.size))):
        amn, amx = np.float32(amin), np.float32(amax)
        if gemm:
            _int8_gemm_acc(Q8, zp_in, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, CO, WO,
                           wpk_i, L[i, LP_PKI], r0, r1, xw_i, acc_ti)
        else:
            _dw_int8_acc(Q8, zp_in, in_off, H, W, C, w_i8, woff, KH, KW, SH, SW, PT, PL, DH,
                         DW, CO, WO, r0, r1, acc_ti)
        if qmode[tout] != Q_STATIC:  # a frozen scale needs no range (incremental int8)
            mn, mx = _acc_range(acc_ti, gemm, M, CO, mscale, b_f32, coff, amn, amx, acc_i32,
                                acc_f, acc_tf)
        if mode == 0:
            s_out, zp_out = _tensor_qparams(tout, p, qmode, st_scale, st_zp, ost, mn, mx)
            inv_s = 1.0 / s_out
        sat = _acc_quantize(acc_ti, gemm, M, CO, mscale, b_f32, coff, amn, amx, Q8,
                            out_off + r0 * WO * CO, inv_s, zp_out, qmin, qmax)
        _note_range(tout, ost, mn, mx, sat)
        qsc[tout, p] = s_out
        qzp[tout, p] = zp_out
        valid[tout] = 1 << p
        return
    for k in range(2):
        r0, r1 = rows[i, 2 * k], rows[i, 2 * k + 1]
        if r1 <= r0:
            continue
        if p == P_I8 and L[i, LP_PKI] >= 0:
            a, b, s = conv_int_gemm_rows(Q8, zp_in, in_off, H, W, C, KH, KW, SH, SW, PT, PL,
                                         DH, DW, CO, WO, wpk_i, L[i, LP_PKI], out_off, r0, r1,
                                         mode, mscale, b_f32, coff, amin, amax, F, inv_s,
                                         zp_out, qlo, qhi, b_i32, mult, shift, L[i, LP_FIXED],
                                         xw_i, acc_ti, acc_tf, wpk_d, 0, xw_d, acc_td)
        elif p == P_I16 and L[i, LP_PKD] >= 0:
            a, b, s = conv_int_gemm_rows(Q16, zp_in, in_off, H, W, C, KH, KW, SH, SW, PT, PL,
                                         DH, DW, CO, WO, wpk_i, 0, out_off, r0, r1,
                                         mode, mscale, b_f32, coff, amin, amax, F, inv_s,
                                         zp_out, qlo, qhi, b_i32, mult, shift, L[i, LP_FIXED],
                                         xw_i, acc_ti, acc_tf, wpk_d, L[i, LP_PKD], xw_d,
                                         acc_td)
        elif p == P_I8:
            a, b, s = conv_int_rows(Q8, zp_in, in_off, H, W, C, w_i8, woff, KH, KW, SH, SW, PT,
                                    PL, G, DH, DW, CO, WO, out_off, r0, r1, acc_i32, mode,
                                    mscale, b_f32, coff, amin, amax, F, inv_s, zp_out, qlo,
                                    qhi, b_i32, mult, shift, L[i, LP_FIXED], acc_tf)
        else:
            a, b, s = conv_int_rows(Q16, zp_in, in_off, H, W, C, w_i16, woff, KH, KW, SH, SW,
                                    PT, PL, G, DH, DW, CO, WO, out_off, r0, r1, acc_i64, mode,
                                    mscale, b_f32, coff, amin, amax, F, inv_s, zp_out, qlo,
                                    qhi, b_i32, mult, shift, L[i, LP_FIXED], acc_tf)
        mn = min(mn, a)
        mx = max(mx, b)
        sat += s
    if mode == 0:
        # exact per window: the range was gathered in the store; one light quantize pass
        s_out, zp_out = _tensor_qparams(tout, p, qmode, st_scale, st_zp, ost, mn, mx)
        if p == P_I8:
            sat = _quantize_fast(F, Q8, out_off, t_size[tout], 1.0 / s_out, zp_out, qmin, qmax)
        else:
            sat = _quantize_fast(F, Q16, out_off, t_size[tout], 1.0 / s_out, zp_out, qmin,
                                 qmax)
        _note_range(tout, ost, mn, mx, sat)
        qsc[tout, p] = s_out
        qzp[tout, p] = zp_out
        valid[tout] = 1 << p  # consumers see the quantized values, as in running mode
        return
    if mode == 1:
        _note_range(tout, ost, mn, mx, sat)
    qsc[tout, p] = s_out
    qzp[tout, p] = zp_out
    valid[tout] = 1 << p


@njit(cache=True, inline="always")
def _is_global_pool(L, i):
    """Layer ``i`` pools its whole input (no padding) into one pixel, with int32 sums exact
    (fewer than 2**24 pixels)."""
    return (L[i, LP_KH] == L[i, LP_H] and L[i, LP_KW] == L[i, LP_W] and L[i, LP_PT] == 0
            and L[i, LP_PL] == 0 and L[i, LP_HO] == 1 and L[i, LP_WO] == 1
            and L[i, LP_H] * L[i, LP_W] < 1 << 24)


@njit(cache=True, inline="always")
def _pool_layer_rows(X, i, L, t_off, r0, r1, is_max, is_int, accf, acci):
    """:func:`pool_rows` for layer ``i`` (no ``*args`` call: numba cannot inline those)."""
    pool_rows(X, t_off[L[i, LP_IN0]], L[i, LP_H], L[i, LP_W], L[i, LP_C], L[i, LP_KH],
              L[i, LP_KW], L[i, LP_SH], L[i, LP_SW], L[i, LP_PT], L[i, LP_PL], L[i, LP_WO],
              t_off[L[i, LP_OUT]], r0, r1, is_max, is_int, accf, acci)


@njit(cache=True, inline="always")
def _run_layers(i0, i1, L, LF, prec, rows, t_off, t_size, qmode, st_scale, st_zp, ost, qsc, qzp,
                valid, F, Q8, Q16, ring, weights, scratch):
    """Run layers ``i0 .. i1 - 1`` (arguments as :func:`run_network`; ``weights`` and
    ``scratch`` are tuples of its weight and scratch arrays, see :func:`_conv_layer`)."""
    acc_f, acc_i32, acc_i64 = scratch[0], scratch[1], scratch[2]
    pool_sum, pool_at = scratch[10], scratch[11]
    for i in range(i0, i1):
        op = L[i, LP_OP]
        p = prec[i]
        tin = L[i, LP_IN0]
        tout = L[i, LP_OUT]
        if op == OP_SOFTMAX:
            p = P_F32
        _ensure(tin, p, valid, t_off, t_size, qsc, qzp, qmode, st_scale, st_zp, ost, F, Q8,
                Q16)
        if op == OP_CONV:
            _conv_layer(i, p, L, LF, rows, valid, t_off, t_size, qsc, qzp, qmode, st_scale,
                        st_zp, ost, F, Q8, Q16, ring, weights, scratch)
        elif (op == OP_AVGPOOL and p == P_I8 and rows[i, 0] == 0 and rows[i, 1] == 1
              and rows[i, 3] <= rows[i, 2] and _is_global_pool(L, i)):
            H, W, C = L[i, LP_H], L[i, LP_W], L[i, LP_C]
            global_avg_int8(Q8, t_off[tin], H, W * C, C, t_off[tout], pool_sum, pool_at, i)
            qsc[tout, p] = qsc[tin, p]
            qzp[tout, p] = qzp[tin, p]
            valid[tout] = 1 << p
        elif op == OP_AVGPOOL or op == OP_MAXPOOL:
            is_max = op == OP_MAXPOOL
            for k in range(2):
                r0, r1 = rows[i, 2 * k], rows[i, 2 * k + 1]
                if r1 <= r0:
                    continue
                if p == P_F32:
                    _pool_layer_rows(F, i, L, t_off, r0, r1, is_max, False, acc_f, acc_i64)
                elif p == P_I8 and L[i, LP_KH] * L[i, LP_KW] < 1 << 24:  # int32 sums exact
                    _pool_layer_rows(Q8, i, L, t_off, r0, r1, is_max, True, acc_f, acc_i32)
                elif p == P_I8:
                    _pool_layer_rows(Q8, i, L, t_off, r0, r1, is_max, True, acc_f, acc_i64)
                else:
                    _pool_layer_rows(Q16, i, L, t_off, r0, r1, is_max, True, acc_f, acc_i64)
            if p != P_F32:
                qsc[tout, p] = qsc[tin, p]
                qzp[tout, p] = qzp[tin, p]
            valid[tout] = 1 << p
        elif op == OP_ADD:
            tin2 = L[i, LP_IN1]
            _ensure(tin, P_F32, valid, t_off, t_size, qsc, qzp, qmode, st_scale, st_zp, ost, F,
                    Q8, Q16)
            _ensure(tin2, P_F32, valid, t_off, t_size, qsc, qzp, qmode, st_scale, st_zp, ost,
                    F, Q8, Q16)
            a0, b0, o0 = t_off[tin], t_off[tin2], t_off[tout]
            amin, amax = np.float32(LF[i, 0]), np.float32(LF[i, 1])
            for j in range(t_size[tout]):
                v = F[a0 + j] + F[b0 + j]
                if v < amin:
                    v = amin
                if v > amax:
                    v = amax
                F[o0 + j] = v
            valid[tout] = 1
            if p != P_F32:
                _ensure(tout, p, valid, t_off, t_size, qsc, qzp, qmode, st_scale, st_zp, ost,
                        F, Q8, Q16)
                valid[tout] = 1 << p
        elif op == OP_SOFTMAX:
            a0, o0, n = t_off[tin], t_off[tout], t_size[tout]
            m = -np.inf
            for j in range(n):
                m = max(m, F[a0 + j])
            s = 0.0
            for j in range(n):
                e = math.exp(F[a0 + j] - m)
                F[o0 + j] = e
                s += e
            for j in range(n):
                F[o0 + j] = F[o0 + j] / s
            valid[tout] = 1


@intrinsic
def _borrow(typingctx, arr):
    """The same array without its reference-counted owner (meminfo set to NULL).

    Numba increments and decrements (atomically) the owner of every array
    argument at each call of a jitted function; with some 40 arrays handed down
    through several helper calls per layer that cost about a third of an
    incremental step (measured on kws12 with perf: ``lock incq/decq`` in
    ``NRT_incref/decref``). A borrowed view skips them. Only valid while the
    original array is alive, i.e. inside the call that borrowed it.
    """
    sig = arr(arr)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, value=args[0])
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        return ary._getvalue()

    return sig, codegen


@njit(cache=True)
def run_network(x_f32, x_q8, input_prec, out, L, LF, prec, rows, t_off, t_size, qmode,
                st_scale, st_zp, ost, alpha, qsc, qzp, valid, F, Q8, Q16, w_f32, w_i8, w_i16,
                b_f32, ws8, ws16, b_i32, mult, shift, acc_f, acc_i32, acc_i64, mscale,
                ring, advance, wpk_i, wpk_f, xw_i, xw_f, acc_ti, acc_tf, wpk_d, xw_d, acc_td,
                pool_sum, pool_at):
    """Run all layers once (one window, or one incremental step via ``rows``).

    ``x_f32`` (or ``x_q8`` when ``input_prec`` is int8, using tensor 0's static
    qparams) is written to tensor 0; ``out`` receives the last tensor in fp32.
    Running-mode EMAs are updated at the end from the ranges seen in this call.

    Incremental mode: ``advance == k >= 1`` first slides every ring tensor
    (``ring``, see :func:`_advance_rings`) by ``k`` rows, so each layer's cached
    rows move up and ``rows`` recomputes only the rows that changed. ``x_f32``
    may then hold only the newest ``k`` rows of tensor 0; with a static input
    scale, only those rows are quantized (the cached rows keep their integer
    copies). With ``k > 1`` the layers after the last ring tensor (the head: the
    global pool and what follows it) run once for each of the ``k`` windows ending
    at the new rows, each ring read ``k - 1 - j`` rows back for window ``j``, and
    ``out`` receives the ``k`` outputs one after another. That needs every ring
    layer's new rows to be its last ``k`` rows (no rows recomputed because of
    zero padding at the window's start).

    ``wpk_i`` / ``wpk_f`` / ``wpk_d`` are the GEMM-packed weights of G == 1 convs (int8,
    fp32, int16 as float64; offsets in ``L[:, LP_PKI/LP_PKF/LP_PKD]``), ``xw_*`` the
    im2col scratch and ``acc_t*`` the tile outputs (``acc_tf`` also the int stores' min/max).
    """
    x_f32, x_q8, out, L, LF, prec, rows = (_borrow(x_f32), _borrow(x_q8), _borrow(out),
                                           _borrow(L), _borrow(LF), _borrow(prec), _borrow(rows))
    t_off, t_size, qmode, st_scale, st_zp, ost = (_borrow(t_off), _borrow(t_size),
                                                  _borrow(qmode), _borrow(st_scale),
                                                  _borrow(st_zp), _borrow(ost))
    qsc, qzp, valid, F, Q8, Q16 = (_borrow(qsc), _borrow(qzp), _borrow(valid), _borrow(F),
                                   _borrow(Q8), _borrow(Q16))
    w_f32, w_i8, w_i16, b_f32, ws8, ws16 = (_borrow(w_f32), _borrow(w_i8), _borrow(w_i16),
                                            _borrow(b_f32), _borrow(ws8), _borrow(ws16))
    b_i32, mult, shift, acc_f, acc_i32, acc_i64 = (_borrow(b_i32), _borrow(mult),
                                                   _borrow(shift), _borrow(acc_f),
                                                   _borrow(acc_i32), _borrow(acc_i64))
    mscale, ring, wpk_i, wpk_f, xw_i, xw_f = (_borrow(mscale), _borrow(ring), _borrow(wpk_i),
                                              _borrow(wpk_f), _borrow(xw_i), _borrow(xw_f))
    acc_ti, acc_tf, wpk_d, xw_d, acc_td = (_borrow(acc_ti), _borrow(acc_tf), _borrow(wpk_d),
                                           _borrow(xw_d), _borrow(acc_td))
    pool_sum, pool_at = _borrow(pool_sum), _borrow(pool_at)
    n_layers = L.shape[0]
    n_t = t_off.shape[0]
    if advance >= 1:
        _advance_rings(ring, t_off, t_size, F, Q8, Q16, advance)
    n_main = n_layers  # layers run once; the head after them runs once per new row
    if advance > 1:
        n_main = 0
        while n_main < n_layers and ring[L[n_main, LP_OUT], RING_ROWS] > 0:
            n_main += 1
    for t in range(n_t):
        valid[t] = 0
        ost[t, OS_SEEN] = 0
    off0 = t_off[0]
    if input_prec == P_I8:
        for j in range(t_size[0]):
            Q8[off0 + j] = x_q8[j]
        qsc[0, P_I8] = st_scale[0, P_I8]
        qzp[0, P_I8] = st_zp[0, P_I8]
        valid[0] = 1 << P_I8
    else:
        start = t_size[0] - x_f32.shape[0]  # x_f32 holds the newest rows of tensor 0
        for j in range(x_f32.shape[0]):
            F[off0 + start + j] = x_f32[j]
        valid[0] = 1
        p0 = prec[0]
        if (advance >= 1 and start > 0 and p0 != P_F32 and qmode[0] == Q_STATIC
                and ring[0, RING_VALID] & (1 << p0)):
            qmin, qmax = _qrange(p0)
            scale, zp = st_scale[0, p0], st_zp[0, p0]
            if p0 == P_I8:
                sat = _quantize_region(F, Q8, off0 + start, x_f32.shape[0], scale, zp, qmin,
                                       qmax)
            else:
                sat = _quantize_region(F, Q16, off0 + start, x_f32.shape[0], scale, zp, qmin,
                                       qmax)
            mn, mx = _range(F, off0 + start, x_f32.shape[0])
            _note_range(0, ost, mn, mx, sat)
            qsc[0, p0], qzp[0, p0] = scale, zp
            valid[0] |= 1 << p0
    weights = (w_f32, w_i8, w_i16, b_f32, ws8, ws16, b_i32, mult, shift, wpk_i, wpk_f, wpk_d)
    scratch = (acc_f, acc_i32, acc_i64, mscale, xw_i, xw_f, acc_ti, acc_tf, xw_d, acc_td,
               pool_sum, pool_at)
    pool_at[0] = -1  # the rows changed since the last call: no pool sums to slide
    t_last = L[n_layers - 1, LP_OUT]
    n_out = t_size[t_last]
    n_views = advance if n_main < n_layers else 1
    # j == -1: the layers that run once; then the head once for each new window j
    # (one call site, so _run_layers is inlined once)
    for j in range(-1, n_views):
        back = n_views - 1 - j  # rows back from the newest window
        i0, i1 = (0, n_main) if j < 0 else (n_main, n_layers)
        if j >= 0 and i1 > i0:
            for t in range(n_t):  # the ring copies the layers wrote, seen `back` rows back
                if ring[t, RING_ROWS] > 0 and t > 0:
                    t_off[t] -= back * (t_size[t] // ring[t, RING_ROWS])
            for i in range(n_main):
                t = L[i, LP_OUT]
                if ring[t, RING_ROWS] > 0:
                    valid[t] = 1 << (P_F32 if L[i, LP_OP] == OP_SOFTMAX else prec[i])
        _run_layers(i0, i1, L, LF, prec, rows, t_off, t_size, qmode, st_scale, st_zp, ost, qsc,
                    qzp, valid, F, Q8, Q16, ring, weights, scratch)
        if j < 0:
            if ring[0, RING_ROWS] > 0:
                ring[0, RING_VALID] = valid[0]
            continue
        if i1 > i0:
            for t in range(n_t):
                if ring[t, RING_ROWS] > 0 and t > 0:
                    t_off[t] += back * (t_size[t] // ring[t, RING_ROWS])
        _ensure(t_last, P_F32, valid, t_off, t_size, qsc, qzp, qmode, st_scale, st_zp, ost, F,
                Q8, Q16)
        for jj in range(n_out):
            out[j * n_out + jj] = F[t_off[t_last] + jj]
    for t in range(1, n_t):
        if ring[t, RING_ROWS] > 0:
            ring[t, RING_VALID] = valid[t]
    for t in range(n_t):
        if ost[t, OS_SEEN] == 1 and qmode[t] == Q_RUNNING:
            if ost[t, OS_N] == 0:
                ost[t, OS_EMA_MIN] = ost[t, OS_WIN_MIN]
                ost[t, OS_EMA_MAX] = ost[t, OS_WIN_MAX]
            else:
                ost[t, OS_EMA_MIN] += alpha * (ost[t, OS_WIN_MIN] - ost[t, OS_EMA_MIN])
                ost[t, OS_EMA_MAX] += alpha * (ost[t, OS_WIN_MAX] - ost[t, OS_EMA_MAX])
            ost[t, OS_N] += 1


# ----------------------------------------------------------------------------- one-argument call

PLAN_ARRAYS = ("L", "LF", "t_off", "t_size", "qmode", "st_scale", "st_zp", "ost", "qsc", "qzp",
               "valid", "F", "Q8", "Q16", "w_f32", "w_i8", "w_i16", "b_f32", "ws8", "ws16",
               "b_i32", "mult", "shift", "acc_f", "acc_i32", "acc_i64", "mscale", "ring",
               "wpk_i", "wpk_f", "xw_i", "xw_f", "acc_ti", "acc_tf", "wpk_d", "xw_d", "acc_td",
               "pool_sum", "pool_at")


@structref.register
class _PlanArraysType(types.StructRef):
    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(t)) for name, t in fields)


class PlanArrays(structref.StructRefProxy):
    """The arrays of :func:`run_network` that a plan keeps from call to call (names in
    ``PLAN_ARRAYS``), as one object that shares their memory.

    :func:`run_plan` takes it instead of 37 separate arrays: numba's dispatcher checks
    and unboxes every argument of every call, about 3 us for run_network's 45, a tenth
    of a 5-frame kws12 int8 step; one struct argument plus the 8 that change cost about
    1.4 us (2-core EPYC).
    """


structref.define_proxy(PlanArrays, _PlanArraysType, list(PLAN_ARRAYS))


@njit(cache=True)
def new_plan_arrays(L, LF, t_off, t_size, qmode, st_scale, st_zp, ost, qsc, qzp, valid, F, Q8,
                    Q16, w_f32, w_i8, w_i16, b_f32, ws8, ws16, b_i32, mult, shift, acc_f,
                    acc_i32, acc_i64, mscale, ring, wpk_i, wpk_f, xw_i, xw_f, acc_ti, acc_tf,
                    wpk_d, xw_d, acc_td, pool_sum, pool_at):
    """A :class:`PlanArrays` of the arrays in ``PLAN_ARRAYS`` order, built by a cached
    compiled function: ``PlanArrays(...)`` from Python compiles the struct's constructor
    in every new process (1.2 s of a spotter's 3.5 s start, 2-core EPYC), this loads it
    from numba's cache."""
    return PlanArrays(L, LF, t_off, t_size, qmode, st_scale, st_zp, ost, qsc, qzp, valid, F,
                      Q8, Q16, w_f32, w_i8, w_i16, b_f32, ws8, ws16, b_i32, mult, shift,
                      acc_f, acc_i32, acc_i64, mscale, ring, wpk_i, wpk_f, xw_i, xw_f, acc_ti,
                      acc_tf, wpk_d, xw_d, acc_td, pool_sum, pool_at)


# new_plan_arrays passes its arguments on by position: they must be PLAN_ARRAYS, in order
assert new_plan_arrays.py_func.__code__.co_varnames[:len(PLAN_ARRAYS)] == PLAN_ARRAYS


@intrinsic
def _field(typingctx, s, name):
    """``s.<name>`` of a :class:`PlanArrays`, borrowed like :func:`_borrow`: numba's
    ``s.name`` takes a reference (an atomic increment, and a decrement when the caller
    ends), which for run_plan's 37 arrays cost about 0.5 us a call (perf: ``lock incq``
    / ``lock decq`` in ``NRT_incref`` / ``NRT_decref``; an A/B of kws12's 5-frame int8
    step, this and the unsigned _quantize_region together: 0.8 us of 21, 2-core EPYC).
    The struct ``s`` keeps every array alive for the whole call."""
    if not isinstance(name, types.StringLiteral):
        return None
    attr = name.literal_value
    field_type = s.field_dict[attr]

    def codegen(context, builder, signature, args):
        data = structref._Utils(context, builder, signature.args[0]).get_data_struct(args[0])
        ary = context.make_array(field_type)(context, builder, value=getattr(data, attr))
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        return ary._getvalue()

    return field_type(s, name), codegen


@njit(cache=True)
def run_plan(s, x_f32, x_q8, input_prec, out, prec, rows, alpha, advance):
    """:func:`run_network` with the plan's persistent arrays from ``s`` (:class:`PlanArrays`)."""
    run_network(x_f32, x_q8, input_prec, out, _field(s, "L"), _field(s, "LF"), prec, rows,
                _field(s, "t_off"), _field(s, "t_size"), _field(s, "qmode"),
                _field(s, "st_scale"), _field(s, "st_zp"), _field(s, "ost"), alpha,
                _field(s, "qsc"), _field(s, "qzp"), _field(s, "valid"), _field(s, "F"),
                _field(s, "Q8"), _field(s, "Q16"), _field(s, "w_f32"), _field(s, "w_i8"),
                _field(s, "w_i16"), _field(s, "b_f32"), _field(s, "ws8"), _field(s, "ws16"),
                _field(s, "b_i32"), _field(s, "mult"), _field(s, "shift"), _field(s, "acc_f"),
                _field(s, "acc_i32"), _field(s, "acc_i64"), _field(s, "mscale"),
                _field(s, "ring"), advance, _field(s, "wpk_i"), _field(s, "wpk_f"),
                _field(s, "xw_i"), _field(s, "xw_f"), _field(s, "acc_ti"), _field(s, "acc_tf"),
                _field(s, "wpk_d"), _field(s, "xw_d"), _field(s, "acc_td"),
                _field(s, "pool_sum"), _field(s, "pool_at"))


@njit(cache=True)
def run_plan_frames(s, frames, out, first, n, prec, rows_by_k, alpha):
    """Incremental steps over frames ``first .. first + n - 1`` of the flat frame buffer
    ``frames`` ([frames, features] row after row), their outputs into the same rows of the
    flat ``out``: :func:`run_plan` with ``advance = k`` and ``rows = rows_by_k[k]`` for
    ``k`` of at most ``rows_by_k.shape[0] - 1`` frames at a time.

    The buffers are sliced here instead of in Python: a streaming caller passes its
    fixed buffers and two integers, so a call makes no array objects and unboxes 4 arrays
    (run_plan: 5, plus the 2 slices made in Python, about 1 us of a 20 us 5-frame kws12
    int8 step, 2-core EPYC).
    """
    t_size, ring, L = _field(s, "t_size"), _field(s, "ring"), _field(s, "L")
    frame_size = t_size[0] // ring[0, RING_ROWS]
    n_out = t_size[L[L.shape[0] - 1, LP_OUT]]
    k_max = rows_by_k.shape[0] - 1
    i = first
    end = first + n
    while i < end:
        k = min(k_max, end - i)
        run_plan(s, frames[i * frame_size:(i + k) * frame_size], _field(s, "Q8"), P_F32,
                 out[i * n_out:(i + k) * n_out], prec, rows_by_k[k], alpha, k)
        i += k
