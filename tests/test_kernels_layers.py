"""Depthwise conv, pooling, add, requantization, quantize / dequantize and fp32 kernels vs
slow NumPy references (integer: bit-exact; fp32: within float32 summation tolerance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import voxquant.kernels as K
from voxquant.kernels import RQ_FLOAT, RQ_TFLITE

INFO = {np.uint8: (0, 255), np.int8: (-128, 127), np.int16: (-32768, 32767)}


def mbqm_ref(x: int, mult: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    v = (x * (1 << left) + 2**31) % 2**32 - 2**31
    if v == mult == -(2**31):
        h = 2**31 - 1
    else:
        s = v * mult + ((1 << 30) if v * mult >= 0 else 1 - (1 << 30))
        h = abs(s) // (1 << 31) * (1 if s >= 0 else -1)
    mask = (1 << right) - 1
    return (h >> right) + (1 if (h & mask) > (mask >> 1) + (1 if h < 0 else 0) else 0)


def pad_geometry(h, w, kh, kw, sh, sw, pads):
    pt, pb, pl, pr = pads
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 8), w=st.integers(1, 6), c=st.integers(1, 19), kh=st.integers(1, 3),
    kw=st.integers(1, 3), sh=st.integers(1, 2), sw=st.integers(1, 2),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    x_dtype=st.sampled_from([np.uint8, np.int8, np.int16]),
    x_zp=st.integers(-4, 4), rq_mode=st.sampled_from([RQ_FLOAT, RQ_TFLITE]),
    seed=st.integers(0, 2**31), extreme=st.booleans(),
    rows=st.tuples(st.integers(0, 9), st.integers(0, 9)),
)
def test_depthwise_bit_exact(h, w, c, kh, kw, sh, sw, pads, x_dtype, x_zp, rq_mode, seed, extreme,
                             rows):
    ho, wo = pad_geometry(h, w, kh, kw, sh, sw, pads)
    if ho < 1 or wo < 1:
        return
    rng = np.random.default_rng(seed)
    lo, hi = INFO[x_dtype]
    x = (rng.choice([lo, hi], (h, w, c)) if extreme else rng.integers(lo, hi + 1, (h, w, c)))
    x = x.astype(x_dtype)
    wt = rng.integers(-128, 128, (c, 1, kh, kw)).astype(np.int8)
    bias = rng.integers(-2000, 2000, c).astype(np.int32)
    scale = (rng.uniform(0.5, 2.0, c) / (kh * kw * max(abs(lo), hi) * 128 / 100)).astype(
        np.float32)
    mult, shift = K.quantize_multipliers(scale)
    h0, h1 = sorted((min(rows[0], ho), min(rows[1], ho)))
    y = np.full((ho, wo, c), 99, np.int8)
    work = np.empty(K.work_size(c), np.int32)
    K.depthwise_conv_q(x, x_zp, K.pack_depthwise_weights(wt), bias, kh, kw, sh, sw, *pads,
                       rq_mode, scale, mult, shift, -3, -100, 100, y, h0, h1, work)
    pt, pb, pl, pr = pads
    xp = np.pad(x.astype(np.int64) - x_zp, ((pt, pb), (pl, pr), (0, 0)))
    total = np.zeros((ho, wo, c), np.int64) + bias
    for i in range(kh):
        for j in range(kw):
            total += xp[i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] * wt[:, 0, i, j]
    if rq_mode == RQ_FLOAT:
        v = np.rint(total.astype(np.int32).astype(np.float32) * scale).astype(np.int64)
    else:
        v = np.vectorize(mbqm_ref, otypes=[np.int64])(total, mult[None, None], shift[None, None])
    ref = np.clip(v - 3, -100, 100)
    np.testing.assert_array_equal(y[h0:h1], ref[h0:h1])
    assert (y[:h0] == 99).all() and (y[h1:] == 99).all()


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 7), w=st.integers(1, 6), c=st.integers(1, 9), kh=st.integers(1, 4),
    kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
    pads=st.tuples(*[st.integers(0, 1)] * 4), seed=st.integers(0, 2**31),
)
def test_avg_pool_tflite_rounding(h, w, c, kh, kw, sh, sw, pads, seed):
    ho, wo = pad_geometry(h, w, kh, kw, sh, sw, pads)
    if ho < 1 or wo < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
    y = np.empty((ho, wo, c), np.int8)
    K.avg_pool_q(x, kh, kw, sh, sw, *pads, -128, 127, y, 0, ho, np.empty(K.work_size(c), np.int32))
    pt, _, pl, _ = pads
    for oh in range(ho):
        for ow in range(wo):
            hs = [oh * sh - pt + i for i in range(kh) if 0 <= oh * sh - pt + i < h]
            ws = [ow * sw - pl + j for j in range(kw) if 0 <= ow * sw - pl + j < w]
            if not hs or not ws:
                assert (y[oh, ow] == 0).all()
                continue
            acc = x[np.ix_(hs, ws)].astype(np.int64).sum((0, 1))
            n = len(hs) * len(ws)
            # TFLite: (acc +- n/2) / n with C++ truncation = round half away from zero
            ref = np.array([math.trunc((a + (n // 2 if a > 0 else -(n // 2))) / n)
                            for a in acc.tolist()])
            np.testing.assert_array_equal(y[oh, ow], np.clip(ref, -128, 127))


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 20), c=st.integers(1, 40), kh=st.integers(1, 20),
    dtype=st.sampled_from([np.int8, np.int16]), extreme=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_engine_avg_pool_rows_tflite_rounding(h, c, kh, dtype, extreme, seed):
    """The engine's row pool (``network.pool_rows``: int8 sums in int32, the rounding
    division in float64) against integer arithmetic, over lengths, signs and extremes."""
    from voxquant.kernels import network as net

    lo, hi = INFO[dtype]
    rng = np.random.default_rng(seed)
    x = rng.integers(lo, hi + 1, (h, 1, c)).astype(dtype)
    if extreme:
        x[:] = rng.choice([lo, hi], size=x.shape)
    kh = min(kh, h)
    ho = h - kh + 1
    arena = np.zeros(x.size + ho * c, dtype)
    arena[: x.size] = x.reshape(-1)
    acc = np.zeros(c, np.int32 if dtype == np.int8 else np.int64)
    net.pool_rows(arena, 0, h, 1, c, kh, 1, 1, 1, 0, 0, 1, x.size, 0, ho, False, True,
                  np.zeros(c, np.float32), acc)
    for oh in range(ho):
        sums = x[oh : oh + kh, 0].astype(np.int64).sum(0).tolist()
        half = kh // 2
        ref = [(a + half) // kh if a > 0 else -((-a + half) // kh) for a in sums]
        np.testing.assert_array_equal(arena[x.size + oh * c : x.size + (oh + 1) * c], ref)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 70), scale=st.floats(1e-3, 10.0), zp=st.integers(-20, 20),
       seed=st.integers(0, 2**31))
def test_engine_quantize_region_rounds_half_away_from_zero(n, scale, zp, seed):
    """``network._quantize_region`` (the input quantizer) against a scalar reference, with
    values at exact halves of the scale, zeros of either sign and values far out of range."""
    from voxquant.kernels import network as net

    rng = np.random.default_rng(seed)
    s32 = np.float32(scale)
    halves = (rng.integers(-300, 300, n) + 0.5).astype(np.float32) * s32
    x = np.where(rng.random(n) < 0.5, halves, rng.normal(0, 200, n).astype(np.float32) * s32)
    x[rng.random(n) < 0.1] = -0.0
    if seed % 2:  # scale 1, and the float32 just below a half rounds down (in float64;
        scale, s32 = 1.0, np.float32(1.0)  # a float32 sum would round it up)
        below = np.nextafter(np.float32(rng.integers(0, 3) + 0.5), np.float32(0))
        x[0] = below * rng.choice([-1, 1])
    x = x.astype(np.float32)
    q = np.zeros(n, np.int8)
    sat = net._quantize_region(x, q, 0, n, scale, zp, -128, 127)
    ref, ref_sat = [], 0
    for v in (x / s32).tolist():  # float32 division, as TFLite's QUANTIZE
        r = math.floor(abs(v) + 0.5)
        r = (r if v >= 0 else -r) + zp
        ref_sat += r < -128 or r > 127
        ref.append(min(max(r, -128), 127))
    np.testing.assert_array_equal(q, ref)
    assert sat == ref_sat


_GEMM_ACC = None


def _int8_gemm_acc(*args):
    """``network._int8_gemm_acc`` (inlined in the engine) behind one compiled wrapper."""
    global _GEMM_ACC
    if _GEMM_ACC is None:
        from numba import njit

        from voxquant.kernels import network as net

        @njit
        def call(Q, zp, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, CO, WO, wpk, r0, r1,
                 xw, acc):
            net._int8_gemm_acc(Q, zp, in_off, H, W, C, KH, KW, SH, SW, PT, PL, DH, DW, CO, WO,
                               wpk, 0, r0, r1, xw, acc)

        _GEMM_ACC = call
    _GEMM_ACC(*args)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 10), w=st.integers(1, 7), c=st.integers(1, 5), co=st.integers(1, 35),
    kh=st.integers(1, 4), kw=st.integers(1, 3), full_width=st.booleans(),
    sh=st.integers(1, 2), dh=st.integers(1, 2), pads=st.tuples(*[st.integers(0, 2)] * 4),
    zp=st.integers(-128, 127), rows=st.tuples(st.integers(0, 10), st.integers(0, 10)),
    roomy=st.booleans(), extreme=st.booleans(), seed=st.integers(0, 2**31),
)
def test_engine_int8_conv_sums_equal_reference(h, w, c, co, kh, kw, full_width, sh, dh, pads,
                                               zp, rows, roomy, extreme, seed):
    """The engine's int8 G == 1 conv sums (``network._int8_gemm_acc``: the pointwise,
    contiguous-rows, padded-copy and per-tap im2col branches, then the vpmaddwd tiles)
    equal integer arithmetic, for any rows, padding (real zeros), stride and dilation."""
    from voxquant.kernels import network as net
    from voxquant.models.plan import _pack_gemm_int8

    pt, pb, pl, pr = pads
    if full_width:  # a kernel over the whole width, as kws12's first layer
        kw, pl, pr = w, 0, 0
    ho = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    wo = (w + pl + pr - kw) // 1 + 1
    r0, r1 = sorted((min(rows[0], ho), min(rows[1], ho)))
    if ho < 1 or wo < 1 or r1 == r0:
        return
    rng = np.random.default_rng(seed)
    x = (rng.choice([-128, 127], (h, w, c)) if extreme
         else rng.integers(-128, 128, (h, w, c))).astype(np.int8)
    wt = (rng.choice([-128, 127], (kh, kw, c, co)) if extreme
          else rng.integers(-128, 128, (kh, kw, c, co))).astype(np.int8)
    k_size, m = kh * kw * c, (r1 - r0) * wo
    kp = -(-k_size // 4) * 4
    in_off = 5
    arena = np.zeros(in_off + x.size + 3, np.int8)
    arena[in_off : in_off + x.size] = x.reshape(-1)
    # a roomy scratch lets im2col_padded keep its zero-padded copy after the rows
    xw = np.zeros(m * kp + (4096 if roomy else 0), np.int16)
    nb = -(-co // net.GEMM_NR)
    acc = np.zeros(nb * m * net.GEMM_NR, np.int32)
    _int8_gemm_acc(arena, zp, in_off, h, w, c, kh, kw, sh, 1, pt, pl, dh, 1, co, wo,
                   _pack_gemm_int8(wt.reshape(k_size, co)), r0, r1, xw, acc)
    real = np.zeros((h + pt + pb + 2 * dh * kh, w + pl + pr, c), np.int64)  # padding is 0
    real[pt : pt + h, pl : pl + w] = x.astype(np.int64) - zp
    ref = np.zeros((ho, wo, co), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = real[ky * dh : ky * dh + sh * (ho - 1) + 1 : sh, kx : kx + wo]
            ref += patch @ wt[ky, kx].astype(np.int64)
    got = acc.reshape(nb, m, net.GEMM_NR).transpose(1, 0, 2).reshape(m, -1)[:, :co]
    np.testing.assert_array_equal(got, ref[r0:r1].reshape(m, co))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 3), c=st.integers(1, 40),
       moves=st.lists(st.integers(-2, 3), min_size=1, max_size=8), extreme=st.booleans(),
       seed=st.integers(0, 2**31))
def test_engine_global_average_slides_exactly(h, w, c, moves, extreme, seed):
    """``network.global_avg_int8`` over windows that move on by one row (sums slid), by
    other steps or not at all (sums redone) equals the rounded average of each window."""
    from voxquant.kernels import network as net

    rng = np.random.default_rng(seed)
    n_rows = h + 3 * len(moves) + 2
    x = (rng.choice([-128, 127], (n_rows, w, c)) if extreme
         else rng.integers(-128, 128, (n_rows, w, c))).astype(np.int8)
    arena = np.concatenate([x.reshape(-1), np.full(c, 99, np.int8)])
    out_off = x.size
    sums, at = np.zeros(c, np.int32), np.full(2, -1, np.int64)
    start = 0
    for move in moves:
        start = min(max(start + move, 0), n_rows - h)
        net.global_avg_int8(arena, start * w * c, h, w * c, c, out_off, sums, at, 3)
        total = x[start : start + h].astype(np.int64).sum((0, 1)).tolist()
        n, half = h * w, (h * w) // 2
        ref = [(a + half) // n if a > 0 else -((-a + half) // n) for a in total]
        np.testing.assert_array_equal(arena[out_off:], ref)
    np.testing.assert_array_equal(arena[:out_off], x.reshape(-1))  # the input is untouched


def test_global_avg_pool_and_running_sums():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (25, 5, 64)).astype(np.uint8)
    y = np.empty(64, np.uint8)
    work = np.empty(K.work_size(64), np.int32)
    scale = np.float32(0.05 / (125 * 0.04))
    K.global_avg_pool_q(x, 7, 0, 25, scale, 3, 0, 255, y, work)
    ref = np.rint((x.astype(np.int64).sum((0, 1)) - 125 * 7).astype(np.float32) * scale) + 3
    np.testing.assert_array_equal(y, np.clip(ref, 0, 255))
    acc = np.zeros(64, np.int64)
    K.sum_rows_i32(x, 0, 10, acc)
    K.sum_rows_i32(x, 10, 25, acc)
    np.testing.assert_array_equal(acc, x.astype(np.int64).sum((0, 1)))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), a_zp=st.integers(-20, 20), b_zp=st.integers(-20, 20),
       y_zp=st.integers(-20, 20), sa=st.floats(0.01, 4.0), sb=st.floats(0.01, 4.0),
       seed=st.integers(0, 2**31))
def test_add_q_bit_exact(n, a_zp, b_zp, y_zp, sa, sb, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, n).astype(np.int8)
    b = rng.integers(-128, 128, n).astype(np.int8)
    y = np.empty(n, np.int8)
    vmin, vmax = K.add_q(a, a_zp, sa, b, b_zp, sb, y_zp, -128, 127, y)
    f = ((a.astype(np.int32) - a_zp).astype(np.float32) * np.float32(sa)
         + (b.astype(np.int32) - b_zp).astype(np.float32) * np.float32(sb))
    np.testing.assert_array_equal(y, np.clip(np.rint(f) + y_zp, -128, 127))
    assert vmin == pytest.approx(float(f.min())) and vmax == pytest.approx(float(f.max()))


def test_quantize_multiplier_matches_tflite_rule():
    for m in [1e-6, 0.0003, 0.25, 0.5, 0.7071, 0.99999999, 1.0, 1.5, 3.999]:
        q, shift = K.quantize_multiplier(m)
        assert 2**30 <= q < 2**31
        assert abs(q * 2.0 ** (shift - 31) - m) <= m * 2**-30
    assert K.quantize_multiplier(0.0) == (0, 0)
    # frac rounding up to 2**31 renormalizes
    q, shift = K.quantize_multiplier(1.0 - 2**-40)
    assert (q, shift) == (2**30, 1)


@settings(max_examples=60, deadline=None)
@given(acc=st.integers(-(2**31), 2**31 - 1), m=st.floats(1e-7, 3.0))
def test_multiply_by_quantized_multiplier(acc, m):
    q, shift = K.quantize_multiplier(m)
    assert K.multiply_by_quantized_multiplier(acc, q, shift) == mbqm_ref(acc, q, shift)


def test_requantize_saturation_and_range():
    acc = np.array([[-(2**31), -1000, 0, 999, 2**31 - 1]], np.int32)
    y = np.empty((1, 5), np.int8)
    scale = np.full(5, 0.1, np.float32)
    z = np.zeros(5, np.int32)
    vmin, vmax = K.requantize(acc, z, RQ_FLOAT, scale, z, z, 0, 0, 6, y)  # fused ReLU6
    np.testing.assert_array_equal(y[0], [0, 0, 0, 6, 6])
    assert vmin == np.rint(np.float32(-(2**31)) * np.float32(0.1))  # pre-clamp range
    assert vmax == np.rint(np.float32(2**31 - 1) * np.float32(0.1))
    big = np.full(5, 1e3, np.float32)
    vmin, vmax = K.requantize(acc, z, RQ_FLOAT, big, z, z, 0, 0, 6, y)
    assert vmin == -(2**30) and vmax == 2**30  # clipped to +-2**30 before rounding
    acc2 = np.array([[5, 15, 25, -5, -15]], np.int32)
    K.requantize(acc2, z, RQ_FLOAT, scale, z, z, 0, -128, 127, y)
    np.testing.assert_array_equal(y[0], [0, 2, 2, 0, -2])  # half to even: 0.5->0, 1.5->2, 2.5->2


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 500), scale=st.floats(1e-3, 1.0), zp=st.integers(-10, 10),
       seed=st.integers(0, 2**31))
def test_quantize_dequantize_with_fused_max(n, scale, zp, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * rng.uniform(0.01, 200)).astype(np.float32)
    q = np.empty(n, np.int8)
    amax, n_sat = K.quantize_f32(x, scale, zp, -128, 127, q)
    r = np.rint(x / np.float32(scale)) + zp
    np.testing.assert_array_equal(q, np.clip(r, -128, 127))
    assert amax == np.abs(x).max()
    assert n_sat == int(((r < -128) | (r > 127)).sum())
    d = np.empty(n, np.float32)
    dmax = K.dequantize(q, scale, zp, d)
    ref = (q.astype(np.int32) - zp).astype(np.float32) * np.float32(scale)
    np.testing.assert_array_equal(d, ref)
    assert dmax == np.abs(ref).max()
    assert K.max_abs_f32(x) == np.abs(x).max()
    assert K.max_abs_int(q, zp) == np.abs(q.astype(np.int64) - zp).max()


def test_fp32_kernels_match_numpy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 6, 7)).astype(np.float32)
    w = rng.standard_normal((11, 7, 3, 2)).astype(np.float32)
    b = rng.standard_normal(11).astype(np.float32)
    pads = (1, 0, 1, 1)
    ho, wo = pad_geometry(9, 6, 3, 2, 2, 1, pads)
    y = np.zeros((ho, wo, 11), np.float32)
    col = np.empty(ho * wo * 42, np.float32)
    wp = K.pack_gemm_weights_f32(K.conv_weights_nk(w))
    vmin, vmax = K.conv2d_f32(x, wp, b, 3, 2, 2, 1, *pads, col, 0.0, 6.0, y, 0, ho)
    xp = np.pad(x.astype(np.float64), ((1, 0), (1, 1), (0, 0)))
    ref = np.zeros((ho, wo, 11)) + b
    for i in range(3):
        for j in range(2):
            ref += xp[i:i + 2 * (ho - 1) + 1:2, j:j + wo, :] @ w[:, :, i, j].T.astype(np.float64)
    np.testing.assert_allclose(y, np.clip(ref, 0, 6), rtol=1e-5, atol=1e-5)
    assert vmin == pytest.approx(ref.min(), rel=1e-5) and vmax == pytest.approx(ref.max(),
                                                                                 rel=1e-5)
    wd = rng.standard_normal((7, 1, 3, 3)).astype(np.float32)
    yd = np.zeros((9, 6, 7), np.float32)
    K.depthwise_conv_f32(x, K.pack_depthwise_weights_f32(wd), b[:7], 3, 3, 1, 1, 1, 1, 1, 1,
                         -np.inf, np.inf, yd, 0, 9, np.empty(7, np.float32))
    xp = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    refd = sum(xp[i:i + 9, j:j + 6] * wd[:, 0, i, j] for i in range(3) for j in range(3)) + b[:7]
    np.testing.assert_allclose(yd, refd, rtol=1e-5, atol=1e-5)
    yp = np.zeros((1, 1, 7), np.float32)
    K.avg_pool_f32(x, 9, 6, 1, 1, 0, 0, 0, 0, yp, 0, 1, np.empty(7, np.float32))
    np.testing.assert_allclose(yp[0, 0], x.mean((0, 1)), rtol=1e-5, atol=1e-6)
    xf = rng.standard_normal((4, 30)).astype(np.float32)
    wf = rng.standard_normal((5, 30)).astype(np.float32)
    yf = np.zeros((4, 5), np.float32)
    K.gemm_f32(xf, K.pack_gemm_weights_f32(wf), b[:5], -np.inf, np.inf, yf, 1, 3)
    np.testing.assert_allclose(yf[1:3], xf[1:3] @ wf.T + b[:5], rtol=1e-5, atol=1e-5)
    assert (yf[0] == 0).all() and (yf[3] == 0).all()
    ya = np.empty(30, np.float32)
    K.add_f32(xf[0], xf[1], 0.0, np.inf, ya)
    np.testing.assert_array_equal(ya, np.maximum(xf[0] + xf[1], 0))
