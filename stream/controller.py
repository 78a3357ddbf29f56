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

from voxquant.errors import ConfigError

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


class PrecisionController:
    """Map a running SNR estimate to a precision level with hysteresis and dwell."""

    def __init__(self, config: ControllerConfig | None = None, *, hop_s: float = 0.02):
        self.config = config or ControllerConfig()
        self.hop_s = hop_s
        self.reset()

    @property
    def levels(self) -> Sequence[str]:
        return self.config.levels

    def reset(self) -> None:
        self.level = 0
        self._time_in_level_s = 0.0
        self._calm_s = 0.0
        self.switches = 0

    def target_level(self, snr_db: float, margin_db: float = 0.0) -> int:
        """Widest level whose threshold the SNR is below (minus a margin)."""
        level = 0
        for i, threshold in enumerate(self.config.widen_below_snr_db):
            if snr_db < threshold + margin_db:
                level = i + 1
        return level

    def update(self, snr_db: float) -> str:
        """Feed one hop's SNR estimate; return the level name in force."""
        cfg = self.config
        self._time_in_level_s += self.hop_s
        wanted = self.target_level(snr_db)
        if wanted > self.level:
            self._switch(wanted)  # widen at once
        else:
            # Narrow only if even with the hysteresis margin a cheaper level fits.
            narrower = self.target_level(snr_db, margin_db=cfg.hysteresis_db)
            if narrower < self.level:
                self._calm_s += self.hop_s
                if self._calm_s >= cfg.min_dwell_s and self._time_in_level_s >= cfg.min_dwell_s:
                    self._switch(self.level - 1)
            else:
                self._calm_s = 0.0
        return cfg.levels[self.level]

    def _switch(self, level: int) -> None:
        self.level = level
        self._time_in_level_s = 0.0
        self._calm_s = 0.0
        self.switches += 1
