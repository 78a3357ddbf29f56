"""models/datasets.py: labels, speaker-disjoint splits, noise windows and mixing.

The first part builds a tiny fake data folder in tmp_path, so parsing and
splitting are tested everywhere; the second part checks the real shared audio
(skipped when it is absent, via the ``shared_data`` fixture).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from voxquant.errors import ConfigError, DataNotFoundError
from voxquant.models.datasets import (
    DIGIT_LABELS,
    KWS12_LABELS,
    Clip,
    fix_length,
    fsdd_clips,
    mix_at_snr,
    noise_recordings,
    silence_windows,
    speaker_split,
    speaker_unit,
    speech_commands_clips,
    speech_other_files,
    split_noise_by_time,
)

# --- labels and a fake data folder


def test_label_tuples() -> None:
    assert KWS12_LABELS == (
        "down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes",
        "_silence_", "_unknown_",
    )  # fmt: skip
    assert DIGIT_LABELS[:10] == (
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    )  # fmt: skip
    assert DIGIT_LABELS[10:] == ("_silence_", "_unknown_")


def _wav(path: Path, seconds: float, rate_hz: int = 16000, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * rate_hz))
    sf.write(path, x, rate_hz, subtype="PCM_16")


@pytest.fixture()
def fake_data(tmp_path: Path) -> Path:
    sc = tmp_path / "speech_commands"
    _wav(sc / "yes" / "aaaa1111_nohash_0.flac", 1.0)
    _wav(sc / "yes" / "bbbb2222_nohash_1.flac", 0.8)
    _wav(sc / "stop" / "aaaa1111_nohash_0.flac", 1.0)
    _wav(sc / "marvin" / "cccc3333_nohash_0.flac", 1.0)
    _wav(sc / "_background_noise_" / "hum.flac", 25.0)
    (sc / "MANIFEST.tsv").write_text("path\n")
    fsdd = tmp_path / "fsdd"
    _wav(fsdd / "3_george_12.wav", 0.4, 8000)
    _wav(fsdd / "0_yweweler_0.wav", 0.5, 8000)
    (fsdd / "SOURCES.md").write_text("not audio\n")
    _wav(tmp_path / "noise" / "src" / "rain.flac", 4.0)
    _wav(tmp_path / "speech_other" / "libri" / "1" / "1-2-0000.flac", 2.0)
    return tmp_path


def test_speech_commands_parsing(fake_data: Path) -> None:
    clips = speech_commands_clips(fake_data)
    assert [(c.word, c.label, c.speaker) for c in clips] == [
        ("marvin", "_unknown_", "cccc3333"),
        ("stop", "stop", "aaaa1111"),
        ("yes", "yes", "aaaa1111"),
        ("yes", "yes", "bbbb2222"),
    ]
    assert clips[0].load().shape == (16000,)


def test_fsdd_parsing(fake_data: Path) -> None:
    clips = fsdd_clips(fake_data)
    assert [(c.label, c.word, c.speaker, c.path.name) for c in clips] == [
        ("zero", "zero", "yweweler", "0_yweweler_0.wav"),
        ("three", "three", "george", "3_george_12.wav"),
    ]
    assert clips[1].load(16000).size == 6400  # 0.4 s at 8 kHz, resampled


def test_file_lists(fake_data: Path) -> None:
    assert [p.name for p in noise_recordings(fake_data)] == ["hum.flac", "rain.flac"]
    assert [p.name for p in speech_other_files(fake_data)] == ["1-2-0000.flac"]


def test_missing_folder_is_data_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError):
        fsdd_clips(tmp_path)


def test_silence_windows_stay_inside_blocks(fake_data: Path) -> None:
    windows = silence_windows(fake_data, window_s=1.0, hop_s=0.5, block_s=10.0)
    assert {w.label for w in windows} == {"_silence_"}
    assert {w.num_samples for w in windows} == {16000}
    block = 160000
    for w in windows:
        assert w.offset_samples // block == (w.offset_samples + w.num_samples - 1) // block
        assert w.speaker.endswith(f"@{(w.offset_samples // block) * block}")
    # 25 s file: two full 10 s blocks (19 windows each) and a 5 s block (9 windows)
    assert len(windows) == 19 + 19 + 9
    assert windows[0].load().shape == (16000,)


def test_noise_split_is_disjoint_and_windows_follow_it(fake_data: Path) -> None:
    train, test = split_noise_by_time(test_fraction=0.25, data_dir=fake_data)
    assert len(train) == len(test) == 2
    for a, b in zip(train, test):
        assert a.path == b.path and a.offset_samples == 0
        assert a.num_samples == b.offset_samples  # test part starts where training ends
        assert b.offset_samples + b.num_samples == sf.info(str(b.path)).frames
        assert b.num_samples == pytest.approx(0.25 * sf.info(str(b.path)).frames, abs=1)
    windows = silence_windows(sources=train)
    limit = {c.path: c.num_samples for c in train}
    assert windows and all(w.offset_samples + w.num_samples <= limit[w.path] for w in windows)
    with pytest.raises(ConfigError):
        split_noise_by_time(test_fraction=1.0, data_dir=fake_data)


# --- speaker split


def _clips(speakers: list[str], per_speaker: int = 3) -> list[Clip]:
    return [Clip(Path(f"/x/{s}_{i}.wav"), "yes", s) for s in speakers for i in range(per_speaker)]


@settings(max_examples=50, deadline=None)
@given(
    speakers=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=40, unique=True),
    fraction=st.floats(0.0, 0.9),
    seed=st.integers(0, 5),
)
def test_speaker_split_is_disjoint_and_complete(
    speakers: list[str], fraction: float, seed: int
) -> None:
    clips = _clips(speakers)
    train, val = speaker_split(clips, fraction, seed)
    assert not {c.speaker for c in train} & {c.speaker for c in val}
    assert sorted(map(id, train + val)) == sorted(map(id, clips))
    assert speaker_split(clips, fraction, seed) == (train, val)
    if fraction > 0 and len(speakers) >= 2:
        assert val
    if fraction == 0:
        assert not val


def test_speaker_side_does_not_depend_on_the_other_clips() -> None:
    speakers = [f"{i:08x}" for i in range(200)]
    _, val_all = speaker_split(_clips(speakers), 0.15)
    held = {c.speaker for c in val_all}
    _, val_half = speaker_split(_clips(speakers[::2]), 0.15)
    assert {c.speaker for c in val_half} == held & set(speakers[::2])
    assert 10 <= len(held) <= 50  # about 15 % of 200
    _, val_other_seed = speaker_split(_clips(speakers), 0.15, seed=1)
    assert {c.speaker for c in val_other_seed} != held


def test_speaker_unit_is_stable_across_processes() -> None:
    code = "from voxquant.models.datasets import speaker_unit; print(speaker_unit('george', 3))"
    outs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        outs.add(out.stdout.strip())
    assert outs == {repr(speaker_unit("george", 3))}


def test_speaker_split_rejects_bad_fraction() -> None:
    with pytest.raises(ConfigError):
        speaker_split(_clips(["a", "b"]), 1.0)


# --- mixing


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 30.0])
def test_mix_at_snr_hits_the_requested_snr(snr_db: float) -> None:
    rng = np.random.default_rng(0)
    speech = rng.standard_normal(16000).astype(np.float32) * 0.1
    noise = rng.standard_normal(5000).astype(np.float32)  # shorter: must loop
    mixed = mix_at_snr(speech, noise, snr_db, np.random.default_rng(1))
    assert mixed.dtype == np.float32 and mixed.shape == speech.shape
    added = mixed - speech
    measured = 10 * np.log10(np.mean(speech**2) / np.mean(added**2))
    assert measured == pytest.approx(snr_db, abs=0.01)
    # deterministic for a given rng seed, different for another
    np.testing.assert_array_equal(
        mixed, mix_at_snr(speech, noise, snr_db, np.random.default_rng(1))
    )
    assert not np.array_equal(mixed, mix_at_snr(speech, noise, snr_db, np.random.default_rng(2)))


def test_mix_at_snr_takes_a_contiguous_noise_piece() -> None:
    noise = np.arange(1, 101, dtype=np.float32)
    added = mix_at_snr(np.ones(250, np.float32), noise, 0.0, np.random.default_rng(3))
    steps = np.diff(added)
    # consecutive noise samples (step +1 scaled), wrapping around every 100 samples
    assert np.sum(steps < 0) in (2, 3)
    assert np.allclose(steps[steps > 0], steps[steps > 0][0], rtol=1e-4)


def test_mix_at_snr_rejects_silence() -> None:
    with pytest.raises(ConfigError):
        mix_at_snr(
            np.zeros(100, np.float32), np.ones(100, np.float32), 10.0, np.random.default_rng()
        )


def test_fix_length() -> None:
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x, 7), [0, 1, 2, 3, 4, 0, 0])
    np.testing.assert_array_equal(fix_length(x, 3), [0, 1, 2])


# --- the real shared audio


def _manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_speech_commands_labels_match_manifest(shared_data: Path) -> None:
    clips = speech_commands_clips(shared_data)
    rows = [
        r
        for r in _manifest(shared_data / "speech_commands" / "MANIFEST.tsv")
        if r["subset"] != "_background_noise_"
    ]
    assert len(clips) == len(rows)
    by_path = {str(c.path.relative_to(shared_data / "speech_commands")): c for c in clips}
    for row in rows:
        clip = by_path[row["path"]]
        assert (clip.word, clip.speaker) == (row["word"], row["speaker"])
    counts = Counter(c.label for c in clips)
    assert set(counts) == set(KWS12_LABELS[:10]) | {"_unknown_"}
    assert all(counts[k] >= 300 for k in KWS12_LABELS[:10])
    assert counts["_unknown_"] >= 400
    assert len({c.speaker for c in clips}) >= 200
    sample = clips[:: max(1, len(clips) // 5)]
    assert all(0 < c.load().size <= 16000 for c in sample)


def test_twelve_labels_and_speaker_disjoint_split(shared_data: Path) -> None:
    clips = speech_commands_clips(shared_data) + silence_windows(shared_data)
    assert {c.label for c in clips} == set(KWS12_LABELS)
    train, val = speaker_split(clips, 0.15, seed=0)
    train_speakers, val_speakers = {c.speaker for c in train}, {c.speaker for c in val}
    assert not train_speakers & val_speakers
    assert {c.label for c in val} == set(KWS12_LABELS)  # every class is validated
    share = len(val_speakers) / (len(train_speakers) + len(val_speakers))
    assert 0.08 < share < 0.25
    again = speaker_split(speech_commands_clips(shared_data) + silence_windows(shared_data))
    assert again == (train, val)


def test_silence_windows_are_one_second(shared_data: Path) -> None:
    windows = silence_windows(shared_data)
    assert len(windows) > 500
    assert {w.num_samples for w in windows} == {16000}
    for w in windows[:: len(windows) // 4]:
        audio = w.load()
        assert audio.shape == (16000,) and np.abs(audio).max() > 0


def test_fsdd_digits_and_speakers(shared_data: Path) -> None:
    clips = fsdd_clips(shared_data)
    assert len(clips) == len(list((shared_data / "fsdd").glob("*.wav")))
    speakers = {c.speaker for c in clips}
    assert speakers == {"george", "jackson", "nicolas", "theo", "yweweler"}
    assert {c.label for c in clips} == set(DIGIT_LABELS[:10])
    for c in clips[::97]:
        digit, speaker, _ = c.path.stem.split("_")
        assert (c.label, c.speaker) == (DIGIT_LABELS[int(digit)], speaker)
    train, val = speaker_split(clips, 0.15, seed=0)
    held = {c.speaker for c in val}
    assert 1 <= len(held) < len(speakers)
    assert not held & {c.speaker for c in train}


def test_noise_and_other_speech_lists(shared_data: Path) -> None:
    noise = noise_recordings(shared_data)
    expected = 6 + len(_manifest(shared_data / "noise" / "MANIFEST.tsv"))
    assert len(noise) == expected
    other = speech_other_files(shared_data)
    assert len(other) == len(_manifest(shared_data / "speech_other" / "MANIFEST.tsv"))
    train, test = split_noise_by_time(noise)
    assert len(train) == len(test) == len(noise)
    assert all(a.offset_samples + a.num_samples == b.offset_samples for a, b in zip(train, test))
