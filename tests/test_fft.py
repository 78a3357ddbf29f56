"""The front end's real FFT (kernels/fft.py) against numpy.fft.rfft in float64."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxquant.errors import ConfigError
from voxquant.kernels.fft import rfft_power, rfft_tables
from voxquant.stream.frontend import FrontEndConfig, StreamingFrontEnd


def _power(frame: np.ndarray, n_fft: int) -> np.ndarray:
    m = n_fft // 2
    re, im, power = np.empty(m), np.empty(m), np.empty(m + 1)
    rfft_power(frame, frame.shape[0], *rfft_tables(n_fft), re, im, power)
    return power


@settings(max_examples=60, deadline=None)
@given(
    log2_n=st.integers(3, 12),
    fill=st.floats(0.0, 1.0),
    scale_exp=st.integers(-30, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_power_spectrum_matches_numpy(log2_n, fill, scale_exp, seed):
    n_fft = 1 << log2_n
    n_valid = max(1, int(fill * n_fft))  # shorter frames are zero-padded, as the front end's
    frame = (np.random.default_rng(seed).standard_normal(n_valid) * 2.0**scale_exp)
    frame = frame.astype(np.float32)
    expected = np.abs(np.fft.rfft(frame.astype(np.float64), n=n_fft)) ** 2
    got = _power(frame, n_fft)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * expected.max() + 1e-300)


@pytest.mark.parametrize("n_fft", [8, 512])
def test_extreme_frames(n_fft):
    """A unit impulse is flat, a constant puts everything in DC, Nyquist alternates, and
    full-scale and zero frames stay finite."""
    impulse = np.zeros(n_fft, np.float32)
    impulse[0] = 1.0
    np.testing.assert_allclose(_power(impulse, n_fft), 1.0, atol=1e-12)
    const = _power(np.ones(n_fft, np.float32), n_fft)
    assert const[0] == pytest.approx(n_fft**2)
    np.testing.assert_allclose(const[1:], 0.0, atol=1e-9)
    nyquist = _power(np.tile(np.float32([1.0, -1.0]), n_fft // 2), n_fft)
    assert nyquist[-1] == pytest.approx(n_fft**2)
    np.testing.assert_allclose(nyquist[:-1], 0.0, atol=1e-9)
    loud = _power(np.full(n_fft, np.finfo(np.float32).max, np.float32), n_fft)
    assert np.isfinite(loud).all()
    assert not _power(np.zeros(n_fft, np.float32), n_fft).any()


@pytest.mark.parametrize("n_fft", [0, 4, 6, 500])
def test_sizes_that_are_not_powers_of_two_are_refused(n_fft):
    with pytest.raises(ValueError, match="power of two"):
        rfft_tables(n_fft)
    if n_fft >= 480:
        with pytest.raises(ConfigError, match="power of two"):
            StreamingFrontEnd(FrontEndConfig(name="odd", fft_size=n_fft))
