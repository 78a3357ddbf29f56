"""Decode audio files into float32 mono at the rate the front end wants.

One entry point, :func:`load_audio`, so that every caller (training, tests, the
CLI, the streaming file source) gets the same decoding, resampling and error
handling. Decoding is libsndfile (``soundfile``), resampling is ``soxr``.
Everything that goes wrong with a file is raised as
:class:`~voxquant.errors.AudioDecodeError` naming the file, so batch code can
catch it per file and go on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voxquant.errors import AudioDecodeError, ConfigError

#: Longest audio (in seconds, of the part asked for) that ``load_audio`` reads by default.
DEFAULT_MAX_SECONDS = 3600.0
#: Sample rates outside this range are treated as a corrupt header.
MIN_SAMPLE_RATE_HZ = 1_000
MAX_SAMPLE_RATE_HZ = 384_000
#: More channels than this is treated as a corrupt header.
MAX_CHANNELS = 64
# Memory bound: at most max_seconds of 48 kHz stereo worth of decoded values.
_VALUES_PER_SECOND = 48_000 * 2

# Errors soundfile/libsndfile raise on bad input (LibsndfileError is a RuntimeError).
_DECODE_ERRORS = (RuntimeError, ValueError, TypeError, OverflowError, EOFError, OSError)


# libsndfile's WAV/AIFF log says e.g. "data : 32000 (should be 15978)" when the
# data chunk is shorter than its header claims; it then quietly reads what is there.
_SHORT_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers leave these sizes in the header when the length is unknown.
_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says about it."""

    sample_rate_hz: int
    channels: int
    frames: int
    duration_s: float


def _truncation(extra_info: str) -> str | None:
    """Say why a file is truncated, from libsndfile's header log, else ``None``."""
    for match in _SHORT_CHUNK.finditer(extra_info):
        claimed, actual = int(match.group(1)), int(match.group(2))
        if claimed > actual and claimed not in _UNKNOWN_SIZES:
            return f"truncated: data chunk claims {claimed} bytes, file holds {actual}"
    return None


def _open(path: Path) -> sf.SoundFile:
    """Open a file for reading (one open per decode), with clear errors."""
    if not path.exists():
        raise AudioDecodeError(path, "file not found")
    if not path.is_file():
        raise AudioDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "file is empty (0 bytes)")
    try:
        return sf.SoundFile(str(path))
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(path, f"unreadable or unrecognised audio format ({exc})") from exc


def _header(path: Path, f: sf.SoundFile) -> tuple[AudioInfo, str]:
    rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise AudioDecodeError(path, f"implausible sample rate {rate} Hz in header")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioDecodeError(path, f"implausible channel count {channels} in header")
    if frames < 0:
        raise AudioDecodeError(path, f"negative frame count {frames} in header")
    return AudioInfo(rate, channels, frames, frames / rate), str(f.extra_info)


def audio_info(path: str | Path) -> AudioInfo:
    """Read a file's header: sample rate, channels, frames and duration.

    Raises
    ------
    AudioDecodeError
        If the file is missing, empty or not a recognised audio format.
    """
    path = Path(path)
    with _open(path) as f:
        return _header(path, f)[0]


def load_audio(
    path: str | Path,
    sample_rate_hz: int = 16000,
    *,
    offset_samples: int = 0,
    num_samples: int | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> np.ndarray:
    """Decode a file to float32 mono in [-1, 1] at ``sample_rate_hz``.

    Parameters
    ----------
    path : str or Path
        Any format libsndfile reads (WAV, FLAC, OGG, MP3, ...).
    sample_rate_hz : int
        Output rate; other rates are resampled with soxr (HQ).
    offset_samples, num_samples : int
        Part of the file to read, in the FILE's native sample rate (frames).
        ``num_samples=None`` reads to the end. Asking for more frames than the
        file holds is an error, so a segment always has the length asked for.
    max_seconds : float
        Refuse (from the header, before reading) a part longer than this, or
        holding more values than this many seconds of 48 kHz stereo, so a
        corrupt or hostile header cannot make us allocate gigabytes.

    Returns
    -------
    np.ndarray
        float32, 1-D, finite, in [-1, 1]. Channels are mixed down by their mean.

    Raises
    ------
    AudioDecodeError
        Missing, empty, truncated or unrecognised file; no samples; NaN or inf
        samples; implausible header values; a part longer than ``max_seconds``.
    ConfigError
        Invalid arguments (negative offset, non-positive rate or length).
    """
    path = Path(path)
    if sample_rate_hz <= 0:
        raise ConfigError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    if offset_samples < 0:
        raise ConfigError(f"offset_samples must be >= 0, got {offset_samples}")
    if num_samples is not None and num_samples <= 0:
        raise ConfigError(f"num_samples must be positive or None, got {num_samples}")

    with _open(path) as f:
        return _decode(path, f, sample_rate_hz, offset_samples, num_samples, max_seconds)


def _decode(path: Path, f: sf.SoundFile, sample_rate_hz: int, offset_samples: int,
            num_samples: int | None, max_seconds: float) -> np.ndarray:
    info, header_log = _header(path, f)
    truncated = _truncation(header_log)
    if truncated:
        raise AudioDecodeError(path, truncated)
    if info.frames == 0:
        raise AudioDecodeError(path, "no audio samples (header says 0 frames)")
    if offset_samples >= info.frames:
        raise AudioDecodeError(
            path, f"offset {offset_samples} is beyond the end of the file ({info.frames} frames)"
        )
    available = info.frames - offset_samples
    wanted = available if num_samples is None else num_samples
    if wanted > available:
        raise AudioDecodeError(
            path,
            f"asked for {wanted} frames at offset {offset_samples}, file has only {info.frames}",
        )
    if wanted / info.sample_rate_hz > max_seconds:
        raise AudioDecodeError(
            path,
            f"{wanted / info.sample_rate_hz:.0f} s of audio exceeds max_seconds={max_seconds:g}",
        )
    if wanted * info.channels > max_seconds * _VALUES_PER_SECOND:
        raise AudioDecodeError(
            path,
            f"{wanted} frames x {info.channels} channels at {info.sample_rate_hz} Hz is more "
            f"data than {max_seconds:g} s of 48 kHz stereo",
        )

    file_rate = info.sample_rate_hz
    try:
        if offset_samples:
            f.seek(offset_samples)
        data = f.read(frames=wanted, dtype="float32", always_2d=True)
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(path, f"decoding failed ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioDecodeError(path, "no audio samples could be decoded (truncated file?)")
    if data.shape[0] < wanted:
        raise AudioDecodeError(
            path, f"truncated: header promises {wanted} frames, decoded only {data.shape[0]}"
        )
    if not np.isfinite(data).all():
        raise AudioDecodeError(path, "non-finite samples (NaN or inf)")

    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if int(file_rate) != sample_rate_hz:
        mono = soxr.resample(mono, int(file_rate), sample_rate_hz, quality="HQ")
    # Float files may exceed full scale, and resampling overshoots a little near it.
    return np.ascontiguousarray(np.clip(mono, -1.0, 1.0), dtype=np.float32)
