"""Model runners: the one place voxquant meets an inference runtime.

A runner takes one feature window ``[frames, features]`` and a precision level
and returns the class posteriors. ``levels`` lists the levels it offers and
``macs_per_window`` its cost. The spotter, batch scoring and the reports all go
through :func:`make_runner`, so they compare runtimes on equal terms.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from voxquant.errors import ConfigError
from voxquant.models.calibrate import load_calibration
from voxquant.models.cards import ModelCard

__all__ = ["make_runner"]


class _OnnxRuntimeRunner:
    """fp32 baseline through onnxruntime (single thread)."""

    levels = ("fp32",)
    unavailable = {"int8": "the onnxruntime baseline runs fp32 only",
                   "int8-static": "the onnxruntime baseline runs fp32 only",
                   "int16": "the onnxruntime baseline runs fp32 only"}

    def __init__(self, card: ModelCard):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(card.model_path), opts, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        # the file's own layout: NCHW [1, 1, T, F] (TC-DS) or NHWC [1, T, F, 1] (DS-CNN)
        self._shape = (1,) + tuple(int(d) for d in self._session.get_inputs()[0].shape[1:])
        self.macs_per_window = int(card.raw.get("macs", 0))

    def run(self, window: np.ndarray, level: str) -> np.ndarray:
        out = self._session.run(None, {self._input: window.reshape(self._shape)})[0]
        return out.reshape(-1)


class _EngineRunner:
    """Our engine: the whole network in one compiled call, precision switched per call.

    Levels: ``fp32``; ``int8`` and ``int16`` with activation scales computed
    per window (dynamic quantization); ``int8-static`` with frozen calibrated
    ranges, offered when ``<model>.calibration.npz`` lies beside the model.
    """

    def __init__(self, card: ModelCard, *, dynamic_mode: str = "exact"):
        from voxquant.engine import load

        self._model = load(card.model_path)
        self._plan = self._model.plan
        self.dynamic_mode = dynamic_mode
        levels = ["fp32", "int8", "int16"]
        self.unavailable: dict[str, str] = {}
        try:
            self._static_ranges = load_calibration(card)
        except ConfigError as exc:  # stale: offer no static level, say why when asked
            self._static_ranges = None
            self.unavailable["int8-static"] = str(exc)
        if self._static_ranges is None:
            self.unavailable.setdefault(
                "int8-static", f"{card.name} has no calibration: run "
                f"python -m voxquant.models.calibrate {card.name}")
        if self._static_ranges is not None:
            levels.append("int8-static")
        self.levels = tuple(levels)
        self.macs_per_window = int(sum(layer.macs for layer in self._model.graph.layers))
        self._codes = {}
        for level in self.levels:
            precision = "int8" if level == "int8-static" else level
            self._codes[level] = self._model.set_precision(precision).codes.copy()
        self._current = None
        self._select("fp32")

    def _select(self, level: str) -> None:
        if level == "int8-static":
            self._plan.set_static_ranges(self._static_ranges)
        elif self._current in (None, "int8-static"):
            self._plan.set_qmode(self.dynamic_mode)
            self._plan.reset_stats()
        self._current = level

    def run(self, window: np.ndarray, level: str) -> np.ndarray:
        if level != self._current:
            if level not in self._codes:
                raise ConfigError(f"precision {level!r} not available; have {self.levels}")
            self._select(level)
        x = np.ascontiguousarray(window, dtype=np.float32).reshape(-1)
        return self._plan.run(x, self._codes[level])


class _IncrementalEngineRunner:
    """Incremental execution: each hop computes only the newest rows of each layer.

    Needs a causal model and frozen activation scales (``<model>.calibration.npz``)
    for its integer levels, since cached rows must keep their scales; ``fp32`` is
    always offered. Levels: ``fp32`` and, when calibrated, ``int8`` and ``int16``
    (static scales). :meth:`prime` recomputes every row from a whole window (at
    the start, after the gate was shut, or after a precision switch);
    :meth:`step` adds one frame, :meth:`step_many` several.
    """

    def __init__(self, card: ModelCard):
        from voxquant.engine import load

        self._model = load(card.model_path)
        levels = ["fp32"]
        self.unavailable: dict[str, str] = {}
        try:
            ranges = load_calibration(card)
        except ConfigError as exc:
            ranges = None
            self.unavailable["int8"] = self.unavailable["int16"] = str(exc)
        if ranges is not None:
            self._model.plan.set_static_ranges(ranges)
            levels += ["int8", "int16"]
        self.levels = tuple(levels)
        self._inc = self._model.incremental()  # raises ConfigError for non-causal models
        self.macs_per_window = int(sum(layer.macs for layer in self._model.graph.layers))
        self._level = None

    def _select(self, level: str) -> None:
        if level != self._level:
            if level not in self.levels:
                raise ConfigError(f"incremental precision {level!r} not available; "
                                  f"have {self.levels}")
            self._model.set_precision(level)
            self._level = level

    def prime(self, window: np.ndarray, level: str) -> np.ndarray:
        self._select(level)
        return self._inc.prime(window)

    def _check_primed(self, level: str) -> None:
        """Steps continue the rows primed at ``level``; another level needs prime() first."""
        if level != self._level:
            raise ConfigError("prime() after a precision switch")

    def step(self, frame: np.ndarray, level: str) -> np.ndarray:
        self._check_primed(level)
        return self._inc.push(frame)

    def step_many(self, frames: np.ndarray, level: str, out: np.ndarray) -> np.ndarray:
        """:meth:`step` for each of ``frames`` [n, features] in order, in as few compiled
        calls as the model allows; the n outputs go into ``out`` [n, classes]."""
        self._check_primed(level)
        return self._inc.push_many(frames, out)

    def bind(self, frames: np.ndarray, out: np.ndarray) -> Callable[[int, int, str], None]:
        """:meth:`step_many` over fixed buffers: ``step(first, n, level)`` steps the frames
        ``frames[first:first + n]`` into ``out[first:first + n]``
        (:meth:`voxquant.engine.IncrementalRunner.bind`)."""
        bound = self._inc.bind(frames, out)

        def step(first: int, n: int, level: str) -> None:
            self._check_primed(level)
            bound(first, n)

        return step


def make_runner(card: ModelCard, runtime: str, *, incremental: bool = False):
    """The runner for ``runtime`` ("voxquant" or "onnxruntime")."""
    if incremental:
        if runtime != "voxquant":
            raise ConfigError("incremental execution needs runtime 'voxquant'")
        return _IncrementalEngineRunner(card)
    if runtime == "onnxruntime":
        return _OnnxRuntimeRunner(card)
    if runtime == "voxquant":
        return _EngineRunner(card)
    raise ConfigError(f"unknown runtime {runtime!r}; choose 'voxquant' or 'onnxruntime'")
