"""GEMM-family kernels (gemm, fully connected, pointwise, conv2d) vs slow NumPy references,
bit-exact, on every dispatch path this CPU can run (others skip with the reason)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import voxquant.kernels as K
from voxquant.kernels import RQ_FLOAT, RQ_NONE, RQ_TFLITE

PATHS = [
    pytest.param(p, marks=pytest.mark.skipif(not K.path_supported(p),
                                             reason=f"this CPU cannot run the {p} kernels"))
    for p in K.PATHS
]
INFO = {np.uint8: (0, 255), np.int8: (-128, 127), np.int16: (-32768, 32767)}


def mbqm_ref(x: int, mult: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier in plain Python integers (C++ semantics)."""
    left, right = max(shift, 0), max(-shift, 0)
    v = x * (1 << left)
    v = (v + 2**31) % 2**32 - 2**31  # int32 wrap
    if v == mult == -(2**31):
        h = 2**31 - 1
    else:
        ab = v * mult
        nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
        s = ab + nudge
        h = abs(s) // (1 << 31) * (1 if s >= 0 else -1)  # truncate toward zero
    mask = (1 << right) - 1
    rem = h & mask
    thr = (mask >> 1) + (1 if h < 0 else 0)
    return (h >> right) + (1 if rem > thr else 0)


def requant_ref(total, rq_mode, scale, mult, shift, y_zp, qmin, qmax):
    """Reference output stage on int64 totals [..., N]: returns (q, rounded pre-clamp values)."""
    total = np.asarray(total, dtype=np.int64)
    if rq_mode == RQ_NONE:
        v = total
        q = v
    elif rq_mode == RQ_TFLITE:
        flat = total.reshape(-1, total.shape[-1])
        v = np.array([[mbqm_ref(int(a), int(mult[n]), int(shift[n])) for n, a in enumerate(row)]
                      for row in flat], dtype=np.int64).reshape(total.shape)
        q = v + y_zp
    else:
        f = total.astype(np.int32).astype(np.float32) * scale.astype(np.float32)
        v = np.rint(np.clip(f, np.float32(-(2.0**30)), np.float32(2.0**30))).astype(np.int64)
        q = v + y_zp
    return np.clip(q, qmin, qmax), v


def make_case(rng, m, k, n, x_dtype, extreme, y_zp, rq_mode):
    lo, hi = INFO[x_dtype]
    if extreme:
        x = rng.choice(np.array([lo, hi], dtype=np.int64), size=(m, k)).astype(x_dtype)
        w = rng.choice(np.array([-128, 127], dtype=np.int64), size=(n, k)).astype(np.int8)
    else:
        x = rng.integers(lo, hi + 1, (m, k)).astype(x_dtype)
        w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    bias = rng.integers(-5000, 5000, n).astype(np.int32)
    scale = (rng.uniform(0.2, 2.0, n) / (np.abs(w).sum(1) * max(abs(lo), hi) / 64 + 1)).astype(
        np.float32)
    mult, shift = K.quantize_multipliers(scale)
    return x, w, bias, scale, mult, shift


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 11), k=st.integers(1, 70), n=st.integers(1, 37),
    x_dtype=st.sampled_from([np.uint8, np.int8, np.int16]), extreme=st.booleans(),
    x_zp=st.integers(-3, 3), y_zp=st.integers(-5, 5),
    rq_mode=st.sampled_from([RQ_FLOAT, RQ_TFLITE, RQ_NONE]), seed=st.integers(0, 2**31),
    rows=st.tuples(st.integers(0, 11), st.integers(0, 11)),
)
def test_gemm_bit_exact(path, m, k, n, x_dtype, extreme, x_zp, y_zp, rq_mode, seed, rows):
    mod = K.path_module(path)
    rng = np.random.default_rng(seed)
    x, w, bias, scale, mult, shift = make_case(rng, m, k, n, x_dtype, extreme, y_zp, rq_mode)
    lo_q, hi_q = (-(2**31), 2**31 - 1) if rq_mode == RQ_NONE else (-128, 127)
    y_dtype = np.int32 if rq_mode == RQ_NONE else np.int8
    m0, m1 = sorted((min(rows[0], m), min(rows[1], m)))
    wp = mod.pack_gemm_weights(w)
    assert wp.dtype == mod.PACKED_DTYPE and wp.size == mod.packed_size(k, n)
    y = np.full((m, n), 77, dtype=y_dtype)
    work = np.empty(K.work_size(max(k, n)), np.int32)
    vmin, vmax = mod.gemm_q(x, x_zp, wp, K.weight_sums(w), bias, rq_mode, scale, mult, shift,
                            y_zp, lo_q, hi_q, y, m0, m1, work)
    total = (x.astype(np.int64) - x_zp) @ w.astype(np.int64).T + bias
    q_ref, v_ref = requant_ref(total, rq_mode, scale, mult, shift, y_zp, lo_q, hi_q)
    np.testing.assert_array_equal(y[m0:m1], q_ref[m0:m1])
    assert (y[:m0] == 77).all() and (y[m1:] == 77).all(), "rows outside the range were written"
    if m1 > m0:
        assert vmin == v_ref[m0:m1].min() and vmax == v_ref[m0:m1].max()


def test_overflow_bounds_stated_and_enforced():
    # 8-bit: the worst product magnitude times K must stay below 2**31
    assert K.MAX_K_8BIT * 255 * 128 < 2**31 <= (K.MAX_K_8BIT + 1) * 255 * 128
    for path in [p for p in K.PATHS if K.path_supported(p)]:
        mod = K.path_module(path)
        assert mod.MAX_K_INT16 * 2**22 < 2**31 <= (mod.MAX_K_INT16 + 1) * 2**22
        # worst case at the bound is exact: K=511 of (-32768) * (-128)
        k = mod.MAX_K_INT16
        x = np.full((1, k), -32768, np.int16)
        w = np.full((1, k), -128, np.int8)
        y = np.empty((1, 1), np.int32)
        one = np.ones(1, np.float32)
        zero = np.zeros(1, np.int32)
        work = np.empty(K.work_size(k + 1), np.int32)
        mod.gemm_q(x, 0, mod.pack_gemm_weights(w), zero, zero, RQ_NONE, one, zero, zero, 0,
                   -(2**31), 2**31 - 1, y, 0, 1, work)
        assert y[0, 0] == k * 2**22
        xb = np.full((1, k + 1), 1, np.int16)
        wb = np.full((1, k + 1), 1, np.int8)
        with pytest.raises(ValueError):
            mod.gemm_q(xb, 0, mod.pack_gemm_weights(wb), zero, zero, RQ_NONE, one, zero, zero, 0,
                       -(2**31), 2**31 - 1, y, 0, 1, work)
        # 8-bit worst case is exact for a large K
        k8 = 4000
        x8 = np.full((2, k8), 255, np.uint8)
        w8 = np.full((1, k8), -128, np.int8)
        y8 = np.empty((2, 1), np.int32)
        mod.gemm_q(x8, 0, mod.pack_gemm_weights(w8), zero, zero, RQ_NONE, one, zero, zero, 0,
                   -(2**31), 2**31 - 1, y8, 0, 2, np.empty(K.work_size(k8), np.int32))
        assert (y8 == -255 * 128 * k8).all()


def conv_ref(x, x_zp, w_oihw, bias, stride, pads):
    """Direct NHWC conv with zero-point padding, int64: returns [Ho, Wo, Cout] totals."""
    pt, pb, pl, pr = pads
    xp = np.pad(x.astype(np.int64) - x_zp, ((pt, pb), (pl, pr), (0, 0)))
    cout, cin, kh, kw = w_oihw.shape
    ho = (xp.shape[0] - kh) // stride[0] + 1
    wo = (xp.shape[1] - kw) // stride[1] + 1
    out = np.zeros((ho, wo, cout), np.int64) + bias
    for i in range(kh):
        for j in range(kw):
            patch = xp[i:i + stride[0] * (ho - 1) + 1:stride[0],
                       j:j + stride[1] * (wo - 1) + 1:stride[1], :]
            out += patch @ w_oihw[:, :, i, j].astype(np.int64).T
    return out


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 9), w_in=st.integers(1, 7), cin=st.integers(1, 6), cout=st.integers(1, 20),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
    pads=st.tuples(*[st.integers(0, 2)] * 4), x_dtype=st.sampled_from([np.uint8, np.int8]),
    x_zp=st.integers(-10, 10), seed=st.integers(0, 2**31), extreme=st.booleans(),
    rows=st.tuples(st.integers(0, 12), st.integers(0, 12)),
)
def test_conv2d_bit_exact(path, h, w_in, cin, cout, kh, kw, sh, sw, pads, x_dtype, x_zp, seed,
                          extreme, rows):
    pt, pb, pl, pr = pads
    ho = (h + pt + pb - kh) // sh + 1
    wo = (w_in + pl + pr - kw) // sw + 1
    if ho < 1 or wo < 1:
        return
    mod = K.path_module(path)
    rng = np.random.default_rng(seed)
    lo, hi = INFO[x_dtype]
    if x_dtype is np.uint8:
        x_zp = abs(x_zp) * 12
    x = (rng.choice([lo, hi], (h, w_in, cin)) if extreme
         else rng.integers(lo, hi + 1, (h, w_in, cin))).astype(x_dtype)
    w = rng.integers(-128, 128, (cout, cin, kh, kw)).astype(np.int8)
    bias = rng.integers(-3000, 3000, cout).astype(np.int32)
    scale = rng.uniform(1e-4, 5e-3, cout).astype(np.float32)
    mult, shift = K.quantize_multipliers(scale)
    h0, h1 = sorted((min(rows[0], ho), min(rows[1], ho)))
    wnk = K.conv_weights_nk(w)
    wp = mod.pack_gemm_weights(wnk)
    col = np.empty(max(1, ho * wo * kh * kw * cin), x_dtype)
    y = np.full((ho, wo, cout), 55, np.uint8)
    work = np.empty(K.work_size(max(kh * kw * cin, cout)), np.int32)
    mod.conv2d_q(x, x_zp, wp, K.weight_sums(wnk), bias, kh, kw, sh, sw, pt, pb, pl, pr, col,
                 RQ_FLOAT, scale, mult, shift, 3, 0, 200, y, h0, h1, work)
    total = conv_ref(x, x_zp, w, bias, (sh, sw), pads)
    q_ref, _ = requant_ref(total, RQ_FLOAT, scale, mult, shift, 3, 0, 200)
    np.testing.assert_array_equal(y[h0:h1], q_ref[h0:h1])
    assert (y[:h0] == 55).all() and (y[h1:] == 55).all()


@pytest.mark.parametrize("path", PATHS)
def test_pointwise_and_fc_match_gemm(path):
    mod = K.path_module(path)
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (6, 5, 19)).astype(np.int8)
    w = rng.integers(-128, 128, (21, 19)).astype(np.int8)
    bias = rng.integers(-900, 900, 21).astype(np.int32)
    scale = rng.uniform(1e-3, 3e-3, 21).astype(np.float32)
    mult, shift = K.quantize_multipliers(scale)
    wp, ws = mod.pack_gemm_weights(w), K.weight_sums(w)
    work = np.empty(K.work_size(21), np.int32)
    y = np.zeros((6, 5, 21), np.int8)
    mod.pointwise_conv_q(x, -2, wp, ws, bias, RQ_TFLITE, scale, mult, shift, -1, 0, 127, y, 2, 5,
                         work)
    total = (x.astype(np.int64) + 2) @ w.astype(np.int64).T + bias
    q_ref, _ = requant_ref(total, RQ_TFLITE, scale, mult, shift, -1, 0, 127)
    np.testing.assert_array_equal(y[2:5], q_ref[2:5])
    assert (y[:2] == 0).all() and (y[5:] == 0).all()
    y1 = np.zeros(21, np.int8)
    mod.fully_connected_q(x[0, 0], -2, wp, ws, bias, RQ_FLOAT, scale, mult, shift, 0, -128, 127,
                          y1, work)
    q1, _ = requant_ref(total[0, 0], RQ_FLOAT, scale, mult, shift, 0, -128, 127)
    np.testing.assert_array_equal(y1, q1)


def test_paths_agree_on_a_large_case():
    paths = [p for p in K.PATHS if K.path_supported(p)]
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (53, 276)).astype(np.uint8)
    w = rng.integers(-127, 128, (70, 276)).astype(np.int8)
    bias = rng.integers(-9999, 9999, 70).astype(np.int32)
    scale = np.full(70, 4e-4, np.float32)
    outs = []
    for p in paths:
        mod = K.path_module(p)
        y = np.empty((53, 70), np.int8)
        mod.gemm_q(x, 128, mod.pack_gemm_weights(w), K.weight_sums(w), bias, RQ_FLOAT, scale,
                   np.zeros(70, np.int32), np.zeros(70, np.int32), 0, -128, 127, y, 0, 53,
                   np.empty(K.work_size(276), np.int32))
        outs.append(y)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    assert len(np.unique(outs[0])) > 50  # the scale exercises the whole output range
