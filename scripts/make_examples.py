"""Make the project's own example audio in ``voxquant/examples/`` with espeak-ng.

The examples are synthetic (Debian's ``espeak-ng``), so they can ship with the
package and be used by tests, the README and demos without copying shared data:

* ``keywords.wav`` + ``keywords.json``: several 12-class keywords spoken by
  different voices, about 1 s of noise apart; the JSON gives each word's start
  and end in seconds, computed from how the segments are joined.
* ``clip_<word>.wav`` + ``clips.json``: exactly 1 s clips of single words.

All audio is 16 kHz mono int16 WAV with seeded pink noise at ``SNR_DB`` (speech
power measured over the spoken parts only). Deterministic: re-running with the
same espeak-ng version rewrites byte-identical files.

Usage: ``python scripts/make_examples.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from voxquant.models.datasets import fix_length
from voxquant.paths import EXAMPLES_DIR
from voxquant.stream.audio_io import load_audio

SAMPLE_RATE_HZ = 16000
SNR_DB = 20.0
SEED = 20240611
PEAK = 0.5  # speech peak after normalisation, full scale = 1
LEAD_S = 0.8  # noise before the first word
GAP_S = 1.0  # noise between words and after the last

# (word, espeak voice, speed in words per minute, pitch 0-99)
KEYWORD_TAKES = (
    ("yes", "en-us", 150, 50),
    ("no", "en-gb", 165, 40),
    ("up", "en-us+f3", 140, 60),
    ("down", "en-gb-scotland", 155, 45),
    ("left", "en-us+m3", 145, 35),
    ("right", "en-gb-x-rp", 160, 55),
    ("stop", "en-us+f2", 150, 65),
    ("go", "en-us", 135, 50),
)
CLIP_TAKES = (
    ("yes", "en-gb", 150, 50),
    ("no", "en-us+f3", 150, 60),
    ("stop", "en-us", 160, 45),
    ("go", "en-gb-scotland", 145, 50),
    ("three", "en-us+m3", 150, 40),
    ("seven", "en-gb-x-rp", 155, 55),
)


def espeak_version(espeak: str) -> str:
    """The ``espeak-ng --version`` line (recorded so changes can be explained)."""
    out = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split(":")[0].strip() + " " + out.stdout.split(":")[1].split()[0]


def synthesize(espeak: str, word: str, voice: str, speed_wpm: int, pitch: int) -> np.ndarray:
    """Speak one word with espeak-ng; trim silence; float32 at 16 kHz, peak ``PEAK``."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "word.wav"
        cmd = [espeak, "-w", str(wav), "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), word]
        subprocess.run(cmd, check=True, capture_output=True)
        audio = load_audio(wav, SAMPLE_RATE_HZ)
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    margin = int(0.01 * SAMPLE_RATE_HZ)
    audio = audio[max(loud[0] - margin, 0) : loud[-1] + margin + 1]
    return (audio * (PEAK / np.abs(audio).max())).astype(np.float32)


def pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum above 50 Hz (FFT-shaped white noise)."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs_hz = np.fft.rfftfreq(num_samples, 1.0 / SAMPLE_RATE_HZ)
    spectrum /= np.sqrt(np.maximum(freqs_hz, 50.0))
    noise = np.fft.irfft(spectrum, num_samples)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def add_noise(track: np.ndarray, speech_power: float, rng: np.random.Generator) -> np.ndarray:
    """Add pink noise at ``SNR_DB`` below ``speech_power`` (mean square of the words)."""
    noise_rms = np.sqrt(speech_power / 10.0 ** (SNR_DB / 10.0))
    return track + np.float32(noise_rms) * pink_noise(track.size, rng)


def write_wav(path: Path, audio: np.ndarray) -> None:
    """16-bit PCM WAV, clipped to full scale."""
    sf.write(str(path), np.clip(audio, -1.0, 1.0), SAMPLE_RATE_HZ, subtype="PCM_16")


def make_keywords(espeak: str, out_dir: Path, rng: np.random.Generator, meta: dict) -> None:
    """``keywords.wav``: the words of ``KEYWORD_TAKES`` separated by ``GAP_S`` of noise."""
    lead, gap = int(LEAD_S * SAMPLE_RATE_HZ), int(GAP_S * SAMPLE_RATE_HZ)
    pieces = [np.zeros(lead, np.float32)]
    cursor = lead
    words, energy, count = [], 0.0, 0
    for word, voice, speed, pitch in KEYWORD_TAKES:
        speech = synthesize(espeak, word, voice, speed, pitch)
        words.append(
            {
                "word": word,
                "start_s": round(cursor / SAMPLE_RATE_HZ, 4),
                "end_s": round((cursor + speech.size) / SAMPLE_RATE_HZ, 4),
                "voice": voice,
                "speed_wpm": speed,
                "pitch": pitch,
            }
        )
        energy += float(np.sum(speech.astype(np.float64) ** 2))
        count += speech.size
        pieces += [speech, np.zeros(gap, np.float32)]
        cursor += speech.size + gap
    track = add_noise(np.concatenate(pieces), energy / count, rng)
    write_wav(out_dir / "keywords.wav", track)
    record = dict(meta, file="keywords.wav", duration_s=track.size / SAMPLE_RATE_HZ, words=words)
    (out_dir / "keywords.json").write_text(json.dumps(record, indent=2) + "\n")


def make_clips(espeak: str, out_dir: Path, rng: np.random.Generator, meta: dict) -> None:
    """``clip_<word>.wav``: one word centred in exactly 1 s of noise."""
    clips = []
    for word, voice, speed, pitch in CLIP_TAKES:
        speech = synthesize(espeak, word, voice, speed, pitch)[:SAMPLE_RATE_HZ]
        start = (SAMPLE_RATE_HZ - speech.size) // 2
        track = fix_length(np.concatenate([np.zeros(start, np.float32), speech]), SAMPLE_RATE_HZ)
        power = float(np.mean(speech.astype(np.float64) ** 2))
        write_wav(out_dir / f"clip_{word}.wav", add_noise(track, power, rng))
        clips.append(
            {
                "file": f"clip_{word}.wav",
                "word": word,
                "start_s": round(start / SAMPLE_RATE_HZ, 4),
                "end_s": round((start + speech.size) / SAMPLE_RATE_HZ, 4),
                "voice": voice,
                "speed_wpm": speed,
                "pitch": pitch,
            }
        )
    (out_dir / "clips.json").write_text(json.dumps(dict(meta, clips=clips), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Write all example files into ``--out`` (default ``voxquant/examples``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR, help="output folder")
    args = parser.parse_args(argv)
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        print(
            "error: espeak-ng not found on PATH; install it (Debian: apt-get install espeak-ng)",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "generator": "scripts/make_examples.py",
        "synthesizer": espeak_version(espeak),
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "snr_db": SNR_DB,
        "noise": "seeded pink (1/f) noise; SNR vs mean power of the spoken parts",
        "seed": SEED,
    }
    rng = np.random.default_rng(SEED)
    make_keywords(espeak, args.out, rng, meta)
    make_clips(espeak, args.out, rng, meta)
    print(f"wrote examples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
