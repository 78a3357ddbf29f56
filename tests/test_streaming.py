"""Streaming pieces: noise tracker, gate, controller, detector, queue, spotter invariance."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tinymodel import write_tiny_model

from voxquant.errors import AudioInputError, ConfigError
from voxquant.spotter import KeywordSpotter
from voxquant.stream.controller import ControllerConfig, PrecisionController
from voxquant.stream.detector import PosteriorDetector, _smooth_and_pick
from voxquant.stream.noise import EnergyGate, NoiseTracker
from voxquant.stream.pipeline import DropOldestQueue

LABELS = ("yes", "no", "_silence_", "_unknown_")


def test_noise_floor_follows_room_and_ignores_short_speech():
    tracker = NoiseTracker(hop_s=0.02)
    for _ in range(200):  # 4 s of a -60 dBFS room
        est = tracker.update(-60.0)
    assert est.noise_floor_dbfs == pytest.approx(-60.0, abs=0.5)
    for _ in range(25):  # 0.5 s of speech at -20 dBFS barely lifts the floor
        est = tracker.update(-20.0)
    assert est.noise_floor_dbfs < -55.0
    assert est.speech_level_dbfs == pytest.approx(-20.0)
    assert est.snr_db > 30.0
    for _ in range(500):  # 10 s of loud noise: the floor rises to it
        est = tracker.update(-30.0)
    assert est.noise_floor_dbfs == pytest.approx(-30.0, abs=0.5)
    assert est.snr_db < 10.0


def test_gate_opens_on_energy_and_holds_for_the_hangover():
    tracker, gate = NoiseTracker(hop_s=0.02), EnergyGate(hop_s=0.02, hangover_s=0.5)
    states = [gate.update(tracker.update(-60.0)) for _ in range(100)]
    assert not any(states[10:])
    assert gate.update(tracker.update(-30.0))
    held = [gate.update(tracker.update(-60.0)) for _ in range(40)]
    assert all(held[:24]) and not any(held[25:])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1e-14, 1e-9, 1e-6, 1e-4, 1e-2, 0.5, 1.0, 2.0]),
                          st.integers(1, 12)), min_size=1, max_size=12),
       st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 2**31))
def test_block_noise_and_gate_equal_hop_by_hop(runs, cuts, seed):
    """One compiled call per block gives every hop what per-hop update() gives, bit for bit,
    however the hops are split into blocks (the spotter's per-hop Python path it replaced).
    Runs of one level make loud bursts after quiet stretches, so the gate's hang-over ends."""
    rng = np.random.default_rng(seed)
    levels = [level for level, n in runs for _ in range(n)]
    ms = np.array(levels) * rng.uniform(0.5, 2.0, len(levels))
    one_t, one_g = NoiseTracker(hop_s=0.02), EnergyGate(hop_s=0.02, hangover_s=0.1)
    want = []
    for m in ms:
        est = one_t.update(max(-100.0, 10.0 * math.log10(m + 1e-12) + 3.0103))
        want.append((est.energy_dbfs, est.noise_floor_dbfs, est.speech_level_dbfs,
                     one_g.update(est)))
    blk_t, blk_g = NoiseTracker(hop_s=0.02), EnergyGate(hop_s=0.02, hangover_s=0.1)
    got, pos, k = [], 0, 0
    out, is_open = np.empty((64, 3)), np.empty(64, np.bool_)
    while pos < ms.size:
        n = min(cuts[k % len(cuts)], ms.size - pos)
        k += 1
        blk_t.run_block(ms[pos : pos + n], n, out)
        assert blk_g.run_block(out, n, is_open) == int(is_open[:n].sum())
        got += [(*map(float, out[t]), bool(is_open[t])) for t in range(n)]
        pos += n
    assert got == want


def test_controller_widens_at_once_and_narrows_after_dwell_with_hysteresis():
    cfg = ControllerConfig(widen_below_snr_db=(20.0, 8.0), hysteresis_db=3.0, min_dwell_s=1.0)
    ctl = PrecisionController(cfg, hop_s=0.02)
    assert ctl.update(40.0) == "int8"
    assert ctl.update(5.0) == "fp32"  # widen immediately
    assert ctl.update(9.0) == "fp32"  # inside the hysteresis band: stay
    levels = [ctl.update(12.0) for _ in range(60)]
    assert levels[0] == "fp32" and levels[-1] == "int16"
    assert levels.index("int16") >= 49  # not before the dwell time
    with pytest.raises(ConfigError):
        ControllerConfig(widen_below_snr_db=(5.0, 8.0))


def _controller_reference(cfg, hop_s, snrs):
    """The controller's rule written plainly: widen at once; narrow one level after the SNR
    has stood a hysteresis above the threshold for the dwell time (and the level as long)."""
    def target(snr, margin=0.0):
        return sum(1 for t in cfg.widen_below_snr_db if snr < t + margin)

    level, in_level, calm, out = 0, 0.0, 0.0, []
    for snr in snrs:
        in_level += hop_s
        if target(snr) > level:
            level, in_level, calm = target(snr), 0.0, 0.0
        elif target(snr, cfg.hysteresis_db) < level:
            calm += hop_s
            if calm >= cfg.min_dwell_s and in_level >= cfg.min_dwell_s:
                level, in_level, calm = level - 1, 0.0, 0.0
        else:
            calm = 0.0
        out.append(level)
    return out


@settings(max_examples=60, deadline=None)
@given(runs=st.lists(st.tuples(st.floats(-10, 40), st.integers(1, 80)), min_size=1,
                     max_size=8),
       cuts=st.lists(st.integers(1, 40), min_size=1, max_size=5),
       dwell_s=st.sampled_from([0.0, 0.1, 1.0]), seed=st.integers(0, 2**31))
def test_controller_block_equals_reference(runs, cuts, dwell_s, seed):
    """run_block over any split of the hops gives the plain rule's level at every hop."""
    rng = np.random.default_rng(seed)
    snrs = np.concatenate([level + rng.normal(0, 2, n) for level, n in runs])
    cfg = ControllerConfig(widen_below_snr_db=(20.0, 8.0), hysteresis_db=3.0,
                           min_dwell_s=dwell_s)
    ctl = PrecisionController(cfg, hop_s=0.02)
    noise = np.zeros((snrs.size, 3))
    noise[:, 2], noise[:, 1] = snrs + 50.0, 50.0
    got, i, k = np.zeros(snrs.size, np.int64), 0, 0
    while i < snrs.size:
        n = min(cuts[k % len(cuts)], snrs.size - i)
        ctl.run_block(noise[i:], n, got[i:])
        i, k = i + n, k + 1
    assert got.tolist() == _controller_reference(cfg, 0.02, (noise[:, 2] - noise[:, 1]).tolist())
    assert ctl.switches == int((np.diff(np.concatenate([[0], got])) != 0).sum())


def test_controller_ladder_without_unoffered_levels():
    cfg = ControllerConfig(widen_below_snr_db=(20.0, 8.0))
    no_int16 = cfg.restricted_to(("int8", "fp32"))
    assert no_int16.levels == ("int8", "fp32") and no_int16.widen_below_snr_db == (8.0,)
    only_fp32 = cfg.restricted_to(("fp32", "int8-static"))
    assert only_fp32.levels == ("fp32",) and only_fp32.widen_below_snr_db == ()
    ctl = PrecisionController(no_int16, hop_s=0.02)
    assert ctl.update(30.0) == "int8" and ctl.update(5.0) == "fp32"
    with pytest.raises(ConfigError):
        cfg.restricted_to(("int4",))


def test_detector_smooths_thresholds_and_refracts():
    det = PosteriorDetector(LABELS, threshold={"yes": 0.6}, default_threshold=0.9,
                            smoothing_windows=2, refractory_s=1.0)
    yes = np.array([0.95, 0.0, 0.0, 0.05])
    silence = np.array([0.0, 0.0, 1.0, 0.0])
    assert det.update(silence, 0.0) is None
    assert det.update(yes, 0.02) is None  # smoothed 0.475 < 0.6
    assert det.update(yes, 0.04) == 0
    assert det.update(yes, 0.5) is None  # refractory
    assert det.update(yes, 1.1) == 0
    no = np.array([0.0, 0.85, 0.0, 0.15])
    assert det.update(no, 2.5) is None and det.update(no, 2.6) is None  # 0.85 < 0.9
    unknown = np.array([0.0, 0.0, 0.0, 1.0])
    det.reset()
    assert det.update(unknown, 0.0) is None and det.update(unknown, 0.1) is None
    with pytest.raises(ConfigError):
        PosteriorDetector(LABELS, threshold={"maybe": 0.5})


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5), n=st.integers(1, 14), hops=st.integers(1, 12),
       seed=st.integers(0, 2**31 - 1), ties=st.booleans())
def test_compiled_smoothing_equals_numpy(rows, n, hops, seed, ties):
    """The detector's one-call smoothing and pick = the numpy formula it replaced, bit for bit
    (ties: few distinct posterior values, so equal scores and thresholds occur)."""
    rng = np.random.default_rng(seed)
    draw = (lambda size: rng.integers(0, 4, size) / 4.0) if ties else rng.random
    thresholds = draw(n)
    is_keyword = rng.random(n) < 0.7
    history, smoothed = np.zeros((rows, n)), np.zeros(n)
    ref_history = np.zeros((rows, n))
    for count in range(hops):
        probs = draw(n).astype(np.float32)
        best, score = _smooth_and_pick(history, count, probs, smoothed, thresholds, is_keyword)
        ref_history[count % rows] = probs
        ref = np.add.reduce(ref_history, axis=0) / min(count + 1, rows)
        over = (ref >= thresholds) & is_keyword
        assert np.array_equal(smoothed, ref)
        if over.any():
            scores = np.where(over, ref, -1.0)
            assert (best, score) == (int(scores.argmax()), float(scores.max()))
        else:
            assert (best, score) == (-1, -1.0)


def test_detector_waits_for_the_best_keyword():
    """Peak picking: a weaker keyword that crossed first is replaced by a stronger one."""
    det = PosteriorDetector(LABELS, threshold=0.6, smoothing_windows=1, decision_delay_s=0.1)
    yes = np.array([0.7, 0.2, 0.0, 0.1])
    no = np.array([0.05, 0.9, 0.0, 0.05])
    assert det.update(yes, 1.00, position=100) is None  # candidate "yes", waits 0.1 s
    assert det.update(no, 1.04, position=104) is None  # better: "no" takes over
    assert det.update(yes, 1.08, position=108) is None
    assert det.update(yes, 1.10, position=110) == 1  # delay counted from the first crossing
    assert det.fired_score == pytest.approx(0.9) and det.fired_position == 104
    assert det.update(no, 1.5) is None  # refractory from the decision
    assert det.update(no, 2.2) is None and det.poll(2.29) is None
    assert det.poll(2.3) == 1  # fires without a new window (the gate may have shut)
    immediate = PosteriorDetector(LABELS, threshold=0.6, smoothing_windows=1)
    assert immediate.update(yes, 0.0) == 0


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), rows=st.integers(1, 4), delay_hops=st.integers(0, 6),
       refractory_hops=st.integers(0, 30), cancel=st.booleans(), seed=st.integers(0, 2**31))
def test_detector_block_equals_window_by_window(n, rows, delay_hops, refractory_hops, cancel,
                                                seed):
    """update_block (one compiled call, stopping at each detection) gives the detections,
    scores and positions of one update() per window, bit for bit."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([0.3] * len(LABELS), size=n)
    hop, rate, first = 320, 16000, 16000 + int(rng.integers(0, 5000))
    options = dict(threshold={"yes": 0.5, "no": 0.4}, smoothing_windows=rows,
                   decision_delay_s=delay_hops * hop / rate,
                   refractory_s=refractory_hops * hop / rate)
    one, block = PosteriorDetector(LABELS, **options), PosteriorDetector(LABELS, **options)
    want = []
    for j in range(n):
        fired = one.update(probs[j], (first + j * hop) / rate, first + j * hop)
        if fired is not None:
            want.append((j, fired, one.fired_score, one.fired_position))
            if cancel:
                one.cancel_refractory()
    got, j = [], 0
    while j < n:
        j, fired = block.update_block(probs, j, first, hop, rate)
        if fired is not None:
            got.append((j, fired, block.fired_score, block.fired_position))
            if cancel:
                block.cancel_refractory()
            j += 1
    assert got == want
    assert np.array_equal(block.smoothed, one.smoothed)


@pytest.mark.parametrize("stride_hops", [1, 3])
def test_spotter_block_decisions_equal_hop_by_hop(causal_model, stride_hops):
    """In steady state the incremental spotter takes a block's hops as one run (one model
    call, without trace one detector call); detections are those of the hop-by-hop path
    (window mode with trace on, bit-identical in fp32), for several chunk sizes."""
    audio = _speechy(5.0, seed=4)
    # the tiny model's keyword posteriors stay tiny: a tiny threshold gives detections
    options = dict(policy="fp32", threshold=2e-6, refractory_ms=300.0,
                   stride_hops=stride_hops)
    ref = KeywordSpotter(causal_model, trace=True, **options)
    want = ref.process(audio)
    assert len(want) >= 2  # the comparison needs detections
    for chunk in (160, 1600, 7777):
        sp = KeywordSpotter(causal_model, incremental=True, **options)
        got = [d for i in range(0, audio.size, chunk) for d in sp.process(audio[i:i + chunk])]
        assert got == want
        np.testing.assert_array_equal(sp.scores, ref.scores)


def _compiled_overloads() -> dict:
    """How many compiled versions each numba function of the streaming path has loaded."""
    from numba.core.registry import CPUDispatcher

    import voxquant.kernels.fft
    import voxquant.kernels.network
    import voxquant.stream.controller
    import voxquant.stream.detector
    import voxquant.stream.frontend
    import voxquant.stream.noise
    import voxquant.stream.ring

    modules = (voxquant.kernels.fft, voxquant.kernels.network, voxquant.stream.controller,
               voxquant.stream.detector, voxquant.stream.frontend, voxquant.stream.noise,
               voxquant.stream.ring)
    return {(m.__name__, name): len(f.overloads) for m in modules
            for name, f in vars(m).items() if isinstance(f, CPUDispatcher)}


@pytest.mark.parametrize("incremental", [False, True])
def test_warm_up_loads_every_compiled_piece(causal_model, incremental):
    """After warm_up(), processing audio loads or compiles nothing more (a live source would
    drop blocks while numba loads a kernel from its cache)."""
    sp = KeywordSpotter(causal_model, policy="adaptive", incremental=incremental,
                        threshold=2e-6)
    sp.warm_up()
    before = _compiled_overloads()
    audio = _speechy(3.0, seed=2)
    for i in range(0, audio.size, 1600):
        sp.process(audio[i:i + 1600])
    assert sp.stats.windows_run > 0
    assert _compiled_overloads() == before


def test_warm_up_covers_every_kind_of_chunk(causal_model):
    """int16, 8-bit, read-only and strided chunks (an app's own buffers) load nothing new:
    the front end's compiled call sees the same array types whatever the chunk."""
    sp = KeywordSpotter(causal_model, policy="fp32", incremental=True, threshold=2e-6)
    sp.warm_up()
    before = _compiled_overloads()
    audio = _speechy(1.0, seed=3)
    read_only = audio.copy()
    read_only.setflags(write=False)
    for chunk in ((audio * 32767).astype(np.int16), read_only, (audio * 127).astype(np.int8),
                  np.repeat(audio, 2)[::2], audio.astype(np.float64)):
        sp.process(chunk)
    assert _compiled_overloads() == before


def test_starting_a_spotter_imports_neither_librosa_nor_scipy_signal():
    """A spotter's start (model, front end, warm-up) stays light: importing
    ``librosa.filters`` pulls in scipy.signal, 1.3-1.7 s of what used to be a 3.5 s start
    on the 2-core dev machine; the front end computes librosa's mel filters itself."""
    code = ("import sys, voxquant\n"
            "voxquant.KeywordSpotter('kws12', incremental=True).warm_up()\n"
            "print(sorted(m for m in ('librosa', 'scipy.signal') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_queue_drops_oldest_and_counts():
    async def go():
        q = DropOldestQueue(3)
        for i in range(5):
            q.put_nowait(np.full(2, i, np.float32))
        q.close()
        got = []
        while (block := await q.get()) is not None:
            got.append(int(block[0]))
        return got, q.dropped

    got, dropped = asyncio.run(go())
    assert got == [3, 4] and dropped == 3  # the end marker pushed one more out


def test_queue_reraises_producer_errors():
    async def go():
        q = DropOldestQueue(2)
        q.put_error(RuntimeError("device gone"))
        await q.get()

    with pytest.raises(RuntimeError, match="device gone"):
        asyncio.run(go())


# --- the spotter over a small random model (no shipped model needed) -------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"), LABELS)


def _speechy(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    bursts = (np.sin(2 * np.pi * 0.2 * t) > 0.8) * np.sin(2 * np.pi * 300 * t) * 0.3
    return (bursts + 0.003 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("policy", ["fp32"])
def test_spotter_output_is_independent_of_chunk_size(tiny_model, policy):
    audio = _speechy(6.0)

    def run(chunk):
        sp = KeywordSpotter(tiny_model, policy=policy, runtime="onnxruntime", trace=True,
                            threshold=0.3, gate=True)
        dets = []
        for i in range(0, audio.size, chunk):
            dets += sp.process(audio[i : i + chunk])
        return dets, [(r.time_s, r.top_score, r.gated) for r in sp.trace], sp.stats

    ref_dets, ref_trace, ref_stats = run(16000)
    assert ref_stats.windows_run > 0 and ref_stats.windows_gated > 0
    for chunk in (1, 333, 320, 4096):
        dets, trace, stats = run(chunk)
        assert dets == ref_dets
        assert trace == ref_trace
        assert stats.windows_run == ref_stats.windows_run


def test_pcen_model_streams_chunk_invariantly_and_scores_each_clip_afresh(tmp_path):
    """A model trained on ``kws-pcen`` runs everywhere a log-mel one does: the spotter's
    output is independent of chunk size with PCEN's smoother carried through the stream,
    and batch scoring restarts the smoother for every clip, as training did."""
    from voxquant.engine import load
    from voxquant.scoring import FileScorer
    from voxquant.stream.frontend import compute_features

    path = write_tiny_model(tmp_path, LABELS, frontend="kws-pcen")
    audio = _speechy(6.0)

    def run(chunk):
        sp = KeywordSpotter(path, policy="fp32", trace=True, threshold=0.3)
        dets = [d for i in range(0, audio.size, chunk) for d in sp.process(audio[i:i + chunk])]
        return dets, [(r.time_s, r.top_score) for r in sp.trace]

    reference = run(16000)
    assert len(reference[1]) > 200
    for chunk in (7, 333, 4096):
        assert run(chunk) == reference
    model = load(path)
    model.set_precision("fp32")
    scorer = FileScorer(path, policy="fp32")
    loud, quiet = audio[16000:32000] * np.float32(8.0), audio[:16000]
    for clip in (loud, quiet, loud):  # the loud clip must not colour the quiet one
        probs, _ = scorer.classify(clip)
        np.testing.assert_allclose(probs, model(compute_features(clip, "kws-pcen")),
                                   rtol=1e-6, atol=1e-7)


def test_spotter_accepts_int16_and_other_rates(tiny_model):
    audio = _speechy(2.0)
    sp = KeywordSpotter(tiny_model, policy="fp32", runtime="onnxruntime")
    sp.process((audio * 32767).astype(np.int16))
    assert sp.stats.audio_seconds == pytest.approx(2.0)
    sp48 = KeywordSpotter(tiny_model, policy="fp32", runtime="onnxruntime", sample_rate_hz=48000)
    sp48.process(np.zeros(48000, np.float32))
    assert sp48.stats.audio_seconds == pytest.approx(1.0, abs=0.05)


def _scores_of(sp: KeywordSpotter, chunks) -> tuple[list, list]:
    """Detections from ``chunks`` and the spotter's whole trace so far."""
    dets = []
    for chunk in chunks:
        dets += sp.process(chunk)
    return dets, [(r.time_s, r.top_score, r.gated) for r in sp.trace]


def test_spotter_reads_integer_pcm_at_full_scale(tiny_model):
    """int32 (24-bit audio arrives left-aligned in it) and 8-bit PCM give what the same
    audio gives as int16 / float; before, int32 was read as floats of +-2**31."""
    pcm16 = (_speechy(3.0) * 32767).astype(np.int16)

    def run(audio):
        sp = KeywordSpotter(tiny_model, policy="fp32", runtime="onnxruntime", trace=True,
                            threshold=0.3)
        return _scores_of(sp, (audio[i:i + 1600] for i in range(0, audio.size, 1600)))

    assert run(pcm16.astype(np.int32) << 16) == run(pcm16)
    pcm8 = (pcm16 >> 8).astype(np.int8)
    assert run((pcm8.astype(np.int16) + 128).astype(np.uint8)) == run(pcm8) == run(
        pcm8.astype(np.float32) / 128)
    with pytest.raises(AudioInputError, match="int64"):
        run(pcm16.astype(np.int64))


@pytest.mark.parametrize(("rate_hz", "chunk"), [(16000, 1600), (16000, 100000),
                                                 (48000, 4800)])
def test_spotter_refuses_non_finite_chunks_without_consuming_them(tiny_model, rate_hz, chunk):
    """A chunk with NaN or inf raises before anything of it is taken: the stream goes on
    as if it had never come (one front-end piece, several pieces, or resampled)."""
    audio = _speechy(14.0)  # the second chunk of 100000 samples is two front-end pieces
    if rate_hz != 16000:
        audio = np.repeat(audio, rate_hz // 16000)
    chunks = [audio[i:i + chunk] for i in range(0, audio.size, chunk)]

    def make():
        return KeywordSpotter(tiny_model, policy="fp32", runtime="onnxruntime", trace=True,
                              threshold=0.3, sample_rate_hz=rate_hz)

    sp = make()
    got = _scores_of(sp, chunks[:1])
    bad = chunks[1].copy()
    bad[-1] = np.nan
    with pytest.raises(AudioInputError, match="NaN or inf"):
        sp.process(bad)
    rest = _scores_of(sp, chunks[1:])
    assert (got[0] + rest[0], rest[1]) == _scores_of(make(), chunks)  # trace: whole stream


@pytest.mark.parametrize(("option", "value"), [
    ("threshold", 1.5), ("threshold", -0.1), ("threshold", math.nan), ("threshold", "0.5"),
    ("threshold", {"yes": 2.0}), ("refractory_ms", -1), ("decision_delay_ms", math.inf),
    ("stride_hops", 0), ("stride_hops", 1.5), ("smoothing_windows", 0),
    ("sample_rate_hz", 0), ("sample_rate_hz", 22050.5), ("confirm_threshold", 1.01)])
def test_spotter_names_the_option_out_of_range(tiny_model, option, value):
    """A value that cannot mean anything is refused with the option's name, instead of
    being clamped or running a spotter that never (or always) fires."""
    extra = {"confirm": str(tiny_model)} if option == "confirm_threshold" else {}
    with pytest.raises(ConfigError, match="threshold" if option == "confirm_threshold"
                       else option):
        KeywordSpotter(tiny_model, policy="fp32", runtime="onnxruntime", **extra,
                       **{option: value})


def test_spotter_takes_whole_float_rates_and_numpy_numbers(tiny_model):
    sp = KeywordSpotter(tiny_model, policy="fp32", runtime="onnxruntime",
                        sample_rate_hz=44100.0, threshold=np.float32(0.5),
                        stride_hops=np.int64(2))
    assert (sp.sample_rate_hz, sp.stride_hops) == (44100, 2)
    assert "policy='fp32'" in repr(sp)


def test_spotter_rejects_bad_options(tiny_model):
    with pytest.raises(ConfigError, match="policy"):
        KeywordSpotter(tiny_model, policy="int4", runtime="onnxruntime")
    with pytest.raises(ConfigError, match="no 'int16'"):
        KeywordSpotter(tiny_model, policy="int16", runtime="onnxruntime")
    with pytest.raises(ConfigError, match="not found"):
        KeywordSpotter("no-such-model", runtime="onnxruntime")
    with pytest.raises(ConfigError, match="1-D"):
        KeywordSpotter(tiny_model, policy="fp32", runtime="onnxruntime").process(
            np.zeros((2, 2), np.float32))


def test_listen_over_an_async_iterator(tiny_model):
    audio = _speechy(3.0)
    sp = KeywordSpotter(tiny_model, policy="fp32", runtime="onnxruntime", threshold=0.0)

    async def chunks():
        for i in range(0, audio.size, 1600):
            yield audio[i : i + 1600]

    async def collect():
        return [d async for d in sp.listen(chunks())]

    dets = asyncio.run(collect())
    assert dets, "threshold 0 must fire at least once"
    assert all(d.keyword in ("yes", "no") for d in dets)
    assert all(0.0 <= d.start_s < d.end_s <= 3.0 for d in dets)
    gaps = np.diff([d.end_s for d in dets])
    assert np.all(gaps >= 1.0 - 1e-9)  # refractory period


@pytest.fixture(scope="module")
def causal_model(tmp_path_factory):
    """The tiny model made causal in time (stride 1, past padding only) and calibrated."""
    import onnx

    folder = tmp_path_factory.mktemp("causal")
    path = write_tiny_model(folder, LABELS)
    model = onnx.load(path)
    conv = model.graph.node[0]
    for attr in conv.attribute:
        if attr.name == "strides":
            attr.ints[:] = [1, 2]
        if attr.name == "pads":
            attr.ints[:] = [2, 1, 0, 1]  # top (past) 2, bottom (future) 0
    onnx.save(model, path)
    from voxquant.engine import load
    from voxquant.models.calibrate import calibration_path, model_sha256
    from voxquant.models.cards import resolve_model

    rng = np.random.default_rng(3)
    windows = [rng.standard_normal((49, 40)).astype(np.float32) * 3 - 6 for _ in range(20)]
    ranges = load(path).calibrate(windows, method="minmax")
    card = resolve_model(path)
    np.savez(calibration_path(card), ranges=ranges, model_sha256=model_sha256(card))
    return path


@pytest.mark.parametrize("policy", ["fp32", "int8-dynamic", "int16"])
def test_incremental_spotter_equals_window_spotter(causal_model, policy):
    audio = _speechy(5.0, seed=4)

    def run(incremental: bool):
        sp = KeywordSpotter(causal_model, policy=policy if incremental or policy == "fp32"
                            else "int8-static", incremental=incremental, trace=True, gate=True,
                            threshold=0.3)
        dets = sp.process(audio)
        return dets, [r.top_score for r in sp.trace], sp.stats

    if policy == "int16":  # window mode has no static int16 level; compare with itself chunked
        dets_a, scores_a, _ = run(True)
        sp = KeywordSpotter(causal_model, policy="int16", incremental=True, trace=True, gate=True,
                            threshold=0.3)
        for i in range(0, audio.size, 777):
            sp.process(audio[i : i + 777])
        assert [r.top_score for r in sp.trace] == scores_a
        return
    dets_w, scores_w, stats_w = run(False)
    dets_i, scores_i, stats_i = run(True)
    assert stats_w.windows_run == stats_i.windows_run > 0
    assert scores_i == scores_w  # bit for bit: fp32, and int8 with frozen scales
    assert dets_i == dets_w
