"""Evaluation streams: every word sits at its segment's stated SNR."""

from __future__ import annotations

import dataclasses

import numpy as np

from voxquant.evalsets import WORD_LEVEL_DBFS, EvalSet, long_stream, pink_noise


def _uneven_set() -> EvalSet:
    """Tone-burst 'words' recorded 30 dB apart, as Speech Commands levels spread."""
    rng = np.random.default_rng(3)
    rate = 16000
    t = np.arange(rate // 2) / rate
    audio, labels = [], []
    for i in range(8):
        clip = np.zeros(rate, np.float32)
        burst = np.sin(2 * np.pi * (300 + 40 * i) * t) * np.hanning(t.size)
        clip[4000 : 4000 + t.size] = burst * (0.5 if i % 2 else 0.016)
        audio.append(clip)
        labels.append("yes" if i % 2 else "no")
    return EvalSet("bundled", "test", tuple(audio), tuple(labels),
                   (pink_noise(rate * 20, rng),))


def _word_snrs(evalset: EvalSet, **options) -> tuple[list[float], list[float], list[float]]:
    """Per word: its SNR in the stream, its nominal SNR and its mean power (dBFS)."""
    noisy, events, _ = long_stream(evalset, ("yes", "no"), **options)
    silent = dataclasses.replace(evalset, noises=tuple(np.zeros_like(n) for n in evalset.noises))
    clean, clean_events, _ = long_stream(silent, ("yes", "no"), **options)
    assert [e["start_s"] for e in events] == [e["start_s"] for e in clean_events]
    noise = noisy.astype(np.float64) - clean
    measured, nominal, level = [], [], []
    for e in events:
        a, b = round(e["start_s"] * 16000), round(e["end_s"] * 16000)
        p_word = np.mean(clean[a:b].astype(np.float64) ** 2)
        measured.append(10 * np.log10(p_word / np.mean(noise[a:b] ** 2)))
        nominal.append(e["snr_db"])
        level.append(10 * np.log10(p_word))
    return measured, nominal, level


def test_every_word_sits_at_its_segments_snr():
    measured, nominal, level = _word_snrs(_uneven_set(), segment_snrs=(10.0, 0.0),
                                          words_per_segment=6, room_tone_dbfs=-200.0)
    assert np.allclose(level, WORD_LEVEL_DBFS, atol=0.05)
    # the noise bed is normalized over its whole segment; a word's 1 s stretch of pink
    # noise is within a few dB of the segment's power
    assert np.max(np.abs(np.subtract(measured, nominal))) < 3.5


def test_recorded_levels_spread_the_snr_when_asked():
    measured, nominal, _ = _word_snrs(_uneven_set(), segment_snrs=(10.0,),
                                      words_per_segment=8, room_tone_dbfs=-200.0,
                                      word_level_dbfs=None)
    assert np.ptp(np.subtract(measured, nominal)) > 25.0  # the clips' own 30 dB
