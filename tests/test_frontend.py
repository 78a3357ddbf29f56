"""Front end: streaming invariance, MLPerf parity, buffers that never grow."""

from __future__ import annotations

import csv
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from voxquant.errors import AudioInputError, ConfigError
from voxquant.paths import shared_models_dir
from voxquant.stream.frontend import (
    StreamingFrontEnd,
    _librosa_mel,
    compute_features,
    get_frontend_config,
)
from voxquant.stream.ring import FrameRing

RNG = np.random.default_rng(1234)
# 3.7 s of noisy "speech-like" audio: tones, noise bursts, a DC offset, silence.
_t = np.arange(int(3.7 * 16000)) / 16000.0
AUDIO = (
    0.3 * np.sin(2 * np.pi * 440 * _t) * (np.sin(2 * np.pi * 1.5 * _t) > 0)
    + 0.05 * RNG.standard_normal(_t.size)
    - 0.1
).astype(np.float32)
AUDIO[20000:24000] = 0.0


def feed_in_chunks(config: str, audio: np.ndarray, sizes: list[int]) -> np.ndarray:
    frontend = StreamingFrontEnd(config)
    out, pos, i = [], 0, 0
    while pos < audio.size:
        size = sizes[i % len(sizes)]
        out.append(frontend.push(audio[pos : pos + size]))
        pos += size
        i += 1
    return np.concatenate(out)


@pytest.mark.parametrize("config", ["kws", "kws-pcen", "mlperf"])
@pytest.mark.parametrize("chunk", [1, 7, 160, 319, 320, 321, 480, 1000, 16000, 100000])
def test_chunked_features_equal_whole_recording_bit_for_bit(config, chunk):
    cfg = get_frontend_config(config)
    whole = StreamingFrontEnd(cfg).push(AUDIO)
    chunked = feed_in_chunks(config, AUDIO, [chunk])
    assert whole.shape == (cfg.frames_for(AUDIO.size), cfg.n_features)
    assert chunked.dtype == np.float32
    np.testing.assert_array_equal(chunked, whole)


def _mel_energies(audio: np.ndarray) -> np.ndarray:
    """Mel energies [40, frames] of the "kws" front end, computed plainly with numpy and
    librosa: 480-sample periodic-Hann frames every 320 samples, 512-point power spectrum,
    librosa's Slaney mel filters over 20-7600 Hz."""
    import librosa
    import scipy.signal

    n = (audio.size - 480) // 320 + 1
    frames = np.stack([audio[t * 320 : t * 320 + 480] for t in range(n)]).astype(np.float64)
    power = np.abs(np.fft.rfft(frames * scipy.signal.get_window("hann", 480), 512)) ** 2
    mel = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=20.0, fmax=7600.0)
    return (power @ mel.T.astype(np.float64)).T


def test_pcen_equals_librosa_pcen_started_at_the_first_frame():
    import librosa

    cfg = get_frontend_config("kws-pcen")
    energies = _mel_energies(AUDIO)
    np.testing.assert_allclose(compute_features(AUDIO, "kws"), np.log(energies.T + 1e-6),
                               atol=2e-5)  # the reference is the "kws" front end's
    b = cfg.pcen_smoothing
    expected = librosa.pcen(energies, sr=16000, hop_length=320, gain=0.98, bias=2.0,
                            power=0.5, time_constant=0.4, eps=cfg.pcen_eps,
                            zi=(1 - b) * energies[:, :1], axis=-1).T
    got = compute_features(AUDIO, cfg)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_pcen_takes_out_the_recording_level_and_stationary_noise():
    """What PCEN is for: the same sound 40 dB quieter gives nearly the same features
    (gain 0.98 leaves 2% of the level: E / M ** 0.98 scales by 1e-4 ** 0.02 = 0.83, while
    the log front end shifts every band by log(1e4) = 9.2), and after its time constant a
    stationary noise settles to the same small value in every band."""
    loud = compute_features(AUDIO, "kws-pcen")
    quiet = compute_features(AUDIO * np.float32(0.01), "kws-pcen")
    assert np.abs(loud - quiet).max() < 0.2 * np.abs(loud).max()
    assert np.abs(quiet).max() > 1.0  # not flattened to nothing
    import scipy.signal

    white = 0.02 * np.random.default_rng(5).standard_normal(3 * 16000)
    noise = scipy.signal.lfilter([1.0], [1.0, -0.95], white).astype(np.float32)  # low-pass
    settled = compute_features(noise, "kws-pcen")[100:]  # after 2 s, 5 time constants
    assert np.ptp(np.median(settled, axis=0)) < 0.15
    log_settled = compute_features(noise, "kws")[100:]
    assert np.ptp(np.median(log_settled, axis=0)) > 3.0  # the log keeps the noise's tilt


def test_pcen_smoother_restarts_on_reset():
    frontend = StreamingFrontEnd("kws-pcen")
    frontend.push(AUDIO[:16000] * np.float32(3.0))
    frontend.reset()
    np.testing.assert_array_equal(frontend.push(AUDIO), compute_features(AUDIO, "kws-pcen"))


def test_pcen_carries_the_background_before_a_sound_and_then_forgets_it():
    """In a stream the smoother holds the audio before a word: the same sound after a loud
    and after a quiet noise bed starts with different features, which agree again once
    the bed is several time constants (0.4 s) in the past."""
    bed = np.random.default_rng(3).standard_normal(32000).astype(np.float32)  # 100 hops
    after_loud = compute_features(np.concatenate([0.3 * bed, AUDIO]), "kws-pcen")[100:]
    after_quiet = compute_features(np.concatenate([0.003 * bed, AUDIO]), "kws-pcen")[100:]
    assert np.abs(after_loud[:5] - after_quiet[:5]).max() > 1.0
    np.testing.assert_allclose(after_loud[-20:], after_quiet[-20:], atol=0.02)  # 3 s later


@pytest.mark.parametrize("bad", [{"compression": "cube-root"},
                                 {"compression": "pcen", "n_mfcc": 10},
                                 {"compression": "pcen", "pcen_time_constant_s": 0.0}])
def test_unusable_compression_is_refused(bad):
    with pytest.raises(ConfigError, match="front end"):
        get_frontend_config({"name": "mine", **bad})
    with pytest.raises(ConfigError, match="front end"):
        StreamingFrontEnd(replace(get_frontend_config("kws"), **bad))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=12))
def test_any_chunking_gives_identical_features(sizes):
    whole = StreamingFrontEnd("kws").push(AUDIO)
    np.testing.assert_array_equal(feed_in_chunks("kws", AUDIO, sizes), whole)


def test_int16_chunks_equal_float_audio():
    pcm = (AUDIO * 20000).astype(np.int16)
    as_float = pcm.astype(np.float32) / 32768.0
    np.testing.assert_array_equal(
        feed_in_chunks("kws", pcm, [333]), StreamingFrontEnd("kws").push(as_float)
    )


def test_one_channel_blocks_are_mono():
    """(n, 1) blocks, as sounddevice's one-channel InputStream hands them over (also a
    column cut from a stereo block), give the features of the same 1-D samples."""
    expected = StreamingFrontEnd("kws").push(AUDIO)
    frontend = StreamingFrontEnd("kws")
    blocks = [AUDIO[i:i + 1600, None] for i in range(0, AUDIO.size, 1600)]
    np.testing.assert_array_equal(np.concatenate([frontend.push(b) for b in blocks]), expected)
    stereo = np.stack([AUDIO, -AUDIO], axis=1)
    np.testing.assert_array_equal(StreamingFrontEnd("kws").push(stereo[:, :1]), expected)


def test_frame_count_and_timing_follow_config():
    cfg = get_frontend_config("kws")
    assert cfg.hop_ms == 20.0 and cfg.window_ms == 30.0
    assert compute_features(np.zeros(16000, np.float32), cfg).shape == (49, 40)
    assert StreamingFrontEnd(cfg).push(np.zeros(479, np.float32)).shape == (0, 40)
    mfcc = compute_features(np.zeros(8000, np.float32) + 0.1, "mlperf")
    assert mfcc.shape == (49, 10)  # clip front end pads to 1 s


def test_reset_starts_a_new_recording():
    frontend = StreamingFrontEnd("kws")
    first = frontend.push(AUDIO[:8000])
    frontend.push(RNG.standard_normal(1234).astype(np.float32))
    frontend.reset()
    np.testing.assert_array_equal(frontend.push(AUDIO[:8000]), first)


def test_unknown_config_and_bad_chunks_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown front end"):
        get_frontend_config("nope")
    with pytest.raises(ConfigError, match="1-D"):
        StreamingFrontEnd("kws").push(np.zeros((10, 2), np.float32))
    with pytest.raises(AudioInputError, match="frombuffer"):  # PyAudio's read() gives bytes
        StreamingFrontEnd("kws").push((AUDIO[:1600] * 32767).astype(np.int16).tobytes())
    out, energy = np.zeros((10, 40), np.float32), np.zeros(10)
    for read_only in (out, energy):  # numba would refuse it with a TypingError, compiling
        read_only.setflags(write=False)
        with pytest.raises(ConfigError, match="writable"):
            StreamingFrontEnd("kws").push_into(np.zeros(1600, np.float32), out, energy)
        read_only.setflags(write=True)


@settings(max_examples=60, deadline=None)
@given(sr=st.sampled_from([8000, 16000, 22050, 44100]), n_fft=st.sampled_from([256, 512, 2048]),
       n_mels=st.integers(1, 128), fmin=st.floats(0, 2000), top=st.floats(0.3, 1.0),
       htk=st.booleans())
def test_mel_filters_equal_librosa_bit_for_bit(sr, n_fft, n_mels, fmin, top, htk):
    """The front end's own copy of ``librosa.filters.mel`` (so that a spotter's start does
    not import scipy.signal) gives the same float32 weights, bit for bit."""
    import warnings

    import librosa

    fmax = max(fmin + 1.0, top * sr / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty filters for some configurations
        expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                                       fmax=fmax, htk=htk)
        got = _librosa_mel(sr, n_fft, n_mels, fmin, fmax, htk)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_integer_pcm_is_read_at_its_full_scale():
    """int8, uint8 (8-bit WAV, offset 128), int32 (24-bit audio left-aligned) and
    big-endian int16 give the features of the same values as floats, bit for bit (all
    the scalings are exact)."""
    pcm16 = np.round(AUDIO * 32767).astype(np.int16)
    as_float = pcm16.astype(np.float32) / 32768
    np.testing.assert_array_equal(compute_features(pcm16.astype(np.int32) << 16),
                                  compute_features(as_float))
    pcm8 = (pcm16 >> 8).astype(np.int8)
    expected = compute_features(pcm8.astype(np.float32) / 128)
    np.testing.assert_array_equal(compute_features(pcm8), expected)
    np.testing.assert_array_equal(
        compute_features((pcm8.astype(np.int16) + 128).astype(np.uint8)), expected)
    np.testing.assert_array_equal(feed_in_chunks("kws", pcm8, [333]), expected)
    np.testing.assert_array_equal(feed_in_chunks("kws", pcm16.astype(">i2"), [333]),
                                  compute_features(as_float))


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.bool_, np.complex64, object])
def test_samples_without_a_full_scale_are_refused(dtype):
    with pytest.raises(AudioInputError, match="int16, float"):
        StreamingFrontEnd("kws").push(np.zeros(1600, dtype))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(("before", "length", "where"), [
    (0, 1, 0.0), (1000, 1600, 0.0), (1000, 1600, 1.0), (333, 40000, 0.5),
    (1000, 90000, 0.95), (0, 150000, 0.0), (1000, 150000, 1.0)])
def test_non_finite_chunk_is_refused_and_not_consumed(before, length, where, bad):
    """A chunk holding NaN or inf raises and leaves the stream as if it had never been
    pushed, whether the chunk fits the sample buffer (checked inside the compiled call)
    or overflows it (more than 256 frames' worth, 5.1 s: checked first)."""
    chunk = np.tile(AUDIO, 3)[:length]
    chunk[min(int(where * length), length - 1)] = bad
    frontend = StreamingFrontEnd("kws")
    got = [frontend.push(AUDIO[:before])]
    with pytest.raises(AudioInputError, match="NaN or inf"):
        frontend.push(chunk)
    got.append(frontend.push(AUDIO[before:]))
    np.testing.assert_array_equal(np.concatenate(got), StreamingFrontEnd("kws").push(AUDIO))


def test_push_into_allocates_nothing_in_steady_state():
    frontend = StreamingFrontEnd("kws")
    out = np.empty((64, 40), np.float32)
    chunk = AUDIO[:1600]
    for _ in range(20):  # warm up: compile and caches
        frontend.push_into(chunk, out)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(500):
        frontend.push_into(chunk, out)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < 4096, f"front end grew by {grown} bytes over 500 chunks"


def test_frame_ring_returns_newest_frames_contiguously():
    ring = FrameRing(4, 2)
    for i in range(6):
        ring.push(np.full((1, 2), i, np.float32))
    latest = ring.latest()
    assert latest.flags.c_contiguous
    np.testing.assert_array_equal(latest[:, 0], [2, 3, 4, 5])
    ring.push(np.arange(20, dtype=np.float32).reshape(10, 2))
    np.testing.assert_array_equal(ring.latest(2)[:, 0], [16, 18])


def test_frame_ring_batches_equal_one_frame_at_a_time():
    """Pushes of any size (wrapping the ring, longer than it) keep the newest frames; ``back``
    reads the window that ended that many frames earlier."""
    rng = np.random.default_rng(0)
    ring, seen = FrameRing(7, 3), []
    for size in [1, 3, 6, 7, 2, 9, 1, 5, 4, 0, 13]:
        frames = rng.standard_normal((size, 3)).astype(np.float32)
        ring.push(frames)
        seen.extend(frames)
        assert ring.count == len(seen)
        for back in range(min(7, len(seen))):
            for n in range(1, min(7 - back, len(seen) - back) + 1):
                want = np.array(seen[len(seen) - back - n: len(seen) - back])
                np.testing.assert_array_equal(ring.latest(n, back=back), want)
    with pytest.raises(ValueError):
        ring.latest(5, back=3)


# --- parity with the TensorFlow-computed MLPerf reference features -----------------------------


def _reference_dir():
    models = shared_models_dir(required=False)
    ref = models / "mlperf_tiny_kws" / "reference" if models else None
    if ref is None or not (ref / "features.npy").is_file():
        pytest.skip("MLPerf reference data not found (../shared/models/mlperf_tiny_kws/reference)")
    return ref


def _reference_clip(data_dir, row: dict) -> np.ndarray:
    path = data_dir / row["path"]
    offset = int(row["offset_samples"])
    pcm, _ = sf.read(path, dtype="int16", start=offset, frames=int(row["num_samples"]))
    return pcm


def test_mlperf_features_match_tensorflow_reference():
    ref = _reference_dir()
    data_dir = ref.parent.parent.parent / "data"
    expected = np.load(ref / "features.npy")[:, :, :, 0]
    with open(ref / "clips.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    worst = 0.0
    for row in rows:
        got = compute_features(_reference_clip(data_dir, row), "mlperf")
        worst = max(worst, float(np.abs(got - expected[int(row["row"])]).max()))
    assert worst < 1e-3, f"max abs difference {worst} vs TensorFlow features"


def test_mlperf_stages_match_tensorflow_constants():
    ref = _reference_dir()
    from voxquant.stream.frontend import _dct_matrix, _hann_periodic, _tf_mel_matrix

    stages = np.load(ref / "stages.npz")
    cfg = get_frontend_config("mlperf")
    np.testing.assert_allclose(_hann_periodic(480), stages["hann_window"], atol=1e-6)
    np.testing.assert_allclose(_tf_mel_matrix(cfg), stages["mel_weight_matrix"], atol=1e-5)
    np.testing.assert_allclose(
        _dct_matrix(40, 10), stages["mfcc_dct_matrix"][:, :10], atol=1e-6
    )
