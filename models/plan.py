"""Plan a :class:`~voxquant.models.graph.Graph` for the one-call executor.

At load, once: every tensor gets an offset in ONE arena (buffers whose lives do
not overlap share memory; the arena is reused across layers and calls),
weights are prepacked for each precision (fp32; int8 and int16 symmetric per
output channel), TFLite fixed-point multipliers are precomputed, and the plan
is flattened into the arrays :func:`voxquant.kernels.network.run_network`
takes. A :class:`PrecisionPlan` is only an array of per-layer codes, so
switching between windows costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from voxquant.errors import ConfigError
from voxquant.kernels import network as net
from voxquant.models.graph import ADD, AVGPOOL, CONV, MAXPOOL, SOFTMAX, Graph

PRECISIONS = {"fp32": net.P_F32, "int8": net.P_I8, "int16": net.P_I16}
PRECISION_NAMES = {v: k for k, v in PRECISIONS.items()}
QMODES = {"exact": net.Q_EXACT, "running": net.Q_RUNNING, "static": net.Q_STATIC}
# spare physical rows of a ring tensor beyond its window: a ring is copied back once per
# about RING_SLACK_ROWS / k calls of k frames (see kernels.network._advance_rings)
RING_SLACK_ROWS = 64
_OPS = {CONV: net.OP_CONV, AVGPOOL: net.OP_AVGPOOL, MAXPOOL: net.OP_MAXPOOL, ADD: net.OP_ADD,
        SOFTMAX: net.OP_SOFTMAX}
_ALIGN = 16
FC_ROUNDING = 2  # LiteRT reference FC: single rounding (0 mismatches; 3 gave 2)


@dataclass(frozen=True)
class PrecisionPlan:
    """Per-layer precision codes (0 fp32, 1 int8, 2 int16)."""

    codes: np.ndarray

    @classmethod
    def uniform(cls, n_layers: int, precision: str) -> PrecisionPlan:
        """Every layer at ``precision`` ("fp32", "int8" or "int16")."""
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}")
        return cls(np.full(n_layers, PRECISIONS[precision], np.int64))

    @classmethod
    def from_names(cls, names: list[str]) -> PrecisionPlan:
        """One precision name per layer."""
        try:
            return cls(np.array([PRECISIONS[n] for n in names], np.int64))
        except KeyError as exc:
            raise ConfigError(f"unknown precision {exc.args[0]!r}") from exc

    def names(self) -> list[str]:
        return [PRECISION_NAMES[int(c)] for c in self.codes]

    def with_layer(self, index: int, precision: str) -> PrecisionPlan:
        """A copy with one layer changed."""
        codes = self.codes.copy()
        codes[index] = PRECISIONS[precision]
        return PrecisionPlan(codes)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: real = q * 2^(shift - 31), q in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    frac, shift = math.frexp(real)
    q = int(round_half_away(frac * (1 << 31)))
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def round_half_away(x: float) -> float:
    return math.floor(abs(x) + 0.5) * (1.0 if x >= 0 else -1.0)


def quantize_weights_symmetric(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel quantization of ``[kh, kw, cin, cout]`` weights."""
    qmax = (1 << (bits - 1)) - 1
    amax = np.abs(w.reshape(-1, w.shape[-1])).max(axis=0).astype(np.float64)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    q = np.clip(np.rint(w / scale), -qmax, qmax)
    return q.astype(np.int8 if bits == 8 else np.int16), scale


def quantize_weights_pow2(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-uniform int8 weights: per channel, each weight is 0 or +-2^k * scale, k in 0..6.

    Multiplication by such a weight is a shift; here it runs on the same int8
    kernels, so it changes accuracy but not speed.
    """
    amax = np.abs(w.reshape(-1, w.shape[-1])).max(axis=0).astype(np.float64)
    scale = np.where(amax > 0, amax / 64.0, 1.0)
    r = np.abs(w) / scale
    with np.errstate(divide="ignore"):
        k = np.clip(np.rint(np.log2(np.maximum(r, 1e-30))), 0, 6)
    mag = np.where(r < 0.5, 0.0, 2.0 ** k)
    return (np.sign(w) * mag).astype(np.int8), scale


def _pack_gemm_int8(w_kn: np.ndarray) -> np.ndarray:
    """int8 weights ``[K, N]`` as int8 ``[NB, K2, 16, 2]`` (K padded to a multiple of 4,
    channels to 16, with zeros), the layout of :func:`voxquant.kernels.network.gemm_int_tiles`."""
    k_size, n_out = w_kn.shape
    nb, kp = -(-n_out // net.GEMM_NR), -(-k_size // 4) * 4
    padded = np.zeros((nb * net.GEMM_NR, kp), np.int8)
    padded[:n_out, :k_size] = w_kn.T
    return np.ascontiguousarray(padded.reshape(nb, net.GEMM_NR, kp // 2, 2).transpose(0, 2, 1, 3)
                                ).reshape(-1)


def _pack_gemm_f32(w_kn: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Weights ``[K, N]`` as float ``[NB, K, 16]`` (zero padded channels); float64 holds the
    int16 path's integer weights exactly."""
    k_size, n_out = w_kn.shape
    nb = -(-n_out // net.GEMM_NR)
    padded = np.zeros((nb * net.GEMM_NR, k_size), dtype)
    padded[:n_out] = w_kn.T
    return np.ascontiguousarray(padded.reshape(nb, net.GEMM_NR, k_size).transpose(0, 2, 1)
                                ).reshape(-1)


def _offsets(sizes: list[int], first: list[int], last: list[int], reuse: bool) -> tuple[
        np.ndarray, int]:
    """First-fit arena offsets (elements); tensors alive at the same layer never overlap."""
    n = len(sizes)
    off = np.zeros(n, np.int64)
    placed: list[int] = []
    top = 0
    for t in range(n):
        size = -(-sizes[t] // _ALIGN) * _ALIGN
        if not reuse:
            off[t] = top
            top += size
            continue
        busy = sorted((int(off[u]), int(off[u]) + -(-sizes[u] // _ALIGN) * _ALIGN)
                      for u in placed if not (last[u] < first[t] or last[t] < first[u]))
        cand = 0
        for lo, hi in busy:
            if cand + size <= lo:
                break
            cand = max(cand, hi)
        off[t] = cand
        top = max(top, cand + size)
        placed.append(t)
    return off, top


class Plan:
    """A planned network: flattened arrays, prepacked weights, one arena.

    Parameters
    ----------
    graph : Graph
        Imported network.
    weight_scheme : str
        "uniform" (int8 symmetric per channel) or "pow2" (power-of-two levels).
    reuse_arena : bool
        Share arena memory between tensors whose lives do not overlap. Off for
        incremental mode and calibration, where every tensor must persist.
    ring_tensors : sequence of int
        Incremental mode: tensors kept as row rings (``rows + max(rows,
        RING_SLACK_ROWS)`` physical rows in the arena; see
        ``kernels.network._advance_rings``) so a step slides them by its new rows,
        copying back only when a ring runs out of rows. Needs ``reuse_arena=False``.
    """

    def __init__(self, graph: Graph, weight_scheme: str = "uniform", reuse_arena: bool = True,
                 ring_tensors: tuple[int, ...] = ()):
        if weight_scheme not in ("uniform", "pow2"):
            raise ConfigError(f"unknown weight scheme {weight_scheme!r}")
        self.graph = graph
        self.weight_scheme = weight_scheme
        layers = graph.layers
        n_l, n_t = len(layers), graph.n_tensors
        self.n_layers = n_l
        sizes = [int(np.prod(graph.input_shape))] + [0] * (n_t - 1)
        first = [-1] + [0] * (n_t - 1)
        last = [-1] * n_t
        for i, layer in enumerate(layers):
            sizes[layer.output] = int(np.prod(layer.out_shape))
            first[layer.output] = i
            for t in layer.inputs:
                last[t] = max(last[t], i)
        for t in range(n_t):
            last[t] = max(last[t], first[t])
        last[layers[-1].output] = n_l
        self.t_size = np.array(sizes, np.int64)
        self._first, self._last = first, last
        if ring_tensors and reuse_arena:
            raise ConfigError("ring tensors need reuse_arena=False")
        self.ring = np.zeros((n_t, net.N_RING), np.int64)
        alloc = list(sizes)
        for t in ring_tensors:
            h = graph.input_shape[0] if t == 0 else next(
                layer.out_shape[0] for layer in layers if layer.output == t)
            self.ring[t, net.RING_ROWS] = h
            self.ring[t, net.RING_CAP] = h + max(h, RING_SLACK_ROWS)
            alloc[t] = sizes[t] // h * self.ring[t, net.RING_CAP]
        self.t_off, self.arena_elems = _offsets(alloc, first, last, reuse_arena)
        self.ring[:, net.RING_BASE] = self.t_off
        self.arena = np.zeros(self.arena_elems * 7 + 64, np.uint8)
        self.F, self.Q16, self.Q8 = self._views(self.arena, self.arena_elems)
        self._pack(layers)
        # runtime quantization state
        self.qmode = np.full(n_t, net.Q_EXACT, np.int64)
        self.st_scale = np.ones((n_t, 3), np.float64)
        self.st_zp = np.zeros((n_t, 3), np.int64)
        self.ost = np.zeros((n_t, net.N_OS), np.float64)
        self.qsc = np.ones((n_t, 3), np.float64)
        self.qzp = np.zeros((n_t, 3), np.int64)
        self.valid = np.zeros(n_t, np.int64)
        self.alpha = 0.1
        cmax = max(max(int(layer.out_shape[2]), int(layer.in_shape[2])) for layer in layers)
        self.acc_f = np.zeros(4 * cmax, np.float32)
        self.acc_i32 = np.zeros(4 * cmax, np.int32)
        self.acc_i64 = np.zeros(4 * cmax, np.int64)
        self.mscale = np.zeros(cmax, np.float32)
        self.pool_sum = np.zeros(cmax, np.int32)  # a global int8 average's channel sums
        self.pool_at = np.full(2, -1, np.int64)  # (layer, input offset) they belong to
        self.rows_window = np.zeros((n_l, 4), np.int64)
        self.rows_window[:, 1] = [layer.out_shape[0] for layer in layers]
        self.out = np.zeros(int(np.prod(layers[-1].out_shape)), np.float32)
        self._xq_dummy = np.zeros(1, np.int8)
        self._no_ring = np.zeros((n_t, net.N_RING), np.int64)
        self._arrays: net.PlanArrays | None = None  # run_plan's persistent arrays
        self._frames_entry = None  # run_plan_frames' compiled entry (run_frames' types)
        if graph.is_int8:
            self._set_tflite_static()

    @staticmethod
    def _views(arena: np.ndarray, n: int):
        f = arena[: 4 * n].view(np.float32)
        q16 = arena[4 * n: 6 * n].view(np.int16)
        q8 = arena[6 * n: 7 * n].view(np.int8)
        return f, q16, q8

    def _pack(self, layers) -> None:
        n_l = len(layers)
        L = np.zeros((n_l, net.N_LP), np.int64)
        LF = np.zeros((n_l, 2), np.float64)
        w_f, w_8, w_16, b_f, s8, s16, b32, mul, sh = [], [], [], [], [], [], [], [], []
        pk_i, pk_f, pk_d = [], [], []
        woff = coff = pki_off = pkf_off = pkd_off = 0
        xw_i = xw_f = 1
        acc_t = 16  # also the int store's min/max scratch
        for i, layer in enumerate(layers):
            h, w, c = layer.in_shape
            ho, wo, co = layer.out_shape
            L[i, :] = 0
            L[i, net.LP_OP] = _OPS[layer.kind]
            L[i, net.LP_IN0] = layer.inputs[0]
            L[i, net.LP_IN1] = layer.inputs[1] if len(layer.inputs) > 1 else -1
            L[i, net.LP_OUT] = layer.output
            L[i, [net.LP_H, net.LP_W, net.LP_C, net.LP_HO, net.LP_WO, net.LP_CO]] = (
                h, w, c, ho, wo, co)
            L[i, [net.LP_KH, net.LP_KW]] = layer.kernel
            L[i, [net.LP_SH, net.LP_SW]] = layer.stride
            L[i, net.LP_PT], L[i, net.LP_PL] = layer.pads[0], layer.pads[2]
            L[i, net.LP_G] = layer.groups
            L[i, [net.LP_DH, net.LP_DW]] = layer.dilation
            LF[i] = (layer.act_min, layer.act_max)
            L[i, net.LP_PKI] = L[i, net.LP_PKF] = L[i, net.LP_PKD] = -1
            if layer.kind != CONV:
                continue
            wt = layer.weights.astype(np.float32)
            L[i, net.LP_WOFF], L[i, net.LP_COFF] = woff, coff
            q = layer.quant
            if q is not None and q.weight_int8 is not None:
                q8, sc8 = q.weight_int8, q.weight_scales.astype(np.float64)
            elif self.weight_scheme == "pow2":
                q8, sc8 = quantize_weights_pow2(wt)
            else:
                q8, sc8 = quantize_weights_symmetric(wt, 8)
            q16, sc16 = quantize_weights_symmetric(wt, 16)
            w_f.append(wt.ravel())
            w_8.append(q8.ravel())
            w_16.append(q16.ravel())
            b_f.append(layer.bias.astype(np.float32))
            s8.append(sc8)
            s16.append(sc16)
            if q is not None and q.bias_int32 is not None:
                is_fc = False  # TFLite >= 2.x multiplies the scales in double for FC too
                ms, shs = [], []
                for ch in range(co):
                    if is_fc:  # TFLite multiplies the two float scales in float32 first
                        prod = float(np.float32(q.input_scale) * np.float32(q.weight_scales[ch]))
                    else:
                        prod = float(np.float32(q.input_scale)) * float(q.weight_scales[ch])
                    m, s = quantize_multiplier(prod / float(np.float32(q.output_scale)))
                    ms.append(m)
                    shs.append(s)
                mul.append(np.array(ms, np.int64))
                sh.append(np.array(shs, np.int64))
                b32.append(q.bias_int32.astype(np.int64))
                L[i, net.LP_FIXED] = FC_ROUNDING if layer.name.startswith("FULLY_CONNECTED") else 1
                zp, s_out = q.output_zero_point, q.output_scale
                lo = -128 if not np.isfinite(layer.act_min) else max(
                    -128, zp + int(round_half_away(layer.act_min / s_out)))
                hi = 127 if not np.isfinite(layer.act_max) else min(
                    127, zp + int(round_half_away(layer.act_max / s_out)))
                L[i, net.LP_QAMIN], L[i, net.LP_QAMAX] = lo, hi
            else:
                mul.append(np.zeros(co, np.int64))
                sh.append(np.zeros(co, np.int64))
                b32.append(np.zeros(co, np.int64))
            if layer.groups == 1:
                # GEMM-packed copies for the register-blocked tiles (int8 and fp32 paths)
                k_size = wt.size // co
                m_size = ho * wo
                a = _pack_gemm_int8(q8.reshape(k_size, co))
                b = _pack_gemm_f32(wt.reshape(k_size, co))
                d = _pack_gemm_f32(q16.reshape(k_size, co), np.float64)
                L[i, net.LP_PKI], L[i, net.LP_PKF], L[i, net.LP_PKD] = pki_off, pkf_off, pkd_off
                pk_i.append(a)
                pk_f.append(b)
                pk_d.append(d)
                pki_off += a.size
                pkf_off += b.size
                pkd_off += d.size
                xw_i = max(xw_i, m_size * ((k_size + 3) // 4 * 4))
                xw_f = max(xw_f, m_size * k_size)
            # tile outputs; depthwise int8 layers keep their int32 sums here too
            acc_t = max(acc_t, ho * wo * -(-co // net.GEMM_NR) * net.GEMM_NR)
            woff += wt.size
            coff += co

        def cat(parts, dtype):
            return np.ascontiguousarray(np.concatenate(parts).astype(dtype)) if parts else (
                np.zeros(1, dtype))

        self.L, self.LF = L, LF
        self.wpk_i, self.wpk_f = cat(pk_i, np.int8), cat(pk_f, np.float32)
        self.xw_i = np.zeros(xw_i, np.int16)
        self.xw_f = np.zeros(xw_f, np.float32)
        self.acc_ti = np.zeros(acc_t, np.int32)
        self.acc_tf = np.zeros(acc_t, np.float32)
        self.wpk_d = cat(pk_d, np.float64)
        self.xw_d = np.zeros(xw_f, np.float64)
        self.acc_td = np.zeros(acc_t, np.float64)
        self.w_f32, self.w_i8, self.w_i16 = cat(w_f, np.float32), cat(w_8, np.int8), cat(
            w_16, np.int16)
        self.b_f32, self.ws8, self.ws16 = cat(b_f, np.float32), cat(s8, np.float64), cat(
            s16, np.float64)
        self.b_i32, self.mult, self.shift = cat(b32, np.int64), cat(mul, np.int64), cat(
            sh, np.int64)

    def _set_tflite_static(self) -> None:
        """Freeze a full-integer model's own activation qparams (int8, static)."""
        s, z = self.graph.input_quant
        self.st_scale[0, net.P_I8], self.st_zp[0, net.P_I8] = s, z
        for layer in self.graph.layers:
            if layer.quant is not None:
                t = layer.output
                self.st_scale[t, net.P_I8] = layer.quant.output_scale
                self.st_zp[t, net.P_I8] = layer.quant.output_zero_point
        self.qmode[:] = net.Q_STATIC
        # int16 layers of an int8 model cover the same real range with 65536 levels
        for t in range(self.graph.n_tensors):
            s8, z8 = self.st_scale[t, net.P_I8], self.st_zp[t, net.P_I8]
            s16, z16 = net.qparams_from_range((-128 - z8) * s8, (127 - z8) * s8, -32768, 32767)
            self.st_scale[t, net.P_I16], self.st_zp[t, net.P_I16] = s16, z16

    def set_static_ranges(self, ranges: np.ndarray) -> None:
        """Freeze per-tensor (min, max) ranges (from calibration) for int8 and int16."""
        for t, (mn, mx) in enumerate(np.asarray(ranges, np.float64)):
            for p, (lo, hi) in ((net.P_I8, (-128, 127)), (net.P_I16, (-32768, 32767))):
                s, z = net.qparams_from_range(float(mn), float(mx), lo, hi)
                self.st_scale[t, p], self.st_zp[t, p] = s, z
        self.qmode[:] = net.Q_STATIC

    # ------------------------------------------------------------------ running

    def set_qmode(self, mode: str) -> None:
        """Activation-scale mode for all tensors: "exact", "running" or "static"."""
        if mode not in QMODES:
            raise ConfigError(f"unknown quantization mode {mode!r}; use {list(QMODES)}")
        self.qmode[:] = QMODES[mode]

    def reset_stats(self) -> None:
        self.ost[:] = 0.0

    def run(self, x: np.ndarray, codes: np.ndarray, x_q8: np.ndarray | None = None,
            rows: np.ndarray | None = None, advance: int = 0,
            out: np.ndarray | None = None) -> np.ndarray:
        """One call of the compiled network; returns the output (fp32) buffer.

        Window mode: ``x`` is the whole input. Incremental mode (ring tensors):
        ``advance=k`` slides the rings by ``k`` rows first, ``x`` may be just the
        newest ``k`` input rows and ``rows`` [n_layers, 4] names the output rows to
        recompute (two ranges per layer); with ``k > 1`` the outputs of the ``k``
        windows ending at the new rows go one after another into ``out`` (see
        ``kernels.network.run_network``).
        """
        if self._arrays is None:  # built once: every persistent buffer keeps its memory
            self._arrays = self._arrays_with()
        out = self.out if out is None else out
        net.run_plan(self._arrays, x, self._xq_dummy if x_q8 is None else x_q8,
                     net.P_F32 if x_q8 is None else net.P_I8, out, codes,
                     self.rows_window if rows is None else rows, self.alpha, int(advance))
        return out

    def run_frames(self, frames: np.ndarray, out: np.ndarray, first: int, n: int,
                   codes: np.ndarray, rows_by_k: np.ndarray) -> None:
        """Incremental steps over frames ``first .. first + n - 1`` of ``frames`` (flat
        [frames, features]) into the same rows of the flat ``out``, at most
        ``rows_by_k.shape[0] - 1`` frames per step, ``rows_by_k[k]`` the ``rows`` of a
        ``k``-frame step (``kernels.network.run_plan_frames``).

        The argument types are fixed by the caller: ``frames`` and ``out`` 1-D
        C-contiguous float32, ``codes`` 1-D and ``rows_by_k`` [k_max + 1, n_layers, 4]
        C-contiguous int64, so the call goes straight to the compiled entry point,
        skipping the dispatcher's type checks (2.4 us a call; kws12's 5-frame int8 steps
        take 14-20 us through the entry, 2-core EPYC, interleaved medians). The entry
        point is looked up after the first call, which goes through the dispatcher.
        """
        entry = self._frames_entry
        if entry is None:
            if self._arrays is None:
                self._arrays = self._arrays_with()
            net.run_plan_frames(self._arrays, frames, out, first, n, codes, rows_by_k,
                                self.alpha)
            self._frames_entry = _compiled_entry(net.run_plan_frames, (
                self._arrays, frames, out, first, n, codes, rows_by_k, self.alpha))
            return
        entry(self._arrays, frames, out, first, n, codes, rows_by_k, self.alpha)

    def reset_rings(self) -> None:
        """Zero the input ring and forget its integer copies (incremental mode)."""
        for t in np.flatnonzero(self.ring[:, net.RING_ROWS]):
            self.ring[t, net.RING_START] = 0
            self.t_off[t] = self.ring[t, net.RING_BASE]
        self.ring[:, net.RING_VALID] = 0
        rows, cap = self.ring[0, net.RING_ROWS], self.ring[0, net.RING_CAP]
        if rows:
            self.F[self.t_off[0]: self.t_off[0] + self.t_size[0] // rows * cap] = 0.0

    def _arrays_with(self, **replaced: np.ndarray) -> net.PlanArrays:
        """The plan's persistent arrays for ``kernels.network.run_plan``, some replaced."""
        return net.new_plan_arrays(*(replaced.get(name, getattr(self, name))
                                     for name in net.PLAN_ARRAYS))

    def tensors_fp32(self, x: np.ndarray) -> list[np.ndarray]:
        """All activations of one fp32 run (no arena reuse): calibration input."""
        sizes = [int(s) for s in self.t_size]
        off, top = _offsets(sizes, self._first, self._last, reuse=False)
        arena = np.zeros(top * 7 + 64, np.uint8)
        F, Q16, Q8 = self._views(arena, top)
        codes = np.zeros(self.n_layers, np.int64)
        saved = self.qmode.copy()
        self.qmode[:] = net.Q_EXACT
        try:
            arrays = self._arrays_with(t_off=off, F=F, Q8=Q8, Q16=Q16, ring=self._no_ring)
            net.run_plan(arrays, x, self._xq_dummy, net.P_F32, self.out, codes,
                         self.rows_window, self.alpha, 0)
        finally:
            self.qmode[:] = saved
        return [F[off[t]: off[t] + sizes[t]].copy() for t in range(len(sizes))]

    # ------------------------------------------------------------------ report

    def weight_bytes(self, codes: np.ndarray | None = None) -> int:
        total = 0
        for i, layer in enumerate(self.graph.layers):
            if layer.kind != CONV:
                continue
            p = net.P_F32 if codes is None else int(codes[i])
            total += layer.weights.size * (4, 1, 2)[p] + layer.out_shape[2] * 4
        return int(total)

    def describe(self, codes: np.ndarray | None = None) -> dict:
        """Layers, MACs, precision per layer, weight and arena bytes, peak memory."""
        if codes is None:
            codes = np.zeros(self.n_layers, np.int64)
        rows = []
        for i, layer in enumerate(self.graph.layers):
            p = int(codes[i]) if layer.kind != SOFTMAX else net.P_F32
            wb = 0 if layer.kind != CONV else layer.weights.size * (4, 1, 2)[p] + 4 * (
                layer.out_shape[2])
            rows.append({"index": i, "name": layer.name, "kind": layer.kind,
                         "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
                         "macs": layer.macs, "precision": PRECISION_NAMES[p],
                         "weight_bytes": int(wb)})
        packed = sum(a.nbytes for a in (self.w_f32, self.w_i8, self.w_i16, self.b_f32, self.ws8,
                                        self.ws16, self.b_i32, self.mult, self.shift,
                                        self.wpk_i, self.wpk_f, self.wpk_d))
        state = sum(a.nbytes for a in (self.L, self.LF, self.st_scale, self.st_zp, self.ost,
                                       self.qsc, self.qzp, self.acc_f, self.acc_i32,
                                       self.acc_i64, self.mscale, self.xw_i, self.xw_f,
                                       self.acc_ti, self.acc_tf, self.xw_d, self.acc_td,
                                       self.pool_sum, self.pool_at))
        return {
            "layers": rows,
            "total_macs": int(sum(r["macs"] for r in rows)),
            "weight_bytes": int(sum(r["weight_bytes"] for r in rows)),
            "packed_weight_bytes_all_precisions": int(packed),
            "arena_bytes": int(self.arena.nbytes),
            "arena_elements": int(self.arena_elems),
            "activation_elements_without_reuse": int(self.t_size.sum()),
            "peak_memory_bytes": int(self.arena.nbytes + packed + state),
            "weight_scheme": self.weight_scheme,
        }


def _compiled_entry(dispatcher, args: tuple):
    """The compiled entry point of ``dispatcher`` for the types of ``args`` (a C function
    that unboxes the arguments by that signature: it checks nothing, so callers must pass
    exactly these types), or the dispatcher itself when numba keeps no such overload."""
    sig = tuple(dispatcher.typeof_pyval(a) for a in args)
    entry = getattr(dispatcher.overloads.get(sig), "entry_point", None)
    return dispatcher if entry is None else entry
