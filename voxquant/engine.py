"""Public model engine: ``load(path_or_name) -> Model``.

A :class:`Model` runs one feature window per call (``model(features)``) in a
single compiled call, reports its plan (``describe()``), and switches
per-layer precision at run time (``set_precision``) without reloading.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from voxquant.errors import ConfigError
from voxquant.kernels import network as net
from voxquant.models.cards import SHIPPED_DIR, resolve_model
from voxquant.models.graph import AVGPOOL, CONV, MAXPOOL, SOFTMAX, Graph
from voxquant.models.plan import PRECISIONS, Plan, PrecisionPlan
from voxquant.stream.quantizer import calibrate as _calibrate

SHIPPED_NAMES = ("kws12", "digits", "kws12w")  # kws12w: a confirming second stage
MLPERF_NAMES = {"mlperf-kws": "kws_ref_model_float32.onnx",
                "mlperf-kws-int8": "kws_ref_model.tflite"}


def _resolve(path_or_name: str | Path) -> Path:
    s = str(path_or_name)
    if s in SHIPPED_NAMES:
        p = SHIPPED_DIR / f"{s}.onnx"  # inside the installed package
        if not p.is_file():
            raise ConfigError(f"shipped model {s!r} is not available (expected {p})")
        return p
    if s in MLPERF_NAMES:
        from voxquant.paths import shared_models_dir

        d = shared_models_dir(required=False)
        if d is None or not (d / "mlperf_tiny_kws" / MLPERF_NAMES[s]).is_file():
            raise ConfigError(f"model {s!r} needs shared/models/mlperf_tiny_kws/")
        return d / "mlperf_tiny_kws" / MLPERF_NAMES[s]
    p = Path(s)
    if not p.is_file():
        known = ", ".join(SHIPPED_NAMES + tuple(MLPERF_NAMES))
        raise ConfigError(f"no model file at {s!r} (known names: {known})")
    return p


def import_model(path: str | Path) -> Graph:
    """Import an .onnx or .tflite file into a :class:`Graph`."""
    p = Path(path)
    if p.suffix == ".onnx":
        from voxquant.models.onnx_import import import_onnx

        return import_onnx(p)
    if p.suffix == ".tflite":
        from voxquant.models.tflite_import import import_tflite

        return import_tflite(p)
    raise ConfigError(f"unknown model format {p.suffix!r} (use .onnx or .tflite)")


class Model:
    """A loaded, planned network.

    Parameters
    ----------
    graph : Graph
        Imported network.
    weight_scheme : str
        "uniform" int8 weights (default) or "pow2" (non-uniform power-of-two).
    labels : tuple of str, optional
        Class names in output order (from the model card JSON when present).
    """

    def __init__(self, graph: Graph, weight_scheme: str = "uniform",
                 labels: tuple[str, ...] | None = None) -> None:
        self.graph = graph
        self.labels = labels
        self.plan = Plan(graph, weight_scheme=weight_scheme)
        n = self.plan.n_layers
        self.precision = PrecisionPlan.uniform(n, "int8" if graph.is_int8 else "fp32")
        self._x = np.zeros(int(np.prod(graph.input_shape)), np.float32)

    # ------------------------------------------------------------------ shape

    @property
    def input_frames(self) -> int:
        return int(self.graph.input_shape[0])

    @property
    def n_features(self) -> int:
        return int(self.graph.input_shape[1] * self.graph.input_shape[2])

    @property
    def n_layers(self) -> int:
        return self.plan.n_layers

    def _flat(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features, np.float32)
        if f.size != self._x.size:
            raise ConfigError(
                f"features of shape {f.shape} do not fit the model input "
                f"{self.input_frames} frames x {self.n_features} features")
        return np.ascontiguousarray(f.reshape(-1))

    # ------------------------------------------------------------------ run

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Run one window ``[frames, features]``; returns the output (probabilities)."""
        return self.plan.run(self._flat(features), self.precision.codes).copy()

    def run_quantized_input(self, q: np.ndarray) -> np.ndarray:
        """Run a full-integer model on an already int8-quantized input window."""
        if not self.graph.is_int8:
            raise ConfigError("run_quantized_input needs a full-integer (int8) model")
        q = np.ascontiguousarray(np.asarray(q, np.int8).reshape(-1))
        if q.size != self._x.size:
            raise ConfigError(f"quantized input of {q.size} values does not fit the model")
        return self.plan.run(self._x, self.precision.codes, x_q8=q).copy()

    # ------------------------------------------------------------------ precision

    def set_precision(self, plan_or_policy) -> PrecisionPlan:
        """Switch precision between windows (no reload, no recompilation).

        Accepts a :class:`PrecisionPlan`, a precision name for every layer
        ("fp32", "int8", "int16"), "mixed" (first conv and the classifier head
        in int16, the rest int8), a list of names, or a dict {layer index or
        name: precision} applied on top of the current plan.
        """
        n = self.n_layers
        p = plan_or_policy
        if isinstance(p, PrecisionPlan):
            plan = p
        elif isinstance(p, str) and p == "mixed":
            plan = self.mixed_plan()
        elif isinstance(p, str):
            plan = PrecisionPlan.uniform(n, p)
        elif isinstance(p, dict):
            names = {layer.name: i for i, layer in enumerate(self.graph.layers)}
            plan = self.precision
            for key, prec in p.items():
                idx = names.get(key, key)
                if not isinstance(idx, int) or not 0 <= idx < n:
                    raise ConfigError(f"unknown layer {key!r}")
                plan = plan.with_layer(idx, prec)
        else:
            plan = PrecisionPlan.from_names(list(p))
        if plan.codes.shape != (n,):
            raise ConfigError(f"precision plan has {plan.codes.size} codes for {n} layers")
        self.precision = PrecisionPlan(np.ascontiguousarray(plan.codes, np.int64))
        return self.precision

    def mixed_plan(self, wide: str = "int16", order: list[int] | None = None,
                   n_wide: int = 2) -> PrecisionPlan:
        """int8 everywhere except ``n_wide`` layers kept at ``wide`` precision.

        ``order`` ranks layers by sensitivity (most sensitive first, from
        :meth:`sensitivity`); without it the seed rule is used: the first conv
        and the last conv (the classifier head).
        """
        convs = [i for i, layer in enumerate(self.graph.layers) if layer.kind == CONV]
        if order is None:
            order = [convs[0], convs[-1]] if convs else []
        plan = PrecisionPlan.uniform(self.n_layers, "int8")
        for i in order[:n_wide]:
            plan = plan.with_layer(i, wide)
        return plan

    def sensitivity(self, windows: list[np.ndarray], labels: np.ndarray | None = None,
                    precision: str = "int8") -> list[tuple[int, float]]:
        """Rank layers by the accuracy lost when only that layer runs at ``precision``.

        Loss is measured against ``labels`` (top-1) when given, else as the mean
        absolute output difference from fp32. Returns [(layer, loss)], worst first.
        """
        saved = self.precision
        try:
            self.set_precision("fp32")
            ref = np.array([self(w) for w in windows])
            base = (ref.argmax(1) == labels).mean() if labels is not None else 0.0
            out = []
            for i, layer in enumerate(self.graph.layers):
                if layer.kind == SOFTMAX:
                    continue
                self.set_precision(PrecisionPlan.uniform(self.n_layers, "fp32").with_layer(
                    i, precision))
                o = np.array([self(w) for w in windows])
                if labels is not None:
                    loss = float(base - (o.argmax(1) == labels).mean())
                else:
                    loss = float(np.abs(o - ref).mean())
                out.append((i, loss))
        finally:
            self.precision = saved
        return sorted(out, key=lambda x: -x[1])

    # ------------------------------------------------------------------ quantization

    def set_quantization(self, mode: str, averaging_constant: float = 0.1) -> None:
        """Activation scales: "exact" (per window), "running" (EMA) or "static"."""
        if mode == "static" and not self.graph.is_int8 and not self._calibrated:
            raise ConfigError("static quantization needs calibrate() first")
        self.plan.set_qmode(mode)
        self.plan.alpha = float(averaging_constant)
        self.plan.reset_stats()

    _calibrated = False

    def calibrate(self, windows, method: str = "minmax", **observer_kwargs) -> np.ndarray:
        """Freeze activation ranges from a calibration set (static quantization).

        ``method``: "minmax", "percentile" or "entropy". Returns [n_tensors, 2].
        """
        if self.graph.is_int8:
            raise ConfigError("a full-integer model already has frozen scales")
        ranges = _calibrate((self.plan.tensors_fp32(self._flat(w)) for w in windows),
                            self.graph.n_tensors, method, **observer_kwargs)
        self.plan.set_static_ranges(ranges)
        self._calibrated = True
        return ranges

    # ------------------------------------------------------------------ report

    def describe(self) -> dict:
        """Layers, MACs per layer, precision per layer, weight bytes, arena bytes."""
        d = self.plan.describe(self.precision.codes)
        d["source"] = self.graph.source
        d["path"] = self.graph.path
        d["input_shape"] = list(self.graph.input_shape)
        d["quantization"] = {int(net.Q_EXACT): "exact", int(net.Q_RUNNING): "running",
                             int(net.Q_STATIC): "static"}[int(self.plan.qmode[0])]
        return d

    def incremental(self) -> IncrementalRunner:
        """A streaming runner that updates only the newest rows per frame."""
        return IncrementalRunner(self)


class IncrementalRunner:
    """Incremental (causal) execution: one new feature frame per :meth:`push`, or
    several per call with :meth:`push_many`.

    Every layer before the global average over time must be causal in time
    (stride 1, no bottom padding; 'same' top padding or 'valid'). Each layer's
    output is a ring of rows (``kernels.network._advance_rings``): a push
    slides every ring by one row and recomputes only the rows that read the
    new frame plus the first rows whose receptive field reaches the window's
    zero padding, so the result equals window mode on the same last
    ``input_frames`` frames exactly (bit for bit in fp32 and in integer paths
    with frozen scales). A change of precision plan recomputes every row once.
    ``max_frames_per_call`` says how many frames one compiled call can take (1 when
    some layer pads the window's start: those rows differ for every window).
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        g = model.graph
        self.rows = np.zeros((model.n_layers, 4), np.int64)
        rings = [0]
        # per tensor: leading rows touched by the window-start zero padding ("bad") and
        # trailing rows that changed because a new frame arrived ("new")
        bad, new = {0: 0}, {0: 1}
        collapsed = False
        for i, layer in enumerate(g.layers):
            h_in, h_out = layer.in_shape[0], layer.out_shape[0]
            if collapsed or h_in == 1:
                self.rows[i] = (0, h_out, 0, 0)
                collapsed = True
                continue
            if layer.kind == AVGPOOL and layer.kernel[0] == h_in and h_out == 1 and not any(
                    layer.pads[:2]):
                self.rows[i] = (0, 1, 0, 0)
                collapsed = True
                continue
            eff = layer.dilation[0] * (layer.kernel[0] - 1) + 1
            pt = layer.pads[0]
            causal = (layer.kind in (CONV, AVGPOOL, MAXPOOL, "add") and layer.stride[0] == 1
                      and layer.pads[1] == 0 and h_out == h_in + pt - eff + 1)
            if not causal:
                raise ConfigError(f"layer {i} ({layer.name}) is not causal in time: "
                                  "incremental mode needs stride 1 and no future padding")
            b_in = max(bad[t] for t in layer.inputs)
            n_in = max(new[t] for t in layer.inputs)
            head = min(h_out, b_in + pt)
            first_new = h_in - n_in - eff + 1 + pt  # first output row reading a new row
            tail = max(head, min(h_out, max(0, first_new)))
            bad[layer.output], new[layer.output] = head, h_out - tail
            self.rows[i] = (0, head, tail, h_out)
            rings.append(layer.output)
        if not collapsed:
            raise ConfigError("incremental mode needs a global average over time")
        self.plan = Plan(g, weight_scheme=model.plan.weight_scheme, reuse_arena=False,
                         ring_tensors=tuple(rings))
        for name in ("qmode", "st_scale", "st_zp", "ost"):
            getattr(self.plan, name)[:] = getattr(model.plan, name)
        self.frame_size = model.n_features
        self._precision: PrecisionPlan | None = None  # the plan the cached rows belong to
        # Several frames per compiled call (push_many) when every ring layer's new rows are
        # just its last rows, i.e. no layer recomputes rows because of zero padding at the
        # window's start; a layer of R rows computes at most its R rows at once.
        no_pad = not self.rows[:, 1][self.rows[:, 3] > 0].any()
        ring_rows = self.plan.ring[:, net.RING_ROWS]
        self.max_frames_per_call = min(int(ring_rows[ring_rows > 0].min()), 32) if no_pad else 1
        self._n_out = int(np.prod(g.layers[-1].out_shape))
        # the rows table of a k-frame step, for k = 1 .. max_frames_per_call (0 unused): a
        # k-frame step recomputes the last k rows of every ring layer
        self._rows_by_k = np.repeat(self.rows[None], self.max_frames_per_call + 1, axis=0)
        ring = self.rows[:, 3] > 0
        for k in range(2, self.max_frames_per_call + 1):
            self._rows_by_k[k, ring, 2] = self.rows[ring, 3] - k

    def reset(self) -> None:
        """Forget every cached frame (the window is zeros again)."""
        self.plan.reset_rings()
        self._precision = None

    def _check(self, precision: PrecisionPlan) -> None:
        ints = precision.codes != PRECISIONS["fp32"]
        if ints.any() and (self.plan.qmode != net.Q_STATIC).any():
            raise ConfigError("incremental integer mode needs frozen scales: calibrate() first "
                              "or run fp32")

    def prime(self, window: np.ndarray) -> np.ndarray:
        """Start from a whole window ``[frames, features]``; returns its output."""
        x = self.model._flat(window)
        precision = self.model.precision
        self._check(precision)
        self._precision = precision
        return self.plan.run(x, precision.codes).copy()

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Append one feature frame; returns the output for the last window."""
        f = np.asarray(frame, np.float32).reshape(-1)
        if f.size != self.frame_size:
            raise ConfigError(f"frame has {f.size} features, model needs {self.frame_size}")
        return self.push_many(f[None])[0]

    def push_many(self, frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Append ``frames`` [n, features] in order; returns the n outputs [n, n_out].

        The same outputs as ``n`` calls of :meth:`push` (bit for bit), computed with
        up to ``max_frames_per_call`` frames per compiled call: each layer computes
        its newest rows together (weights loaded once for all of them) and the call
        overhead is paid once. ``out`` (float32 [n, n_out]) is filled and returned
        when given, so a caller can stay allocation-free.
        """
        f = np.ascontiguousarray(frames, np.float32)
        if f.ndim != 2 or f.shape[1] != self.frame_size:
            raise ConfigError(f"frames have shape {f.shape}, model needs [n, {self.frame_size}]")
        n = f.shape[0]
        if out is None:
            out = np.empty((n, self._n_out), np.float32)
        self._check_out(out, n)
        precision = self.model.precision
        codes = precision.codes
        i = 0
        if n and precision is not self._precision:  # a new plan recomputes every row once
            self._check(precision)
            self._precision = precision
            self.plan.run(f[0], codes, advance=1, out=out[0])
            i = 1
        self.plan.run_frames(f.reshape(-1), out.reshape(-1), i, n - i, codes, self._rows_by_k)
        return out

    def _check_out(self, out: np.ndarray, n: int) -> None:
        """``out`` must take ``n`` outputs as they are: writable C-contiguous float32
        [n, n_out] (the compiled entry :meth:`Plan.run_frames` calls checks no types, so
        a read-only array would be written all the same)."""
        if (out.shape != (n, self._n_out) or out.dtype != np.float32
                or not out.flags.c_contiguous or not out.flags.writeable):
            raise ConfigError(f"out must be writable C-contiguous float32 of shape "
                              f"({n}, {self._n_out})")

    def bind(self, frames: np.ndarray, out: np.ndarray) -> Callable[[int, int], None]:
        """A step function over fixed buffers: ``step(first, n)`` is
        ``push_many(frames[first:first + n], out[first:first + n])``.

        The buffers are checked once, here, instead of at every call: the spotter's
        per-chunk model call saves the checks and the 2-D views :meth:`push_many` makes
        (about 2.5 us of an 18 us 5-frame kws12 int8 call, 2-core EPYC, interleaved).
        """
        if (frames.ndim != 2 or frames.shape[1] != self.frame_size
                or frames.dtype != np.float32 or not frames.flags.c_contiguous):
            raise ConfigError(f"frames must be C-contiguous float32 [n, {self.frame_size}]")
        self._check_out(out, frames.shape[0])
        f_flat, o_flat, n_rows = frames.reshape(-1), out.reshape(-1), frames.shape[0]

        def step(first: int, n: int) -> None:
            if first < 0 or n < 0 or first + n > n_rows:
                raise ConfigError(f"rows {first}..{first + n - 1} are not in the bound "
                                  f"buffers' {n_rows}")
            precision = self.model.precision
            if precision is not self._precision:  # a new plan: push_many recomputes it
                self.push_many(frames[first:first + n], out[first:first + n])
                return
            self.plan.run_frames(f_flat, o_flat, first, n, precision.codes, self._rows_by_k)

        return step


def _labels_for(path: Path) -> tuple[str, ...] | None:
    """Class labels from the model card beside the file, if there is a readable one."""
    if not path.with_suffix(".json").is_file():
        return None
    try:
        return resolve_model(path).labels
    except ConfigError:
        return None


def load(path_or_name: str | Path, weight_scheme: str = "uniform") -> Model:
    """Load a model: a path to .onnx/.tflite, a shipped name ("kws12", "digits", "kws12w"),
    or "mlperf-kws" / "mlperf-kws-int8" (the shared MLPerf Tiny reference).

    Raises
    ------
    ConfigError
        Unknown name, missing file or unknown format.
    ModelImportError, UnsupportedOpError
        The file cannot be imported.
    """
    path = _resolve(path_or_name)
    graph = import_model(path)
    return Model(graph, weight_scheme=weight_scheme, labels=_labels_for(path))
