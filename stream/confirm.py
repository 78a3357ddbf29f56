"""A second, confirming model that runs only when the first stage fires.

A small always-on model takes many other words for keywords. Before a
detection is reported, a second model (any keyword model whose classes name
the keyword; for example the MLPerf Tiny reference, trained on far more
speech) scores the same audio; the detection stands only when it agrees. It
runs on a handful of windows per hour of audio, so it adds almost no CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxquant.errors import ConfigError, checked_number
from voxquant.stream.frontend import FrontEndConfig, compute_features, get_frontend_config

__all__ = ["Confirmer"]


class Confirmer:
    """Score a keyword candidate with a second model.

    Parameters
    ----------
    model : str or Path
        ``"mlperf-kws"`` (the shared MLPerf Tiny reference, needs ``shared/models``),
        a shipped name or an ``.onnx`` path with its model card.
    threshold : float
        Posterior of the candidate keyword the second model must give.
    precision : str
        Precision the second model runs at (``"fp32"``, ``"int8"``, ``"int16"``).
    """

    def __init__(self, model: str | Path = "mlperf-kws", *, threshold: float = 0.5,
                 precision: str = "fp32"):
        from voxquant.engine import MLPERF_NAMES, load

        self.name = str(model)
        self.threshold = checked_number("confirm threshold", threshold, 0.0, 1.0)
        if self.name in MLPERF_NAMES:  # the shared MLPerf Tiny reference: no card of its own
            from voxquant.models.datasets import KWS12_LABELS

            self.labels: tuple[str, ...] = KWS12_LABELS
            self.frontend: FrontEndConfig = get_frontend_config("mlperf")
            self.window_frames = 49
        else:
            from voxquant.models.cards import resolve_model

            card = resolve_model(model)
            self.labels, self.frontend = card.labels, card.frontend
            self.window_frames = card.window_frames
        self.model = load(model)
        self.model.set_precision(precision)
        self.window_samples = self.frontend.samples_for(self.window_frames)

    def score(self, keyword: str, audio: np.ndarray) -> float:
        """The second model's posterior for ``keyword`` on ``audio`` (its last window).

        ``audio`` is mono float at the front end's rate; shorter audio is
        zero-padded at the start. Raises ConfigError for a keyword the second
        model does not know.
        """
        if keyword not in self.labels:
            raise ConfigError(f"confirming model {self.name!r} has no class {keyword!r}")
        a = np.asarray(audio, np.float32)[-self.window_samples:]
        if a.size < self.window_samples:
            a = np.concatenate([np.zeros(self.window_samples - a.size, np.float32), a])
        feats = compute_features(a, self.frontend)[: self.window_frames]
        return float(self.model(feats)[self.labels.index(keyword)])

    def confirms(self, keyword: str, audio: np.ndarray) -> tuple[bool, float]:
        """(agrees, score) for one candidate."""
        s = self.score(keyword, audio)
        return s >= self.threshold, s
