"""Activation observers, static calibration and the :class:`DynamicQuantizer`.

Observers follow PyTorch's interface: ``observe(x)``, ``qparams()``,
``reset()``. Asymmetric affine quantization, ``q = round(x / scale) + zp``,
with the range always covering 0 (so zero padding is exact).

* :class:`MinMaxObserver`: min/max since the last reset; reset per window it
  is onnxruntime's dynamic mode (exact per-window scale).
* :class:`MovingAverageMinMaxObserver`: exponential moving average of each
  window's min/max (the scale of window t comes from windows <= t).
* :class:`PercentileObserver`: histogram of all values seen; the range is the
  lower/upper percentile (clips rare outliers).
* :class:`EntropyObserver`: histogram plus the KL-divergence threshold search
  (TensorRT-style) for static calibration.

In the compiled network the per-window statistics are gathered inside the
producing kernel's store (see ``voxquant.kernels.network``): "minmax" maps to
its exact mode and "ema" to its running mode, with the same formulas as here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxquant.errors import ConfigError


@dataclass(frozen=True)
class QParams:
    """Affine quantization parameters of one tensor."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = np.floor(np.asarray(x, np.float64) / self.scale + 0.5) + self.zero_point
        return np.clip(q, self.qmin, self.qmax).astype(np.int8 if self.qmax <= 127 else np.int16)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float64) - self.zero_point) * self.scale).astype(np.float32)


def qrange(bits: int) -> tuple[int, int]:
    if bits not in (8, 16):
        raise ConfigError(f"bits must be 8 or 16, got {bits}")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def qparams_for_range(mn: float, mx: float, bits: int = 8) -> QParams:
    """Same rule as the compiled kernels' ``qparams_from_range``."""
    qmin, qmax = qrange(bits)
    mn, mx = min(float(mn), 0.0), max(float(mx), 0.0)
    scale = (mx - mn) / (qmax - qmin)
    if not scale > 1e-12:
        scale = 1e-12 if mx - mn > 0 else 1.0
    zp = int(np.clip(qmin - np.floor(mn / scale + 0.5), qmin, qmax))
    return QParams(scale, zp, qmin, qmax)


class MinMaxObserver:
    """Running min/max since the last :meth:`reset`."""

    def __init__(self, bits: int = 8) -> None:
        self.bits = bits
        self.reset()

    def reset(self) -> None:
        self.min_val = np.inf
        self.max_val = -np.inf

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.size:
            self.min_val = min(self.min_val, float(x.min()))
            self.max_val = max(self.max_val, float(x.max()))

    def range(self) -> tuple[float, float]:
        if not np.isfinite(self.min_val):
            return 0.0, 0.0
        return self.min_val, self.max_val

    def qparams(self) -> QParams:
        return qparams_for_range(*self.range(), bits=self.bits)


class MovingAverageMinMaxObserver(MinMaxObserver):
    """EMA of per-observation min/max: ``ema += c * (window - ema)``; first sets it."""

    def __init__(self, averaging_constant: float = 0.1, bits: int = 8) -> None:
        if not 0.0 < averaging_constant <= 1.0:
            raise ConfigError("averaging_constant must be in (0, 1]")
        self.averaging_constant = averaging_constant
        super().__init__(bits)

    def reset(self) -> None:
        super().reset()
        self.count = 0

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if not x.size:
            return
        lo, hi = float(x.min()), float(x.max())
        self.observe_range(lo, hi)

    def observe_range(self, lo: float, hi: float) -> None:
        if self.count == 0:
            self.min_val, self.max_val = lo, hi
        else:
            c = self.averaging_constant
            self.min_val += c * (lo - self.min_val)
            self.max_val += c * (hi - self.max_val)
        self.count += 1


class _HistogramObserver(MinMaxObserver):
    """Histogram over a growing range (re-binned when new data falls outside)."""

    def __init__(self, bins: int = 2048, bits: int = 8) -> None:
        self.bins = bins
        super().__init__(bits)

    def reset(self) -> None:
        super().reset()
        self.hist = np.zeros(self.bins, np.float64)
        self.lo = 0.0
        self.hi = 0.0

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        if not x.size:
            return
        super().observe(x)
        lo, hi = min(self.lo, float(x.min()), 0.0), max(self.hi, float(x.max()), 0.0)
        if hi - lo <= 0:
            hi = lo + 1e-12
        if (lo, hi) != (self.lo, self.hi) and self.hist.sum() > 0:
            centers = self.lo + (np.arange(self.bins) + 0.5) * (self.hi - self.lo) / self.bins
            self.hist = np.histogram(centers, bins=self.bins, range=(lo, hi),
                                     weights=self.hist)[0]
        self.lo, self.hi = lo, hi
        self.hist += np.histogram(x, bins=self.bins, range=(lo, hi))[0]

    def _edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)


class PercentileObserver(_HistogramObserver):
    """Range = [lower, upper] percentile of everything observed (histogram based)."""

    def __init__(self, percentile: float = 99.99, bins: int = 2048, bits: int = 8) -> None:
        if not 50.0 < percentile <= 100.0:
            raise ConfigError("percentile must be in (50, 100]")
        self.percentile = percentile
        super().__init__(bins, bits)

    def range(self) -> tuple[float, float]:
        total = self.hist.sum()
        if total <= 0:
            return 0.0, 0.0
        cdf = np.cumsum(self.hist) / total
        edges = self._edges()
        tail = (100.0 - self.percentile) / 100.0
        lo_i = int(np.searchsorted(cdf, tail, side="left"))
        hi_i = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
        lo = edges[lo_i] if self.min_val < 0 else 0.0
        hi = edges[min(hi_i + 1, self.bins)]
        return max(lo, self.min_val), min(hi, self.max_val)


class EntropyObserver(_HistogramObserver):
    """KL-divergence calibration (TensorRT style) on the upper side of the range.

    Picks the clipping threshold whose 2^bits-level (upper half for signed data)
    quantized histogram is closest in KL divergence to the observed one.
    """

    @staticmethod
    def _kl_threshold(pos: np.ndarray, n_levels: int) -> int:
        """Number of bins (from zero) whose clipped, quantized copy has the least KL."""
        if pos.size <= n_levels or pos.sum() <= 0:
            return pos.size
        best, best_i = np.inf, pos.size
        for i in range(n_levels, pos.size + 1, max(1, (pos.size - n_levels) // 128)):
            ref = pos[:i].copy()
            ref[i - 1] += pos[i:].sum()
            q = np.zeros(i)
            for ch in np.array_split(np.arange(i), n_levels):
                nz = pos[ch] > 0
                if nz.any():
                    q[ch[nz]] = pos[ch].sum() / nz.sum()
            p = ref / max(ref.sum(), 1e-12)
            q = q / max(q.sum(), 1e-12)
            m = p > 0
            kl = float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-12))))
            if kl < best:
                best, best_i = kl, i
        return best_i

    def range(self) -> tuple[float, float]:
        """Each side of zero gets its own KL threshold (levels shared in proportion)."""
        total = self.hist.sum()
        if total <= 0:
            return 0.0, 0.0
        width = (self.hi - self.lo) / self.bins
        zero_bin = int(np.clip(np.floor(-self.lo / width), 0, self.bins - 1))
        levels = 1 << self.bits if self.bits == 8 else 256
        # the bin holding 0 is exact in any affine grid (ReLU's spike of zeros): leave it out
        pos = self.hist[zero_bin:].copy()
        neg = self.hist[:zero_bin][::-1].copy()
        pos[0] = 0.0
        frac = pos.size / max(pos.size + neg.size, 1)
        hi = min(self.max_val, (zero_bin + self._kl_threshold(
            pos, max(16, int(levels * frac)))) * width + self.lo)
        lo = 0.0
        if neg.size and self.min_val < 0:
            lo = max(self.min_val, self.lo + (zero_bin - self._kl_threshold(
                neg, max(16, int(levels * (1 - frac))))) * width)
        return lo, hi


OBSERVERS = {
    "minmax": MinMaxObserver,
    "ema": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
}


def make_observer(kind: str, bits: int = 8, **kwargs) -> MinMaxObserver:
    """An observer by name: "minmax", "ema", "percentile" or "entropy"."""
    if kind not in OBSERVERS:
        raise ConfigError(f"unknown observer {kind!r}; use one of {list(OBSERVERS)}")
    return OBSERVERS[kind](bits=bits, **kwargs)


class DynamicQuantizer:
    """Per-tensor observers giving per-window activation scales.

    Parameters
    ----------
    n_tensors : int
        Number of activation tensors of the network (``graph.n_tensors``).
    observer : str
        "minmax" (exact per window: observers reset every window), "ema"
        (running across windows), "percentile" or "entropy" (accumulating;
        meant for static calibration).
    bits : int
        8 or 16.
    """

    KERNEL_MODES = {"minmax": "exact", "ema": "running", "percentile": "static",
                    "entropy": "static"}

    def __init__(self, n_tensors: int, observer: str = "minmax", bits: int = 8,
                 **observer_kwargs) -> None:
        self.kind = observer
        self.bits = bits
        self.observers = [make_observer(observer, bits, **observer_kwargs)
                          for _ in range(n_tensors)]

    @property
    def kernel_mode(self) -> str:
        """How the compiled network reproduces this quantizer: exact, running or static."""
        return self.KERNEL_MODES[self.kind]

    def reset(self) -> None:
        for ob in self.observers:
            ob.reset()

    def observe(self, tensor_id: int, x: np.ndarray) -> None:
        self.observers[tensor_id].observe(x)

    def observe_window(self, tensors: list[np.ndarray]) -> list[QParams]:
        """Observe all activations of one window and return their qparams.

        A "minmax" quantizer resets first, so its scales are exactly this window's.
        """
        if self.kind == "minmax":
            self.reset()
        for t, x in enumerate(tensors):
            self.observers[t].observe(x)
        return [ob.qparams() for ob in self.observers]

    def qparams(self, tensor_id: int) -> QParams:
        return self.observers[tensor_id].qparams()

    def ranges(self) -> np.ndarray:
        """[n_tensors, 2] (min, max) each observer would quantize to."""
        return np.array([ob.range() for ob in self.observers], np.float64)


def calibrate(tensors_per_window, n_tensors: int, method: str = "minmax",
              **observer_kwargs) -> np.ndarray:
    """Static calibration: frozen (min, max) per tensor from a calibration set.

    ``tensors_per_window`` yields, per calibration window, the list of fp32
    activations of every tensor (``Plan.tensors_fp32``).
    """
    if method not in ("minmax", "percentile", "entropy"):
        raise ConfigError(f"unknown calibration method {method!r}")
    q = DynamicQuantizer(n_tensors, observer=method, **observer_kwargs)
    n = 0
    for tensors in tensors_per_window:
        for t, x in enumerate(tensors):
            q.observe(t, x)
        n += 1
    if n == 0:
        raise ConfigError("calibration needs at least one window")
    return q.ranges()
