"""Real FFT of one frame, in numba, for the streaming front end.

Why not ``numpy.fft.rfft``: on the 2-core dev machine a call on the 5 frames of a 100 ms chunk
costs 15-30 us, nearly all of it fixed per-call overhead (a 1-row call costs 10 us, a 512-point
transform itself about 1 us), and it cannot be called from inside a compiled loop. Written
here, the front end turns all of a chunk's frames into features (window, FFT, mel, log) in
one compiled call.

Algorithm: a real transform of even length ``N = 2M`` as one complex transform of length ``M``
(even samples as real parts, odd samples as imaginary parts), iterative radix-2
decimation-in-time with a bit-reversed load and per-stage twiddle tables, then the usual split
``X[k] = E[k] + exp(-2 pi i k / N) O[k]``. float64 throughout, so it is at least as accurate
as pocketfft in float32 (the tests compare it with ``numpy.fft.rfft`` in float64).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["rfft_tables", "rfft_power"]


def rfft_tables(n_fft: int) -> tuple[np.ndarray, ...]:
    """Tables for :func:`rfft_power` of length ``n_fft`` (a power of two, at least 8).

    Returns ``bitrev`` (int64 [M]: the bit-reversal permutation of the half-length
    transform, ``M = n_fft / 2``); ``twiddle_re``, ``twiddle_im`` (float64 [M - 1]: stage
    by stage, ``exp(-2 pi i j / 2h)`` for ``j < h``, ``h = 1, 2, 4, ... M/2``; the first
    two stages do not read theirs); ``split_re``, ``split_im`` (float64 [M + 1]:
    ``exp(-2 pi i k / n_fft)``).
    """
    n_fft = int(n_fft)
    if n_fft < 8 or n_fft & (n_fft - 1):
        raise ValueError(f"n_fft must be a power of two >= 8, got {n_fft}")
    m = n_fft // 2
    bits = m.bit_length() - 1
    idx = np.arange(m)
    bitrev = np.zeros(m, np.int64)
    for b in range(bits):
        bitrev |= ((idx >> b) & 1) << (bits - 1 - b)
    twiddle = np.concatenate([np.exp(-1j * np.pi * np.arange(1 << s) / (1 << s))
                              for s in range(bits)])
    split = np.exp(-2j * np.pi * np.arange(m + 1) / n_fft)
    return (bitrev, np.ascontiguousarray(twiddle.real), np.ascontiguousarray(twiddle.imag),
            np.ascontiguousarray(split.real), np.ascontiguousarray(split.imag))


@njit(cache=True, nogil=True)
def rfft_power(frame, n_valid, bitrev, twiddle_re, twiddle_im, split_re, split_im, re, im,
               power):  # pragma: no cover - compiled
    """``power[k] = |X[k]|**2`` for ``k = 0 .. N/2`` of the real frame ``frame[:n_valid]``
    zero-padded to ``N = 2 * len(bitrev)`` (tables from :func:`rfft_tables`).

    ``re``, ``im``: float64 scratch of at least ``N / 2`` values; ``power``: float64
    [N/2 + 1]. Indices are unsigned: with signed ones numba checks every index for
    wrap-around, which made this loop 3-4x slower (2-core EPYC).
    """
    m = np.uint64(bitrev.shape[0])
    nv = np.uint64(n_valid)
    zero, one, two, three, four = (np.uint64(0), np.uint64(1), np.uint64(2), np.uint64(3),
                                   np.uint64(4))
    for k in range(m):
        i0 = two * np.uint64(bitrev[k])
        re[k] = np.float64(frame[i0]) if i0 < nv else 0.0
        im[k] = np.float64(frame[i0 + one]) if i0 + one < nv else 0.0
    # the first two stages as one radix-4 pass (twiddles 1 and -i)
    for s in range(zero, m, four):
        ar, ai, br, bi = re[s], im[s], re[s + one], im[s + one]
        cr, ci, dr, di = re[s + two], im[s + two], re[s + three], im[s + three]
        a1r, a1i, b1r, b1i = ar + br, ai + bi, ar - br, ai - bi
        c1r, c1i, d1r, d1i = cr + dr, ci + di, cr - dr, ci - di
        re[s], im[s] = a1r + c1r, a1i + c1i
        re[s + two], im[s + two] = a1r - c1r, a1i - c1i
        re[s + one], im[s + one] = b1r + d1i, b1i - d1r
        re[s + three], im[s + three] = b1r - d1i, b1i + d1r
    half = four
    t0 = three  # the twiddles of the stages h = 1, 2 are skipped
    while half < m:
        for start in range(zero, m, two * half):
            for j in range(half):
                a = start + j
                b = a + half
                wr = twiddle_re[t0 + j]
                wi = twiddle_im[t0 + j]
                tr = re[b] * wr - im[b] * wi
                ti = re[b] * wi + im[b] * wr
                re[b] = re[a] - tr
                im[b] = im[a] - ti
                re[a] += tr
                im[a] += ti
        t0 += half
        half *= two
    for k in range(m + one):
        k1 = k if k < m else zero
        k2 = m - k if k > zero else zero
        # Z[k] = E[k] + i O[k]: E, O the transforms of the even and odd samples
        er = 0.5 * (re[k1] + re[k2])
        ei = 0.5 * (im[k1] - im[k2])
        orr = 0.5 * (im[k1] + im[k2])
        oi = -0.5 * (re[k1] - re[k2])
        xr = er + orr * split_re[k] - oi * split_im[k]
        xi = ei + orr * split_im[k] + oi * split_re[k]
        power[k] = xr * xr + xi * xi
