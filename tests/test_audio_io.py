"""Decoding, resampling and error handling of stream/audio_io.py, plus the shipped examples."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxquant.errors import AudioDecodeError, ConfigError
from voxquant.paths import EXAMPLES_DIR, PROJECT_ROOT
from voxquant.stream.audio_io import AudioInfo, audio_info, load_audio


def _tone(rate_hz: int, seconds: float, freq_hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate_hz * seconds))) / rate_hz
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1.0 / rate_hz)[np.argmax(spectrum)])


def _wav_bytes(x: np.ndarray, rate_hz: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate_hz, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("file_rate_hz", [8000, 44100, 22050])
def test_resamples_to_requested_rate(tmp_path: Path, file_rate_hz: int) -> None:
    path = tmp_path / f"tone_{file_rate_hz}.wav"
    sf.write(path, _tone(file_rate_hz, 1.0), file_rate_hz, subtype="PCM_16")
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert y.size == 16000
    assert _peak_hz(y, 16000) == pytest.approx(440.0, abs=2.0)
    # amplitude survives resampling (away from the edges)
    assert np.abs(y[2000:-2000]).max() == pytest.approx(0.5, abs=0.01)


def test_native_rate_is_exact(tmp_path: Path) -> None:
    x = np.array([0, 1, -1, 32767, -32768, 12345], dtype=np.int16)
    path = tmp_path / "exact.wav"
    sf.write(path, x, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(path, 16000), x.astype(np.float32) / 32768.0)


def test_stereo_is_mixed_down_by_mean(tmp_path: Path) -> None:
    left, right = _tone(16000, 0.5, 300.0, 0.4), _tone(16000, 0.5, 700.0, 0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-7)
    assert audio_info(path).channels == 2


def test_int16_and_float_files_agree(tmp_path: Path) -> None:
    x = _tone(16000, 0.25)
    x_int16 = np.round(x * 32767).astype(np.int16)
    sf.write(tmp_path / "i16.wav", x_int16, 16000, subtype="PCM_16")
    sf.write(tmp_path / "i16.flac", x_int16, 16000, subtype="PCM_16")
    sf.write(tmp_path / "f32.wav", x, 16000, subtype="FLOAT")
    a, b = load_audio(tmp_path / "i16.wav"), load_audio(tmp_path / "f32.wav")
    np.testing.assert_array_equal(a, x_int16 / np.float32(32768))
    np.testing.assert_array_equal(b, x)
    np.testing.assert_array_equal(load_audio(tmp_path / "i16.flac"), a)


def test_float_file_over_full_scale_is_clipped(tmp_path: Path) -> None:
    path = tmp_path / "loud.wav"
    sf.write(path, np.array([0.0, 2.0, -3.0, 0.5], np.float32), 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), [0.0, 1.0, -1.0, 0.5])


def test_offset_and_length_are_in_native_samples(tmp_path: Path) -> None:
    x = _tone(8000, 1.0)
    path = tmp_path / "tone8k.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    part = load_audio(path, 8000, offset_samples=2000, num_samples=4000)
    np.testing.assert_array_equal(part, x[2000:6000])
    assert load_audio(path, 16000, offset_samples=2000, num_samples=4000).size == 8000
    assert load_audio(path, 8000, offset_samples=7000).size == 1000


def test_bad_arguments_and_ranges(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, _tone(16000, 0.1), 16000)
    with pytest.raises(ConfigError):
        load_audio(path, offset_samples=-1)
    with pytest.raises(ConfigError):
        load_audio(path, num_samples=0)
    with pytest.raises(AudioDecodeError, match="beyond the end"):
        load_audio(path, offset_samples=1600)
    with pytest.raises(AudioDecodeError, match="only 1600"):
        load_audio(path, offset_samples=100, num_samples=1600)


def test_max_seconds_is_checked_from_header(tmp_path: Path) -> None:
    path = tmp_path / "two_seconds.wav"
    sf.write(path, _tone(16000, 2.0), 16000)
    with pytest.raises(AudioDecodeError, match="max_seconds"):
        load_audio(path, max_seconds=1.0)
    assert load_audio(path, num_samples=8000, max_seconds=1.0).size == 8000
    # many channels at a high rate: bounded by values, not only by seconds
    wide = tmp_path / "wide.wav"
    sf.write(wide, np.zeros((192000, 8), np.float32), 192000, subtype="PCM_16")
    with pytest.raises(AudioDecodeError, match="48 kHz stereo"):
        load_audio(wide, max_seconds=2.0)
    assert load_audio(wide, max_seconds=20.0).size == 16000


def test_audio_info(tmp_path: Path) -> None:
    path = tmp_path / "info.flac"
    sf.write(path, _tone(8000, 0.5), 8000)
    assert audio_info(path) == AudioInfo(8000, 1, 4000, 0.5)


def _write_bad(kind: str, path: Path) -> None:
    good = _wav_bytes(_tone(16000, 0.5))
    if kind == "truncated_wav":
        path.write_bytes(good[: len(good) // 2 + 1])
    elif kind == "zero_length":
        path.write_bytes(b"")
    elif kind == "garbage_header":
        path.write_bytes(b"NOTAWAVE" * 8 + good[64:])
    elif kind == "riff_without_data_chunk":
        path.write_bytes(good[:30])
    elif kind == "nan_samples":
        x = _tone(16000, 0.1)
        x[10] = np.nan
        sf.write(path, x, 16000, subtype="FLOAT")
    elif kind == "inf_samples":
        x = _tone(16000, 0.1)
        x[-1] = -np.inf
        sf.write(path, x, 16000, subtype="DOUBLE")
    elif kind == "empty_valid_header":
        sf.write(path, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    elif kind == "truncated_flac":
        buf = path.with_suffix(".tmp.flac")
        sf.write(buf, np.random.default_rng(0).uniform(-0.5, 0.5, 16000), 16000)
        data = buf.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text_file":
        path.write_text("hello, I am not audio\n" * 50)
    elif kind == "missing":
        pass
    elif kind == "directory":
        path.mkdir()
    else:  # pragma: no cover
        raise AssertionError(kind)


BAD_KINDS = [
    "truncated_wav",
    "zero_length",
    "garbage_header",
    "riff_without_data_chunk",
    "nan_samples",
    "inf_samples",
    "empty_valid_header",
    "truncated_flac",
    "text_file",
    "missing",
    "directory",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_files_raise_audio_decode_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"bad_{kind}.{'flac' if 'flac' in kind else 'wav'}"
    _write_bad(kind, path)
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    assert info.value.reason


def test_audio_info_names_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="nope.wav"):
        audio_info(tmp_path / "nope.wav")


def _check_outcome(path: Path) -> None:
    """Either valid audio comes back or AudioDecodeError naming the file: nothing else."""
    try:
        y = load_audio(path)
    except AudioDecodeError as exc:
        assert str(path) in str(exc)
        return
    assert y.dtype == np.float32 and y.ndim == 1 and y.size > 0
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=400))
def test_random_bytes_never_escape(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("random") / "random.wav"
    path.write_bytes(data)
    _check_outcome(path)


_GOOD = {
    "PCM_16": _wav_bytes(_tone(16000, 0.05), 16000, "PCM_16"),
    "FLOAT": _wav_bytes(_tone(8000, 0.05), 8000, "FLOAT"),
    "PCM_24": _wav_bytes(np.stack([_tone(44100, 0.02)] * 2, axis=1), 44100, "PCM_24"),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subtype=st.sampled_from(sorted(_GOOD)),
    edits=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 2000)),
)
def test_corrupted_headers_never_escape(
    tmp_path_factory: pytest.TempPathFactory,
    subtype: str,
    edits: list[tuple[int, int]],
    cut: int | None,
) -> None:
    data = bytearray(_GOOD[subtype])
    for pos, value in edits:
        data[pos] = value
    if cut is not None:
        data = data[:cut]
    path = tmp_path_factory.mktemp("corrupt") / "corrupt.wav"
    path.write_bytes(bytes(data))
    _check_outcome(path)


# --- the project's own example audio (voxquant/examples, made by scripts/make_examples.py)


def test_examples_decode_and_match_their_json() -> None:
    record = json.loads((EXAMPLES_DIR / "keywords.json").read_text())
    track = load_audio(EXAMPLES_DIR / "keywords.wav")
    assert record["sample_rate_hz"] == 16000
    assert track.size / 16000 == pytest.approx(record["duration_s"])
    words = record["words"]
    assert len(words) >= 6
    ends = [0.0] + [w["end_s"] for w in words]
    for previous_end, w in zip(ends, words):
        assert previous_end + 0.5 < w["start_s"] < w["end_s"] < record["duration_s"]
        a, b = int(w["start_s"] * 16000), int(w["end_s"] * 16000)
        gap = track[int(previous_end * 16000) + 800 : a - 800]
        # words are much louder than the noise between them
        assert np.sqrt(np.mean(track[a:b] ** 2)) > 4 * np.sqrt(np.mean(gap**2))

    clips = json.loads((EXAMPLES_DIR / "clips.json").read_text())["clips"]
    assert {"yes", "no", "stop", "go"} <= {c["word"] for c in clips}
    for clip in clips:
        path = EXAMPLES_DIR / clip["file"]
        assert audio_info(path) == AudioInfo(16000, 1, 16000, 1.0)
        assert sf.info(str(path)).subtype == "PCM_16"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_make_examples_is_deterministic(tmp_path: Path) -> None:
    record = json.loads((EXAMPLES_DIR / "keywords.json").read_text())
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    if record["synthesizer"].split()[-1] not in version:
        pytest.skip(f"examples were made with {record['synthesizer']}, this is {version.strip()}")
    script = PROJECT_ROOT / "scripts" / "make_examples.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True)
    made = sorted(p.name for p in tmp_path.iterdir())
    shipped = sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.suffix in (".wav", ".json"))
    assert made == shipped
    for name in made:
        digest = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert digest == hashlib.sha256((EXAMPLES_DIR / name).read_bytes()).hexdigest(), name
