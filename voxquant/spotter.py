"""``KeywordSpotter``: what a voice app imports.

Audio of any chunk size goes in; the incremental front end makes one feature
frame per hop; a noise tracker and energy gate decide whether the model needs
to run; the precision controller picks the precision level; the model scores
the newest window; smoothing, thresholds and a refractory period turn
posteriors into :class:`~voxquant.results.Detection` events.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxquant.errors import AudioInputError, ConfigError, checked_number
from voxquant.models.cards import ModelCard, resolve_model, streaming_settings
from voxquant.results import Detection, SpotterStats
from voxquant.runners import make_runner
from voxquant.stream.confirm import Confirmer
from voxquant.stream.controller import ControllerConfig, PrecisionController, controller_config
from voxquant.stream.detector import PosteriorDetector
from voxquant.stream.frontend import NON_FINITE, StreamingFrontEnd, all_finite, pcm_samples
from voxquant.stream.noise import (
    ENERGY_DBFS,
    NOISE_FLOOR_DBFS,
    EnergyGate,
    NoiseTracker,
    row_snr_db,
)
from voxquant.stream.ring import AudioHistory, FrameRing

__all__ = ["KeywordSpotter", "POLICIES", "TraceRow"]

# feature hops handled per front-end call: sizes the feature, energy and posterior buffers;
# the frame ring keeps one model window more, so every hop of a block can read its window
HOPS_PER_BLOCK = 256

# policy -> fixed engine level (None: chosen per hop by the controller)
POLICIES: dict[str, str | None] = {
    "fp32": "fp32",
    "int8-static": "int8-static",
    "int8-dynamic": "int8",
    "int16": "int16",
    "adaptive": None,
}


@dataclass(frozen=True)
class TraceRow:
    """One hop of the optional per-window trace."""

    time_s: float
    energy_dbfs: float
    noise_floor_dbfs: float
    snr_db: float
    precision: str
    gated: bool
    cpu_us: float
    top_score: float

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in vars(self).items()}


class KeywordSpotter:
    """Streaming keyword spotter over audio chunks of any length.

    Parameters
    ----------
    model : str or Path
        Shipped model name (``"kws12"``, ``"digits"``) or an ``.onnx`` path with
        its model card beside it.
    policy : str
        ``"fp32"``, ``"int8-static"``, ``"int8-dynamic"``, ``"int16"`` or
        ``"adaptive"`` (precision follows the estimated noise; the model is
        skipped while only stationary background is present).
    threshold : float or mapping
        Smoothed posterior a keyword needs; a mapping sets per-keyword values.
    sample_rate_hz : int
        Rate of the audio passed to :meth:`process` (resampled if it differs
        from the model's).
    stride_hops : int
        Run the model every ``stride_hops`` feature hops (1 = every hop).
    refractory_ms : float
        Quiet time after a detection.
    decision_delay_ms : float
        How long a keyword that crossed its threshold waits for a better-scoring
        one before it is reported (peak picking; adds at most this latency).
    smoothing_windows : int
        Posterior vectors averaged before thresholding.
    gate : bool, optional
        Skip the model on stationary background; default: on for ``adaptive``.
    controller : ControllerConfig, optional
        Precision thresholds for ``adaptive``.
    runtime : str
        ``"voxquant"`` (our engine) or ``"onnxruntime"`` (fp32 only; a peer
        baseline for comparisons).
    trace : bool
        Keep a :class:`TraceRow` per hop in ``spotter.trace``.
    incremental : bool
        Update only the newest rows of each layer per hop (causal models;
        integer levels use the model's calibrated static scales). Every hop's
        frame is pushed, so ``stride_hops`` only thins the decisions.
    record_posteriors : bool
        Keep ``(end_s, smoothed posteriors)`` of every model run in
        ``spotter.posteriors`` (for threshold calibration; allocates per hop).
    confirm : Confirmer or str, optional
        A second model that must agree before a detection is reported (see
        :class:`voxquant.stream.confirm.Confirmer`; a name such as
        ``"mlperf-kws"`` builds one with ``confirm_threshold``). It runs only when
        the first stage fires; a rejected candidate does not start the
        refractory period, so a later window of the same utterance can still fire.
    confirm_threshold : float
        The second model's posterior needed, when ``confirm`` is a name.
    """

    def __init__(
        self,
        model: str | Path = "kws12",
        *,
        policy: str = "adaptive",
        threshold: float | Mapping[str, float] | None = None,
        sample_rate_hz: int = 16000,
        stride_hops: int = 1,
        refractory_ms: float = 1000.0,
        decision_delay_ms: float = 200.0,
        smoothing_windows: int = 3,
        gate: bool | None = None,
        controller: ControllerConfig | None = None,
        runtime: str = "voxquant",
        trace: bool = False,
        incremental: bool = False,
        record_posteriors: bool = False,
        confirm: Confirmer | str | Path | None = None,
        confirm_threshold: float = 0.5,
    ):
        if policy not in POLICIES:
            raise ConfigError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        self.card: ModelCard = resolve_model(model)
        self.policy = policy
        self.sample_rate_hz = checked_number("sample_rate_hz", sample_rate_hz, 1, integer=True)
        self.stride_hops = checked_number("stride_hops", stride_hops, 1, integer=True)
        fe = self.card.frontend
        self.hop_s = fe.hop_samples / fe.sample_rate_hz
        self.incremental = incremental
        self._runner = make_runner(self.card, runtime, incremental=incremental)
        if incremental and policy == "int8-static":
            raise ConfigError("incremental int8 already uses static scales: use 'int8-dynamic'"
                              " or 'int8-static' without incremental")
        # Incremental "int8"/"int16" are served with the calibrated static scales.
        level = POLICIES[policy]
        if policy != "adaptive" and level not in self._runner.levels:
            why = getattr(self._runner, "unavailable", {}).get(level, "not offered")
            raise ConfigError(f"runtime {runtime!r} has no {policy!r} policy: {why}")
        if threshold is None:  # measured per keyword when available
            threshold = streaming_settings(self.card).get("thresholds", 0.8)
        self._frontend = StreamingFrontEnd(fe)
        self._feat_buf = np.empty((HOPS_PER_BLOCK, fe.n_features), np.float32)
        # a chunk's frames go in at once; hop i of n reads the window n - 1 - i frames back
        self._frames = FrameRing(self.card.window_frames + HOPS_PER_BLOCK, fe.n_features)
        self._detector = PosteriorDetector(
            self.card.labels,
            threshold=threshold,
            smoothing_windows=smoothing_windows,
            refractory_s=checked_number("refractory_ms", refractory_ms, 0.0) / 1000.0,
            decision_delay_s=checked_number("decision_delay_ms", decision_delay_ms, 0.0)
            / 1000.0,
        )
        self._noise = NoiseTracker(hop_s=self.hop_s)
        self._gate = EnergyGate(hop_s=self.hop_s, hangover_s=max(1.2, self.card.window_s + 0.2))
        self.gate_enabled = (policy == "adaptive") if gate is None else bool(gate)
        cfg = controller or controller_config(self.card)
        if policy == "adaptive":  # only adaptive climbs the ladder
            cfg = cfg.restricted_to(self._runner.levels)
        self._controller = PrecisionController(cfg, hop_s=self.hop_s)
        self._resampler = None
        if self.sample_rate_hz != fe.sample_rate_hz:
            import soxr

            self._resampler = soxr.ResampleStream(
                self.sample_rate_hz, fe.sample_rate_hz, 1, dtype="float32"
            )
        self._energy_buf = np.empty(HOPS_PER_BLOCK, np.float64)
        # per hop of a block: (energy dBFS, noise floor, speech level), gate open or not
        self._noise_buf = np.empty((HOPS_PER_BLOCK, 3), np.float64)
        self._open_buf = np.ones(HOPS_PER_BLOCK, np.bool_)
        self._level_buf = np.zeros(HOPS_PER_BLOCK, np.int64)  # adaptive: the level per hop
        self._fixed_level = POLICIES[policy]  # None: adaptive
        self._probs_buf = np.empty((HOPS_PER_BLOCK, len(self.card.labels)), np.float32)
        if incremental:  # the block's frames -> their posteriors, rows i0 .. i0 + n - 1
            self._step_rows = self._runner.bind(self._feat_buf, self._probs_buf)
        # incremental steps waiting for one batched call: a run of consecutive hops of
        # one level, hop numbers _pending_hop0 .. + _pending_n - 1, features from row
        # _pending_i0 of the block's buffers
        self._pending_n = 0
        self._pending_i0 = self._pending_hop0 = 0
        self._pending_level = ""
        self.trace_enabled = trace
        self.trace: list[TraceRow] = []
        self.record_posteriors = record_posteriors
        self.posteriors: list[tuple[float, np.ndarray]] = []
        self.scores = np.zeros(len(self.card.labels), np.float32)
        self._confirm = self._make_confirmer(confirm, confirm_threshold)
        self._history = None
        if self._confirm is not None:  # the raw audio the second model needs
            delay_hops = int(np.ceil(decision_delay_ms / 1000.0 / self.hop_s))
            self._history = AudioHistory(
                self._confirm.window_samples
                + (self._feat_buf.shape[0] + 1 + delay_hops) * fe.hop_samples)
        self.reset()

    def _make_confirmer(self, confirm, threshold: float) -> Confirmer | None:
        if confirm is None:
            return None
        c = confirm if isinstance(confirm, Confirmer) else Confirmer(confirm, threshold=threshold)
        if c.frontend.sample_rate_hz != self.card.frontend.sample_rate_hz:
            raise ConfigError(f"confirming model {c.name!r} runs at "
                              f"{c.frontend.sample_rate_hz} Hz, {self.card.name} at "
                              f"{self.card.frontend.sample_rate_hz} Hz")
        missing = [k for k in self.card.labels if not k.startswith("_") and k not in c.labels]
        if missing:
            raise ConfigError(f"confirming model {c.name!r} does not know {missing}")
        return c

    # --- public API -------------------------------------------------------------------------

    def __repr__(self) -> str:
        mode = "incremental" if self.incremental else "window"
        return (f"KeywordSpotter(model={self.card.name!r}, policy={self.policy!r}, {mode}, "
                f"precision now {self.precision!r}, {self._hops * self.hop_s:.1f} s heard)")

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    @property
    def precision(self) -> str:
        """Precision level in force now."""
        if self._fixed_level is not None:
            return self._fixed_level
        return self._controller.levels[self._controller.level]

    def reset(self) -> None:
        """Forget all audio and statistics; the next chunk starts a new stream."""
        self._frontend.reset()
        self._frames.reset()
        self._detector.reset()
        self._noise.reset()
        self._gate.reset()
        self._controller.reset()
        self.scores[:] = 0.0
        self.trace.clear()
        self.posteriors.clear()
        self._primed_level = None  # incremental: level the cached rows belong to
        self._pending_n = 0
        self._hops = 0
        self._windows_run = 0
        self._windows_gated = 0
        self._cpu_s = 0.0
        self._precision_hops: dict[str, int] = {}
        self._precision_windows = {}
        self._precision_cpu = {}
        self.overruns = 0
        self._confirm_runs = 0
        self._confirm_rejections = 0
        self._confirm_cpu = 0.0
        if self._history is not None:
            self._history.reset()

    @property
    def stats(self) -> SpotterStats:
        macs = {lv: n * self._runner.macs_per_window for lv, n in self._precision_windows.items()}
        return SpotterStats(
            audio_seconds=self._frontend.samples_seen / self.card.frontend.sample_rate_hz,
            cpu_seconds=self._cpu_s,
            windows_run=self._windows_run,
            windows_gated=self._windows_gated,
            precision_time={lv: n * self.hop_s for lv, n in self._precision_hops.items()},
            precision_windows=dict(self._precision_windows),
            precision_cpu_seconds=dict(self._precision_cpu),
            precision_macs=macs,
            overruns=self.overruns,
            precision_switches=self._controller.switches,
            confirmations_run=self._confirm_runs,
            confirmations_rejected=self._confirm_rejections,
            confirm_cpu_seconds=self._confirm_cpu,
        )

    def process(self, chunk: np.ndarray) -> list[Detection]:
        """Feed mono audio of any length; return new detections.

        ``chunk``: int16 or float samples, 1-D or one channel ``(n, 1)`` (int8, uint8 and
        int32 PCM are read at their full scale, :func:`~voxquant.stream.frontend.pcm_samples`).
        Raises
        :class:`~voxquant.errors.AudioInputError`, before anything of the chunk is
        consumed, when it is not mono audio or holds NaN or inf.
        """
        cpu0 = time.thread_time()
        chunk = pcm_samples(chunk)
        step = HOPS_PER_BLOCK * self.card.frontend.hop_samples
        # one piece is checked by the front end before it consumes anything; several
        # pieces (or the resampler's state) need the whole chunk checked first
        if (chunk.shape[0] > step or self._resampler is not None) and not all_finite(chunk):
            raise AudioInputError(NON_FINITE)
        if self._resampler is not None:  # soxr takes float32: one conversion, not two
            chunk = (chunk * np.float32(1.0 / 32768.0) if chunk.dtype == np.int16
                     else np.ascontiguousarray(chunk, np.float32))
            chunk = self._resampler.resample_chunk(chunk)
        detections: list[Detection] = []
        pos = 0
        while pos < chunk.shape[0]:
            piece = chunk[pos : pos + step]
            pos += step
            n = self._frontend.push_into(piece, self._feat_buf, self._energy_buf)
            if self._history is not None:
                self._history.append(piece)
            self._frames.push(self._feat_buf[:n])
            self._noise.run_block(self._energy_buf, n, self._noise_buf)
            opened = self._gate.run_block(self._noise_buf, n, self._open_buf) if (
                self.gate_enabled) else n
            level = self._fixed_level
            if level is None:
                switches = self._controller.switches
                level = self.precision  # in force before the block
                self._controller.run_block(self._noise_buf, n, self._level_buf)
                if self._controller.switches != switches:
                    level = None
            if (level is not None and level == self._primed_level and opened == n and n
                    and self._hops + 1 >= self.card.window_frames):
                # steady state (incremental, primed, gate open and one level all block
                # long): every hop would join one pending run, so it is made at once
                # instead of hop by hop (the same calls, without _hop's Python per hop)
                self._precision_hops[level] = self._precision_hops.get(level, 0) + n
                self._queue_steps(0, n, level, self._hops + 1)
                self._hops += n
            else:
                for i in range(n):
                    self._hop(i, n, detections)
            self._flush_steps(detections)
        self._cpu_s += time.thread_time() - cpu0
        return detections

    def warm_up(self) -> None:
        """Run every compiled piece of the path once (front end, noise tracking, gate,
        controller, frame ring, detector, the model at every precision level, the confirming
        model), then forget it.

        The first call of a compiled kernel loads it from numba's cache (about a second)
        or compiles it (tens of seconds on a cold cache); doing that before a live source
        opens means no audio is dropped while it happens.
        """
        fe = self.card.frontend
        StreamingFrontEnd(fe).push_into(np.zeros(fe.window_samples, np.float32),
                                        self._feat_buf, self._energy_buf)
        NoiseTracker(hop_s=self.hop_s).run_block(self._energy_buf, 1, self._noise_buf)
        EnergyGate().run_block(self._noise_buf, 1, self._open_buf)
        row_snr_db(self._noise_buf, 0)  # the trace's
        PrecisionController(self._controller.config).run_block(self._noise_buf, 1,
                                                                self._level_buf)
        FrameRing(1, fe.n_features).push(self._feat_buf[:1])
        detector = PosteriorDetector(self.card.labels)
        detector.update(self._probs_buf[0], 0.0, 0)
        detector.update_block(self._probs_buf[:1], 0, 0, 1, 1.0)
        detector.poll(0.0)
        if self._confirm is not None:
            keyword = next(k for k in self.card.labels if not k.startswith("_"))
            self._confirm.score(keyword, np.zeros(self._confirm.window_samples, np.float32))
        window = np.zeros((self.card.window_frames, fe.n_features), np.float32)
        for level in self._runner.levels:
            if self.incremental:
                self._runner.prime(window, level)
                self._runner.step(window[-1], level)
            else:
                self._runner.run(window, level)
        self._primed_level = None

    async def listen(self, source) -> AsyncIterator[Detection]:
        """Detections from an audio source (``Microphone``, ``WavFile``, any async iterator).

        The model is warmed up first (:meth:`warm_up`), then sources that are async
        context managers are opened and closed here.
        """
        self.warm_up()
        if hasattr(source, "__aenter__"):
            async with source as opened:
                async for det in self._listen(opened):
                    yield det
        else:
            async for det in self._listen(source):
                yield det

    async def _listen(self, source) -> AsyncIterator[Detection]:
        async for chunk in source:
            for det in self.process(chunk):
                yield det
            self.overruns = int(getattr(source, "overruns", self.overruns))

    # --- one hop ----------------------------------------------------------------------------

    def _confirmed(self, fired: int, end_sample: int) -> bool:
        """Ask the second model about the candidate whose window ends at ``end_sample``."""
        t0 = time.thread_time()
        audio = self._history.window(end_sample, self._confirm.window_samples)
        ok, _ = self._confirm.confirms(self.card.labels[fired], audio)
        self._confirm_runs += 1
        if not ok:
            self._confirm_rejections += 1
            self._detector.cancel_refractory()
        self._confirm_cpu += time.thread_time() - t0
        return ok

    def _hop(self, i: int, n: int, detections: list[Detection]) -> None:
        """Hop ``i`` of the ``n`` in the block's buffers (features, noise and gate, filled
        by :meth:`process` for the whole block, as are the controller's levels): the model.

        Incremental steps wait in the pending run so that consecutive ones run in one
        compiled call (:meth:`_flush_steps`); anything that must see their results
        first (the detector on a gated hop, a prime) flushes them.
        """
        self._hops += 1
        level = self._fixed_level
        if level is None:
            level = self._controller.levels[self._level_buf[i]]
        self._precision_hops[level] = self._precision_hops.get(level, 0) + 1
        gate_open = not self.gate_enabled or bool(self._open_buf[i])
        if self._hops < self.card.window_frames:
            return
        decide = self._hops % self.stride_hops == 0
        fe = self.card.frontend
        end_sample = fe.samples_for(self._hops)
        end_s = end_sample / fe.sample_rate_hz
        if self.incremental and gate_open and self._primed_level == level:
            # every hop's frame is pushed (keeping the cached rows current); off-stride
            # hops only thin the decisions
            self._queue_steps(i, 1, level, self._hops)
            return
        if not decide:
            if self.incremental:
                self._primed_level = None
            return
        self._flush_steps(detections)
        cpu_us = 0.0
        if not gate_open:
            self._windows_gated += 1
            self._detector.clear_history()
            self.scores[:] = 0.0
            self._primed_level = None
            fired = self._detector.poll(end_s)
        else:
            t0 = time.thread_time()
            if not self.incremental:
                probs = self._runner.run(self._window(n - 1 - i), level)
            else:
                probs = self._runner.prime(self._window(n - 1 - i), level)
                self._primed_level = level
            dt = time.thread_time() - t0
            cpu_us = dt * 1e6
            self._count_run(level, dt, 1)
            fired = self._score(probs, end_s, end_sample)
        self._decided(fired, level, i, gate_open, end_s, cpu_us, detections)

    def _window(self, back: int) -> np.ndarray:
        """The model's input window ending ``back`` hops before the newest frame."""
        return self._frames.latest(self.card.window_frames, back=back)

    def _queue_steps(self, i: int, n: int, level: str, hop: int) -> None:
        """Add hops ``hop .. hop + n - 1`` (rows ``i ..`` of the block's buffers) to the
        pending run, which they continue: consecutive hops of one level."""
        if not self._pending_n:
            self._pending_i0, self._pending_level, self._pending_hop0 = i, level, hop
        self._pending_n += n

    def _flush_steps(self, detections: list[Detection]) -> None:
        """Run the waiting incremental steps in one call, then decide each in order."""
        n = self._pending_n
        if not n:
            return
        self._pending_n = 0
        i0, level, hop0 = self._pending_i0, self._pending_level, self._pending_hop0
        t0 = time.thread_time()
        self._step_rows(i0, n, level)
        dt = time.thread_time() - t0
        probs = self._probs_buf[i0 : i0 + n]
        stride = self.stride_hops  # hop h decides when h % stride == 0
        decisions = (hop0 + n - 1) // stride - (hop0 - 1) // stride
        self._count_run(level, dt, decisions)
        cpu_us = dt * 1e6 / n
        fe = self.card.frontend
        if decisions == n and not (self.trace_enabled or self.record_posteriors):
            # every hop decides (consecutive windows): the detector takes them in one
            # compiled call that stops at each detection
            j, first_end = 0, fe.samples_for(hop0)
            while j < n:
                j, fired = self._detector.update_block(probs, j, first_end, fe.hop_samples,
                                                       fe.sample_rate_hz)
                if fired is not None:
                    end_s = fe.samples_for(hop0 + j) / fe.sample_rate_hz
                    self._decided(fired, level, i0 + j, True, end_s, cpu_us, detections)
                    j += 1
            self.scores[:] = probs[n - 1]
        else:
            for j in range(n):
                if (hop0 + j) % stride == 0:
                    end_sample = fe.samples_for(hop0 + j)
                    end_s = end_sample / fe.sample_rate_hz
                    fired = self._score(probs[j], end_s, end_sample)
                    self._decided(fired, level, i0 + j, True, end_s, cpu_us, detections)

    def _count_run(self, level: str, cpu_s: float, windows: int) -> None:
        self._windows_run += windows
        self._precision_windows[level] = self._precision_windows.get(level, 0) + windows
        self._precision_cpu[level] = self._precision_cpu.get(level, 0.0) + cpu_s

    def _score(self, probs: np.ndarray, end_s: float, end_sample: int) -> int | None:
        """Posteriors of the window ending at ``end_s`` into the detector."""
        self.scores[:] = probs
        fired = self._detector.update(probs, end_s, end_sample)
        if self.record_posteriors:
            self.posteriors.append((end_s, self._detector.smoothed.copy()))
        return fired

    def _decided(self, fired: int | None, level: str, i: int, gate_open: bool, end_s: float,
                 cpu_us: float, detections: list[Detection]) -> None:
        """Confirmation, the detection itself and the trace row of one decision hop
        (hop ``i`` of the block in the feature and noise buffers)."""
        if fired is not None and self._confirm is not None and not self._confirmed(
                fired, self._detector.fired_position):
            fired = None
        if fired is not None:
            detections.append(
                Detection(
                    keyword=self.card.labels[fired],
                    score=float(self._detector.fired_score),
                    start_s=max(0.0, end_s - self.card.window_s),
                    end_s=end_s,
                    precision=level,
                )
            )
        if self.trace_enabled:
            row = self._noise_buf[i]
            self.trace.append(
                TraceRow(end_s, float(row[ENERGY_DBFS]), float(row[NOISE_FLOOR_DBFS]),
                         float(row_snr_db(self._noise_buf, i)), level, not gate_open, cpu_us,
                         float(self.scores.max()))
            )
