"""Noise-aware precision controller: estimated SNR -> precision level.

Levels are ordered from cheapest to widest (``("int8", "int16", "fp32")`` by
default). The controller widens as soon as the estimated SNR falls below a
level's threshold (accuracy first) and narrows only when the SNR has stood
``hysteresis_db`` above it for ``min_dwell_s`` (so it does not flap on a
passing car). The thresholds are arguments: the defaults come from the
accuracy-vs-SNR measurements described in ``docs/streaming.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from voxquant.errors import ConfigError
from voxquant.stream.noise import SPEECH_LEVEL_DBFS, row_snr_db

__all__ = ["PrecisionController", "ControllerConfig"]


@dataclass(frozen=True)
class ControllerConfig:
    """Thresholds of the controller.

    ``widen_below_snr_db[i]`` is the SNR below which level ``i + 1`` is used
    (one entry fewer than ``levels``; strictly decreasing).
    """

    levels: tuple[str, ...] = ("int8", "int16", "fp32")
    widen_below_snr_db: tuple[float, ...] = (20.0, 8.0)
    hysteresis_db: float = 3.0
    min_dwell_s: float = 1.0

    def __post_init__(self):
        if len(self.widen_below_snr_db) != len(self.levels) - 1:
            raise ConfigError("need one threshold fewer than precision levels")
        if any(a <= b for a, b in zip(self.widen_below_snr_db, self.widen_below_snr_db[1:])):
            raise ConfigError("widen_below_snr_db must be strictly decreasing")

    def restricted_to(self, offered: Sequence[str]) -> ControllerConfig:
        """The same ladder without the levels a runner does not offer.

        A dropped level's threshold goes with it: the next wider level offered
        takes over below the dropped level's threshold.
        """
        keep = [i for i, lv in enumerate(self.levels) if lv in offered]
        if not keep:
            raise ConfigError(f"none of the controller's levels {self.levels} is offered")
        levels = tuple(self.levels[i] for i in keep)
        widen = tuple(self.widen_below_snr_db[i - 1] for i in keep[1:])
        return ControllerConfig(levels=levels, widen_below_snr_db=widen,
                                hysteresis_db=self.hysteresis_db, min_dwell_s=self.min_dwell_s)


def controller_config(card) -> ControllerConfig:
    """The controller thresholds measured for a model, else the defaults.

    The ``"controller"`` entry of ``<model>.streaming.json`` beside the model
    (written by ``benchmarks/streaming.py --write-thresholds``) holds
    ``{"levels": [...], "widen_below_snr_db": [...], ...}``, thresholds in the
    noise tracker's SNR units; the measured ladder leaves out a level that costs
    more than a wider one.
    """
    from voxquant.models.cards import streaming_settings

    raw = streaming_settings(card).get("controller")
    if raw is None:
        return ControllerConfig()
    try:
        return ControllerConfig(
            levels=tuple(raw.get("levels", ControllerConfig.levels)),
            widen_below_snr_db=tuple(float(x) for x in raw["widen_below_snr_db"]),
            hysteresis_db=float(raw.get("hysteresis_db", 3.0)),
            min_dwell_s=float(raw.get("min_dwell_s", 1.0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{card.name}: invalid controller thresholds: {exc}") from None


# controller state, one float64 array: level in force, calm time, switches (the calm time
# never exceeds the time in the level, so the dwell needs no second clock)
_LEVEL, _CALM_S, _SWITCHES = range(3)


@njit(cache=True, nogil=True)
def _target_level(thresholds, snr_db, margin_db):  # pragma: no cover
    """Widest level whose threshold the SNR is below (minus a margin)."""
    level = 0
    for i in range(thresholds.shape[0]):
        if snr_db < thresholds[i] + margin_db:
            level = i + 1
    return level


@njit(cache=True, nogil=True)
def _switch(state, level):  # pragma: no cover
    state[_LEVEL] = level
    state[_CALM_S] = 0.0
    state[_SWITCHES] += 1


@njit(cache=True, nogil=True)
def _run_block(state, thresholds, hysteresis_db, min_dwell_s, hop_s, noise, n,
               levels):  # pragma: no cover
    """``levels[i]`` = the level in force after hop ``i``'s SNR estimate (of the rows
    ``NoiseTracker.run_block`` writes), for ``i < n``."""
    for i in range(n):
        snr_db = row_snr_db(noise, i)
        wanted = _target_level(thresholds, snr_db, 0.0)
        if wanted > state[_LEVEL]:
            _switch(state, wanted)  # widen at once
        else:
            # Narrow only if even with the hysteresis margin a cheaper level fits.
            narrower = _target_level(thresholds, snr_db, hysteresis_db)
            if narrower < state[_LEVEL]:
                state[_CALM_S] += hop_s
                if state[_CALM_S] >= min_dwell_s:
                    _switch(state, state[_LEVEL] - 1)
            else:
                state[_CALM_S] = 0.0
        levels[i] = int(state[_LEVEL])


class PrecisionController:
    """Map a running SNR estimate to a precision level with hysteresis and dwell.

    :meth:`run_block` takes a block of hops in one compiled call (the spotter's path);
    :meth:`update` is one hop of it.
    """

    def __init__(self, config: ControllerConfig | None = None, *, hop_s: float = 0.02):
        self.config = config or ControllerConfig()
        self.hop_s = hop_s
        self._thresholds = np.array(self.config.widen_below_snr_db, np.float64)
        self._state = np.zeros(3)
        self._one_snr = np.zeros((1, 3))  # update()'s hop as a noise row, floor 0 dBFS
        self._one_level = np.zeros(1, np.int64)
        self.reset()

    @property
    def levels(self) -> Sequence[str]:
        return self.config.levels

    @property
    def level(self) -> int:
        """Index of the level in force."""
        return int(self._state[_LEVEL])

    @property
    def switches(self) -> int:
        return int(self._state[_SWITCHES])

    def reset(self) -> None:
        self._state[:] = 0.0

    def target_level(self, snr_db: float, margin_db: float = 0.0) -> int:
        """Widest level whose threshold the SNR is below (minus a margin)."""
        return _target_level(self._thresholds, float(snr_db), float(margin_db))

    def run_block(self, noise: np.ndarray, n: int, levels: np.ndarray) -> np.ndarray:
        """The level index in force after each of the first ``n`` hops into ``levels``
        (int64), from the noise tracker's block rows ``noise`` [.., 3] (SNR as
        :func:`~voxquant.stream.noise.row_snr_db`); the same as :meth:`update` hop by hop."""
        cfg = self.config
        _run_block(self._state, self._thresholds, float(cfg.hysteresis_db),
                   float(cfg.min_dwell_s), float(self.hop_s), noise, n, levels)
        return levels

    def update(self, snr_db: float) -> str:
        """Feed one hop's SNR estimate; return the level name in force."""
        self._one_snr[0, SPEECH_LEVEL_DBFS] = snr_db
        self.run_block(self._one_snr, 1, self._one_level)
        return self.config.levels[self._one_level[0]]
