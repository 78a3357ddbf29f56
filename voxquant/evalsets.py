"""Evaluation material shared by reports and benchmarks.

With the shared audio: the validation speakers' clips of the model's task and
the *test* part of every noise recording (never the part models train on).
Without it: the project-made example clips and seeded synthetic pink noise,
and the result says so (``source == "bundled"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxquant.paths import EXAMPLES_DIR, shared_data_dir

# mean power every word of a long_stream is scaled to (so the segment's SNR holds per word)
WORD_LEVEL_DBFS = -26.0

__all__ = ["WORD_LEVEL_DBFS", "EvalSet", "load_eval_set", "mix", "long_stream", "pink_noise",
           "speech_span"]


@dataclass(frozen=True)
class EvalSet:
    """Labelled 16 kHz clips plus noise to mix them with."""

    source: str  # "shared" or "bundled"
    description: str
    audio: tuple[np.ndarray, ...]
    labels: tuple[str, ...]
    noises: tuple[np.ndarray, ...]


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink (1/f) noise, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _stratified(items: list, labels: list[str], max_items: int, rng) -> list[int]:
    """Indices of at most ``max_items`` items, classes as balanced as possible."""
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    per = max(1, max_items // max(1, len(by_label)))
    chosen = []
    for lab in sorted(by_label):
        idx = by_label[lab]
        chosen += list(rng.permutation(idx)[:per]) if len(idx) > per else idx
    return sorted(int(i) for i in chosen)


def load_eval_set(
    task_labels: tuple[str, ...],
    *,
    data_dir: Path | None = None,
    max_clips: int = 600,
    seed: int = 0,
    sample_rate_hz: int = 16000,
) -> EvalSet:
    """Clips for a model with ``task_labels`` (kws12- or digits-like), and noise."""
    from voxquant.models import datasets as ds

    rng = np.random.default_rng(seed)
    root = data_dir or shared_data_dir(required=False)
    if root is None or not Path(root).is_dir():
        return _bundled(task_labels, rng)
    is_digits = "zero" in task_labels
    clips = ds.fsdd_clips(root) if is_digits else ds.speech_commands_clips(root)
    _, val = ds.speaker_split(clips)
    val = [c for c in val if c.label in task_labels]
    keep = _stratified(val, [c.label for c in val], max_clips, rng)
    audio = [ds.fix_length(val[i].load(sample_rate_hz), sample_rate_hz) for i in keep]
    labels = [val[i].label for i in keep]
    noises = held_out_noises(root, sample_rate_hz)
    if "_silence_" in task_labels:  # 1 s of test noise at random gains
        for _ in range(max(1, len(audio) // 12)):
            n = noises[rng.integers(len(noises))]
            start = rng.integers(0, max(1, n.size - sample_rate_hz))
            gain = 10 ** rng.uniform(-2.0, 0.0)
            audio.append(ds.fix_length(n[start : start + sample_rate_hz] * gain, sample_rate_hz))
            labels.append("_silence_")
    what = "FSDD" if is_digits else "Speech Commands"
    return EvalSet(
        source="shared",
        description=f"{len(audio)} {what} clips of validation speakers (speaker-disjoint split, "
        f"seed 0) and the held-out test part of {len(noises)} noise recordings",
        audio=tuple(audio), labels=tuple(labels), noises=noises,
    )


def held_out_noises(root: Path, sample_rate_hz: int = 16000) -> tuple[np.ndarray, ...]:
    """The test part (last quarter in time) of every shared noise recording, decoded."""
    from voxquant.models import datasets as ds

    _, noise_test = ds.split_noise_by_time(data_dir=root)
    return tuple(c.load(sample_rate_hz) for c in noise_test)


def _bundled(task_labels: tuple[str, ...], rng) -> EvalSet:
    from voxquant.stream.audio_io import load_audio

    meta = json.loads((EXAMPLES_DIR / "clips.json").read_text())
    audio, labels = [], []
    for clip in meta["clips"]:
        word = clip["word"]
        label = word if word in task_labels else "_unknown_"
        if label in task_labels:
            audio.append(load_audio(EXAMPLES_DIR / clip["file"]))
            labels.append(label)
    noises = (pink_noise(16000 * 20, rng),)
    return EvalSet(
        source="bundled",
        description=f"shared audio not found: {len(audio)} project-made example clips "
        "(espeak-ng) and synthetic pink noise; figures are illustrations, not measurements "
        "on real speech",
        audio=tuple(audio), labels=tuple(labels), noises=noises,
    )


def speech_span(clip: np.ndarray, *, top_db: float = 30.0) -> tuple[int, int]:
    """First and one-past-last sample of the spoken part of a (clean) clip.

    Speech Commands clips are 1 s with the word anywhere inside, so a
    detection must be judged against the word, not the clip: frames within
    ``top_db`` of the clip's loudest frame (``librosa.effects.trim``).
    """
    import librosa

    if not np.any(clip):
        return 0, clip.size
    _, (first, last) = librosa.effects.trim(clip, top_db=top_db, frame_length=400,
                                            hop_length=160)
    return int(first), int(last)


def mix(speech: np.ndarray, evalset: EvalSet, snr_db: float | None, rng) -> np.ndarray:
    """``speech`` with a random noise of the set at ``snr_db`` (None: clean)."""
    if snr_db is None:
        return speech
    from voxquant.models.datasets import mix_at_snr

    noise = evalset.noises[rng.integers(len(evalset.noises))]
    return mix_at_snr(speech, noise, snr_db, rng).astype(np.float32)


def long_stream(
    evalset: EvalSet,
    keywords: tuple[str, ...],
    *,
    segment_snrs: tuple[float | None, ...] = (None, 20.0, 10.0, 5.0, 0.0, None),
    words_per_segment: int = 6,
    gap_s: float = 1.5,
    quiet_s: float = 4.0,
    room_tone_dbfs: float = -60.0,
    word_level_dbfs: float | None = WORD_LEVEL_DBFS,
    seed: int = 0,
    sample_rate_hz: int = 16000,
) -> tuple[np.ndarray, list[dict], list[tuple[float, float, float | None]]]:
    """A continuous recording with changing noise, quiet stretches and words.

    Each segment starts with ``quiet_s`` of room tone (quiet noise, not
    digital silence) then has words separated by ``gap_s``, with the
    segment's noise at ``segment_snr`` relative to each word's power.

    ``word_level_dbfs`` scales every word clip to that mean power (over the
    whole clip, as :func:`voxquant.models.datasets.mix_at_snr` measures it), so
    every word of a segment sits at the segment's SNR. Recorded levels of
    Speech Commands clips spread over 20 dB (about half the word clips of the
    validation speakers lie more than 6 dB below the set's mean power), so with
    ``None`` (keep recorded levels; the noise is set against the set's mean
    power) a "10 dB" segment holds words from about -6 to +14 dB (10th to 90th
    percentile of the keyword clips).

    Returns
    -------
    audio, events, segments
        events: ``{"word", "label", "start_s", "end_s", "speech_start_s",
        "speech_end_s", "snr_db", "is_keyword"}`` per word (``start_s``/``end_s``:
        the whole clip; ``speech_*``: the spoken part, see :func:`speech_span`);
        segments: ``(start_s, end_s, snr_db)``.
    """
    rng = np.random.default_rng(seed)
    rate = sample_rate_hz
    pieces, events, segments = [], [], []
    t = 0
    words = [i for i, lab in enumerate(evalset.labels) if lab != "_silence_"]
    if word_level_dbfs is None:
        word_rms = np.sqrt(np.mean([np.mean(evalset.audio[i] ** 2) for i in words]))
    else:
        word_rms = 10 ** (word_level_dbfs / 20)
    spans: dict[int, tuple[int, int]] = {}
    for snr in segment_snrs:
        seg_start = t
        parts = [np.zeros(int(quiet_s * rate), np.float32)]
        for _ in range(words_per_segment):
            i = words[rng.integers(len(words))]
            clip = evalset.audio[i]
            if word_level_dbfs is not None:
                power = float(np.mean(clip.astype(np.float64) ** 2))
                clip = (clip * (word_rms / np.sqrt(power) if power > 0 else 1.0)).astype(
                    np.float32)
            pos = t + sum(p.size for p in parts)
            if i not in spans:  # a clip can be drawn many times: trim it once
                spans[i] = speech_span(clip)
            first, last = spans[i]
            events.append({"word": evalset.labels[i], "label": evalset.labels[i],
                           "start_s": pos / rate, "end_s": (pos + clip.size) / rate,
                           "speech_start_s": (pos + first) / rate,
                           "speech_end_s": (pos + last) / rate,
                           "snr_db": snr, "is_keyword": evalset.labels[i] in keywords})
            parts += [clip, np.zeros(int(gap_s * rate), np.float32)]
        seg = np.concatenate(parts)
        noise = evalset.noises[rng.integers(len(evalset.noises))]
        reps = int(np.ceil(seg.size / noise.size)) + 1
        start = rng.integers(0, noise.size)
        bed = np.tile(noise, reps)[start : start + seg.size]
        bed = bed / (np.sqrt(np.mean(bed**2)) + 1e-12)
        tone = 10 ** (room_tone_dbfs / 20) * bed
        if snr is not None:
            tone = tone + bed * word_rms * 10 ** (-snr / 20)
        pieces.append((seg + tone).astype(np.float32))
        t += seg.size
        segments.append((seg_start / rate, t / rate, snr))
    audio = np.clip(np.concatenate(pieces), -1.0, 1.0)
    return audio, events, segments
