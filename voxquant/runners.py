"""Model runners: the one place voxquant meets an inference runtime.

A runner takes one feature window ``[frames, features]`` and a precision level
and returns the class posteriors. ``levels`` lists the levels it offers and
``macs_per_window`` its cost. The spotter, batch scoring and the reports all go
through :func:`make_runner`, so they compare runtimes on equal terms.
"""

from __future__ import annotations

import numpy as np

from voxquant.errors import ConfigError
from voxquant.models.cards import ModelCard

__all__ = ["make_runner"]



class _OnnxRuntimeRunner:
    """fp32 baseline through onnxruntime (single thread)."""

    levels = ("fp32",)

    def __init__(self, card: ModelCard):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(card.model_path), opts, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._shape = (1, 1, card.window_frames, card.frontend.n_features)
        self.macs_per_window = int(card.raw.get("macs", 0))

    def run(self, window: np.ndarray, level: str) -> np.ndarray:
        out = self._session.run(None, {self._input: window.reshape(self._shape)})[0]
        return out.reshape(-1)


class _EngineRunner:
    """Our engine: one compiled call per window, precision switched per call."""

    def __init__(self, card: ModelCard):
        from voxquant.engine import load

        self._model = load(card.model_path)
        self.levels = tuple(self._model.available_precisions())
        self.macs_per_window = int(self._model.macs)
        self._current = None
        self._shape = (1, card.window_frames, card.frontend.n_features, 1)

    def run(self, window: np.ndarray, level: str) -> np.ndarray:
        if level != self._current:
            self._model.set_precision(level)
            self._current = level
        return self._model(window.reshape(self._shape)).reshape(-1)


def make_runner(card: ModelCard, runtime: str):
    if runtime == "onnxruntime":
        return _OnnxRuntimeRunner(card)
    if runtime == "voxquant":
        return _EngineRunner(card)
    raise ConfigError(f"unknown runtime {runtime!r}; choose 'voxquant' or 'onnxruntime'")
