"""The shared audio as labelled clips, speaker-disjoint splits and noise mixing.

Everything here only *lists* files (cheap, no decoding except noise headers);
audio is decoded on demand with :meth:`Clip.load`. Labels come from folder and
file names as described in ``shared/data/README.md``:

* Speech Commands: ``speech_commands/<word>/<speaker>_nohash_<n>.flac``; the 10
  keywords are their own class, every other word is ``_unknown_``.
* ``_silence_``: 1 s windows cut from ``speech_commands/_background_noise_/``.
* FSDD: ``fsdd/<digit>_<speaker>_<n>.wav`` (8 kHz; resampled on load).

Splits assign whole SPEAKERS by a stable hash (sha1 of seed and speaker id), so a
speaker lands on the same side whatever list of clips it is split with.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxquant.errors import ConfigError, DataNotFoundError
from voxquant.paths import shared_data_dir
from voxquant.stream.audio_io import audio_info, load_audio

SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
NOISE_LABEL = "_noise_"

#: The 12 classes in MLPerf Tiny output order.
KWS12_LABELS: tuple[str, ...] = (
    "down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes",
    SILENCE_LABEL, UNKNOWN_LABEL,
)  # fmt: skip
KWS_KEYWORDS: tuple[str, ...] = KWS12_LABELS[:10]

DIGIT_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)  # fmt: skip
DIGIT_LABELS: tuple[str, ...] = DIGIT_WORDS + (SILENCE_LABEL, UNKNOWN_LABEL)

_AUDIO_SUFFIXES = (".flac", ".wav")
_FSDD_NAME = re.compile(r"^(\d)_(.+)_(\d+)$")


@dataclass(frozen=True)
class Clip:
    """One labelled piece of audio: a whole file or a window of it.

    ``offset_samples`` and ``num_samples`` are in the file's native rate;
    ``word`` is the spoken word (for ``_unknown_`` clips, the word it stands for).
    """

    path: Path
    label: str
    speaker: str
    offset_samples: int = 0
    num_samples: int | None = None
    word: str = ""

    def load(self, sample_rate_hz: int = 16000) -> np.ndarray:
        """Decode this clip to float32 mono at ``sample_rate_hz`` (see ``load_audio``)."""
        return load_audio(
            self.path,
            sample_rate_hz,
            offset_samples=self.offset_samples,
            num_samples=self.num_samples,
        )


def _subdir(data_dir: Path | None, name: str) -> Path:
    root = Path(data_dir) if data_dir is not None else shared_data_dir(required=True)
    folder = root / name
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} not found (expected inside the shared audio folder)")
    return folder


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in _AUDIO_SUFFIXES)


def _source_name(path: Path) -> str:
    """Short stable name of a recording: ``<folder>/<file>``."""
    return f"{path.parent.name}/{path.name}"


def speech_commands_clips(data_dir: Path | None = None) -> list[Clip]:
    """All Speech Commands word clips, sorted by path.

    The 10 keywords are labelled by their word; every other word is labelled
    ``_unknown_`` with the word kept in ``Clip.word``. The speaker is the id
    before ``_nohash_`` (the whole file stem if a name lacks it).
    """
    root = _subdir(data_dir, "speech_commands")
    clips = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        word = word_dir.name
        if word.startswith("_"):
            continue
        label = word if word in KWS_KEYWORDS else UNKNOWN_LABEL
        for path in _audio_files(word_dir):
            speaker = path.stem.split("_nohash_")[0]
            clips.append(Clip(path=path, label=label, speaker=speaker, word=word))
    return clips


def fsdd_clips(data_dir: Path | None = None) -> list[Clip]:
    """All Free Spoken Digit Dataset clips (``<digit>_<speaker>_<n>.wav``), sorted by path.

    Label and word are the digit's English word (``"three"``); files whose name
    does not parse are skipped with a warning.
    """
    root = _subdir(data_dir, "fsdd")
    clips = []
    for path in _audio_files(root):
        match = _FSDD_NAME.match(path.stem)
        if match is None:
            warnings.warn(f"skipping FSDD file with unexpected name: {path}", stacklevel=2)
            continue
        digit_word = DIGIT_WORDS[int(match.group(1))]
        clips.append(Clip(path=path, label=digit_word, speaker=match.group(2), word=digit_word))
    return clips


def background_noise_files(data_dir: Path | None = None) -> list[Path]:
    """The Speech Commands ``_background_noise_`` recordings, sorted."""
    return _audio_files(_subdir(data_dir, "speech_commands") / "_background_noise_")


def noise_recordings(data_dir: Path | None = None) -> list[Path]:
    """Every noise recording: ``_background_noise_/`` then ``noise/``, each sorted."""
    return background_noise_files(data_dir) + _audio_files(_subdir(data_dir, "noise"))


def speech_other_files(data_dir: Path | None = None) -> list[Path]:
    """The continuous read-speech files of ``speech_other/`` (not keywords), sorted."""
    return _audio_files(_subdir(data_dir, "speech_other"))


def split_noise_by_time(
    paths: Sequence[Path] | None = None,
    test_fraction: float = 0.25,
    *,
    data_dir: Path | None = None,
) -> tuple[list[Clip], list[Clip]]:
    """Cut each noise recording into a training part and a later, disjoint test part.

    Parameters
    ----------
    paths : sequence of Path, optional
        Recordings to split; default :func:`noise_recordings`.
    test_fraction : float
        Share of each recording (its END) kept for testing, in (0, 1).

    Returns
    -------
    (train, test) : tuple of list of Clip
        One segment per recording on each side, label ``_noise_``, speaker
        ``noise:<folder>/<file>``, offsets in the file's native samples.
        Recordings too short to give both parts one sample are left out.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if paths is None:
        paths = noise_recordings(data_dir)
    train, test = [], []
    for path in paths:
        path = Path(path)
        frames = audio_info(path).frames
        cut = int(round(frames * (1.0 - test_fraction)))
        if cut <= 0 or cut >= frames:
            continue
        speaker = f"noise:{_source_name(path)}"
        train.append(Clip(path, NOISE_LABEL, speaker, 0, cut))
        test.append(Clip(path, NOISE_LABEL, speaker, cut, frames - cut))
    return train, test


def silence_windows(
    data_dir: Path | None = None,
    window_s: float = 1.0,
    hop_s: float = 0.5,
    *,
    sources: Sequence[Clip] | None = None,
    block_s: float = 10.0,
) -> list[Clip]:
    """Overlapping ``window_s`` windows of background noise, labelled ``_silence_``.

    Parameters
    ----------
    data_dir : Path, optional
        Shared audio folder (default: ``shared_data_dir()``).
    window_s, hop_s : float
        Window length and hop in seconds.
    sources : sequence of Clip, optional
        Segments to cut from, e.g. the training side of :func:`split_noise_by_time`
        so test noise stays unseen; default: the whole ``_background_noise_`` files.
    block_s : float
        Windows never cross a ``block_s`` boundary of the file, and the speaker id
        is ``noise:<folder>/<file>@<block start>``, so :func:`speaker_split` puts
        whole non-overlapping blocks on one side (no overlapping windows leak).
    """
    if window_s <= 0 or hop_s <= 0 or block_s < window_s:
        raise ConfigError(
            f"need window_s > 0, hop_s > 0, block_s >= window_s; got {window_s}, {hop_s}, {block_s}"
        )
    if sources is None:
        sources = [
            Clip(p, NOISE_LABEL, f"noise:{_source_name(p)}")
            for p in background_noise_files(data_dir)
        ]
    windows = []
    for source in sources:
        info = audio_info(source.path)
        rate = info.sample_rate_hz
        window, hop = int(round(window_s * rate)), int(round(hop_s * rate))
        block = int(round(block_s * rate))
        begin = source.offset_samples
        end = info.frames if source.num_samples is None else begin + source.num_samples
        end = min(end, info.frames)
        name = _source_name(source.path)
        block_start = (begin // block) * block
        while block_start < end:
            lo, hi = max(begin, block_start), min(end, block_start + block)
            for start in range(lo, hi - window + 1, hop):
                windows.append(
                    Clip(source.path, SILENCE_LABEL, f"noise:{name}@{block_start}", start, window)
                )
            block_start += block
    return windows


def speaker_unit(speaker: str, seed: int = 0) -> float:
    """Map a speaker id to a stable number in [0, 1) (sha1; independent of PYTHONHASHSEED)."""
    digest = hashlib.sha1(f"{seed}:{speaker}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def speaker_split(
    clips: Iterable[Clip], validation_fraction: float = 0.15, seed: int = 0
) -> tuple[list[Clip], list[Clip]]:
    """Split clips into (train, validation) with no speaker on both sides.

    A speaker goes to validation when ``speaker_unit(speaker, seed) <
    validation_fraction``, so its side does not depend on which other clips are
    in the list (split keyword, unknown and silence clips separately and they
    still agree). If that selects no speaker at all although there are two or
    more (small sets such as FSDD's 5 speakers), the speaker with the smallest
    hash is held out, so validation is never empty. Order is kept.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    clips = list(clips)
    speakers = sorted({c.speaker for c in clips})
    held = {s for s in speakers if speaker_unit(s, seed) < validation_fraction}
    if validation_fraction > 0 and not held and len(speakers) >= 2:
        held = {min(speakers, key=lambda s: speaker_unit(s, seed))}
    train = [c for c in clips if c.speaker not in held]
    validation = [c for c in clips if c.speaker in held]
    return train, validation


def fix_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Zero-pad at the end or trim to exactly ``num_samples`` (float32 copy)."""
    out = np.zeros(num_samples, dtype=np.float32)
    n = min(num_samples, audio.shape[0])
    out[:n] = audio[:n]
    return out


def mix_at_snr(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator
) -> np.ndarray:
    """Add noise to speech so that speech power / noise power is ``snr_db``.

    A ``len(speech)`` stretch of ``noise`` is taken from a random offset (drawn
    from ``rng``), wrapping around (looping) when the noise is shorter. Powers
    are mean squares over the whole clip, padding included, as in the Speech
    Commands recipe. The result is float32 and NOT clipped: clip before writing
    integer audio.

    Raises
    ------
    ConfigError
        If either signal is empty or has zero power (the SNR is then undefined).
    """
    speech = np.asarray(speech, dtype=np.float32)
    noise = np.asarray(noise, dtype=np.float32)
    if speech.ndim != 1 or noise.ndim != 1 or speech.size == 0 or noise.size == 0:
        raise ConfigError("mix_at_snr needs non-empty 1-D speech and noise")
    start = int(rng.integers(0, noise.size))
    piece = noise[(start + np.arange(speech.size)) % noise.size]
    speech_power = float(np.mean(speech.astype(np.float64) ** 2))
    noise_power = float(np.mean(piece.astype(np.float64) ** 2))
    if speech_power == 0.0 or noise_power == 0.0:
        raise ConfigError("mix_at_snr: speech or noise segment is all zeros; SNR undefined")
    gain = np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (speech + np.float32(gain) * piece).astype(np.float32)
