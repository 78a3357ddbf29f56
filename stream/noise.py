"""Noise-floor and SNR estimation, and the energy gate.

Works on one number per hop: the frame's energy in dBFS (mean square of the
hop's samples relative to a full-scale sine). The noise floor is a slow
percentile-style tracker (minimum statistics: falls fast to a new minimum,
rises slowly), the speech level a fast-attack, slow-release peak tracker; the
SNR estimate is their difference. Both are cheap enough to run on every hop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["NoiseEstimate", "NoiseTracker", "EnergyGate", "frame_energy_dbfs"]

_FLOOR_DBFS = -100.0


@njit(cache=True, nogil=True, inline="always")
def _dbfs(mean_square):  # pragma: no cover - compiled
    """A mean square in dB relative to a full-scale sine, floored at -100 (libm ``log10``)."""
    return max(_FLOOR_DBFS, 10.0 * math.log10(mean_square + 1e-12) + 3.0103)


def frame_energy_dbfs(samples: np.ndarray) -> float:
    """Mean-square energy of ``samples`` in dB relative to full scale (floored at -100)."""
    if samples.size == 0:
        return _FLOOR_DBFS
    x = samples.astype(np.float64, copy=False)
    return float(_dbfs(float(np.dot(x, x)) / x.size))


@njit(cache=True, nogil=True, inline="always")
def _track_one(floor, level, e, rise_db, fall_alpha, release_db, nominal_dbfs):  # pragma: no cover
    """One hop of (noise floor, speech level) given the hop's energy ``e`` (dBFS).

    ``floor`` is NaN before the first hop. The floor falls towards a lower
    energy with ``fall_alpha`` per hop and rises at most ``rise_db`` per hop;
    the speech level jumps to any louder hop and decays by ``release_db`` per
    hop, never below ``nominal_dbfs``.
    """
    if np.isnan(floor):
        floor = e
    elif e < floor:
        floor += fall_alpha * (e - floor)
    else:
        floor = min(e, floor + rise_db)
    level = max(max(level - release_db, nominal_dbfs), e)
    return floor, level


# columns of the rows NoiseTracker.run_block writes per hop
ENERGY_DBFS, NOISE_FLOOR_DBFS, SPEECH_LEVEL_DBFS = range(3)


@njit(cache=True, nogil=True)
def row_snr_db(rows, i):  # pragma: no cover - compiled
    """The SNR estimate of hop ``i`` of :meth:`NoiseTracker.run_block`'s rows: speech
    level minus noise floor (as :attr:`NoiseEstimate.snr_db`)."""
    return rows[i, SPEECH_LEVEL_DBFS] - rows[i, NOISE_FLOOR_DBFS]


@njit(cache=True, nogil=True)
def _track_block(energies, n, in_dbfs, state, rise_db, fall_alpha, release_db, nominal_dbfs,
                 out):  # pragma: no cover
    """Advance (noise floor, speech level) in ``state`` hop by hop over ``n`` energies,
    mean squares (as the front end gives them, converted as :func:`frame_energy_dbfs`
    does, libm ``log10``) or already dBFS (``in_dbfs``); ``out[t]`` gets (energy dBFS,
    floor, speech level) after hop ``t``."""
    floor, level = state[0], state[1]
    for t in range(n):
        e = energies[t] if in_dbfs else _dbfs(energies[t])
        floor, level = _track_one(floor, level, e, rise_db, fall_alpha, release_db,
                                  nominal_dbfs)
        out[t, ENERGY_DBFS] = e
        out[t, NOISE_FLOOR_DBFS] = floor
        out[t, SPEECH_LEVEL_DBFS] = level
    state[0] = floor
    state[1] = level


@njit(cache=True, nogil=True)
def _gate_block(block, n, open_db, hangover_hops, remaining, is_open):  # pragma: no cover
    """The gate hop by hop over ``block`` rows (energy, floor, ...): open while a hop's
    energy exceeds the floor by ``open_db`` and ``hangover_hops - 1`` hops after; returns
    how many of the ``n`` hops are open."""
    r = remaining[0]
    opened = 0
    for t in range(n):
        if block[t, ENERGY_DBFS] > block[t, NOISE_FLOOR_DBFS] + open_db:
            r = hangover_hops
        elif r > 0:
            r -= 1
        is_open[t] = r > 0
        opened += r > 0
    remaining[0] = r
    return opened


@dataclass(frozen=True)
class NoiseEstimate:
    """What the tracker believes after a hop."""

    energy_dbfs: float
    noise_floor_dbfs: float
    speech_level_dbfs: float

    @property
    def snr_db(self) -> float:
        return self.speech_level_dbfs - self.noise_floor_dbfs


class NoiseTracker:
    """Running noise floor, speech level and SNR from per-hop energies.

    Parameters
    ----------
    hop_s : float
        Seconds between updates.
    floor_rise_db_per_s : float
        How fast the floor may rise when the room gets louder (slow, so
        speech does not lift it; 3 dB/s reaches a 20 dB louder room in ~7 s).
    floor_fall_tau_s : float
        Time constant of the fall towards a lower energy (fast).
    speech_release_db_per_s : float
        Decay of the speech-level peak tracker.
    nominal_speech_dbfs : float
        Speech level assumed before any speech is heard, and the lowest the
        speech level is allowed to decay to (a typical close-talk level).
    """

    def __init__(
        self,
        *,
        hop_s: float = 0.02,
        floor_rise_db_per_s: float = 3.0,
        floor_fall_tau_s: float = 0.1,
        speech_release_db_per_s: float = 1.0,
        nominal_speech_dbfs: float = -26.0,
    ):
        self.hop_s = hop_s
        self.rise_db = floor_rise_db_per_s * hop_s
        self.fall_alpha = 1.0 - np.exp(-hop_s / floor_fall_tau_s)
        self.release_db = speech_release_db_per_s * hop_s
        self.nominal_speech_dbfs = nominal_speech_dbfs
        self._state = np.empty(2)  # noise floor (nan: none yet), speech level
        self._one = np.zeros(1)  # update()'s one hop
        self._one_out = np.zeros((1, 3))
        self.reset()

    def reset(self) -> None:
        self._state[:] = (np.nan, self.nominal_speech_dbfs)

    @property
    def noise_floor_dbfs(self) -> float | None:
        return None if np.isnan(self._state[0]) else float(self._state[0])

    @property
    def speech_level_dbfs(self) -> float:
        return float(self._state[1])

    def update(self, energy_dbfs: float) -> NoiseEstimate:
        """Feed one hop's energy; return the new estimate."""
        self._one[0] = energy_dbfs
        self._track(self._one, 1, True, self._one_out)
        return NoiseEstimate(*(float(v) for v in self._one_out[0]))

    def _track(self, energies: np.ndarray, n: int, in_dbfs: bool, out: np.ndarray) -> None:
        _track_block(energies, n, in_dbfs, self._state, self.rise_db, self.fall_alpha,
                     self.release_db, self.nominal_speech_dbfs, out)

    def run_block(self, mean_squares: np.ndarray, n: int, out: np.ndarray) -> None:
        """Feed ``n`` hops' mean-square energies (float64, as the front end gives them) in
        one compiled call; row ``t`` of ``out`` (float64 [>= n, 3]) gets the energy in
        dBFS, the noise floor and the speech level after hop ``t``: what :meth:`update`
        of each hop's :func:`frame_energy_dbfs` returns, without a Python call per hop."""
        self._track(mean_squares, n, False, out)

    def run(self, energies_dbfs: np.ndarray) -> NoiseEstimate:
        """Feed many hops' energies at once (e.g. a whole clip); return the last estimate."""
        energies = np.asarray(energies_dbfs, np.float64)
        self._track(energies, energies.size, True, np.empty((energies.size, 3)))
        last = float(energies[-1]) if energies.size else _FLOOR_DBFS
        return NoiseEstimate(last, float(self._state[0]), float(self._state[1]))


class EnergyGate:
    """Open while the energy stands above the noise floor, with a hang-over.

    The model only needs to run while something louder than the stationary
    background is in its window: the gate opens when a hop's energy exceeds
    the floor by ``open_db`` and stays open ``hangover_s`` after the last such
    hop (at least one model window, so a keyword's whole window is scored).
    Features keep flowing while the gate is shut, so a keyword's onset is in
    the model's window when the gate opens.
    """

    def __init__(self, *, hop_s: float = 0.02, open_db: float = 6.0, hangover_s: float = 1.2):
        self.open_db = open_db
        self.hangover_hops = max(1, int(round(hangover_s / hop_s)))
        self._remaining = np.zeros(1, np.int64)
        self._row = np.zeros((1, 2))  # update()'s one hop
        self._open = np.zeros(1, np.bool_)

    def reset(self) -> None:
        self._remaining[0] = 0

    def update(self, estimate: NoiseEstimate) -> bool:
        """Return True when the model should run for this hop."""
        self._row[0, ENERGY_DBFS] = estimate.energy_dbfs
        self._row[0, NOISE_FLOOR_DBFS] = estimate.noise_floor_dbfs
        self.run_block(self._row, 1, self._open)
        return bool(self._open[0])

    def run_block(self, block: np.ndarray, n: int, is_open: np.ndarray) -> int:
        """:meth:`update` for ``n`` hops at once: ``block`` rows are (energy, floor, ...)
        as :meth:`NoiseTracker.run_block` writes them; ``is_open[t]`` (bool) gets hop
        ``t``'s answer. Returns how many of the ``n`` hops are open (``n``: the model
        runs on every one of them)."""
        return _gate_block(block, n, self.open_db, self.hangover_hops, self._remaining, is_open)
