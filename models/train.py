"""Train a streaming keyword model and write ``NAME.onnx`` + ``NAME.json`` (model card).

Usage::

    python -m voxquant.models.train --task kws12 --data ../shared/data --out models/shipped \\
        --epochs 40 --seed 0

Tasks
-----
``kws12``
    The 12 Speech Commands classes (MLPerf order) from ``speech_commands/``.
``digits``
    ``zero`` .. ``nine`` + ``_silence_`` + ``_unknown_`` from FSDD plus the Speech
    Commands digit words; other Speech Commands words are ``_unknown_``.
``folder``
    A user's own vocabulary: ``DATA/<label>/*.wav|flac``, one folder per keyword
    (speaker = file-name part before ``_nohash_``/first ``_``, else the file name);
    optional ``DATA/_unknown_/`` and ``DATA/_background_noise_/`` (noise recordings
    that make the ``_silence_`` class and the noise augmentation).

Features are made by the project's own front end
(``voxquant.stream.frontend.compute_features`` with the ``"kws"`` config), the
very function used at inference time, so training and inference see identical
features. Augmentation is done on the waveform (time shift, gain, shared noise
at random SNR, extra ``_unknown_`` speech) and on the features (SpecAugment).

The validation set is speaker-disjoint (``datasets.speaker_split``) and is
rebuilt deterministically by :func:`validation_set` without torch, so the model
card's accuracy can be re-checked with onnxruntime alone (see the tests).

torch is imported only inside the functions that train (the ``train`` extra).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from voxquant.errors import ConfigError, DataNotFoundError
from voxquant.models import datasets as ds
from voxquant.models.architectures import TCNConfig, count_macs_params
from voxquant.paths import shared_data_dir
from voxquant.stream.frontend import StreamingFrontEnd, compute_features, get_frontend_config

__all__ = [
    "TrainOptions",
    "TrainResult",
    "EvalItem",
    "validation_set",
    "clip_features",
    "mlperf_clip_features",
    "window_features",
    "evaluate_onnx",
    "train",
    "main",
]

SAMPLE_RATE_HZ = 16000
WINDOW_SAMPLES = 16000  # 1 s: 49 frames of the "kws" front end
FRONTEND_NAME = "kws"
#: Front ends a TC-DS model can be trained on (``TrainOptions.frontend``).
TRAIN_FRONTENDS = ("kws", "kws-pcen")
CACHE_DIR = Path("/tmp/voxquant_train_cache")

#: Validation for Speech Commands-based tasks: share of speakers held out.
VALIDATION_FRACTION = 0.15
SPLIT_SEED = 0
#: Noise recordings: the last quarter of each (in time) is test-only.
NOISE_TEST_FRACTION = 0.25
#: Validation ``_silence_``: 1 s windows of the noise test parts, every 2.5 s.
VALIDATION_SILENCE_HOP_S = 5.0


@dataclass(frozen=True)
class TrainOptions:
    """Everything that defines a training run (stored in the model card)."""

    task: str = "kws12"
    epochs: int = 40
    seed: int = 0
    qat: bool = False
    qat_epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    channels: int = 64
    kernel: int = 7
    n_blocks: int = 5
    first_kernel: int = 3
    dropout: float = 0.1
    shift_ms: float = 100.0
    unknown_shift_ms: float = -1.0  # _unknown_ items' time shift; < 0: shift_ms
    gain_db: float = 6.0
    noise_prob: float = 0.8
    snr_db_min: float = 0.0
    snr_db_max: float = 25.0
    specaugment: bool = True
    time_masks: int = 1
    time_mask_frames: int = 8
    freq_masks: int = 2
    freq_mask_bins: int = 6
    silence_share: float = 0.1
    extra_unknown: int = 600
    #: FSDD speakers whose digits serve as extra ``_unknown_`` windows (kws12), comma-separated;
    #: empty: all five. Holding some out keeps a false-alarm test on their digits honest.
    extra_digit_speakers: str = ""
    #: Share of the extra ``_unknown_`` windows cut like a stream window (see
    #: :func:`_sequence_windows`): parts of two neighbouring non-keyword items.
    sequence_unknown: float = 0.0
    unknown_share: float = 1.0
    distill: bool = False
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    synthetic_per_word: int = 0
    #: The feature front end (:data:`TRAIN_FRONTENDS`): ``"kws"`` (log-mel) or ``"kws-pcen"``
    #: (per-channel energy normalization; what it did for kws12: docs/training.md).
    frontend: str = FRONTEND_NAME
    threads: int = 2

    def __post_init__(self) -> None:
        if self.frontend not in TRAIN_FRONTENDS:
            raise ConfigError(f"frontend {self.frontend!r}: a TC-DS model trains on "
                              f"{', '.join(TRAIN_FRONTENDS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalItem:
    """One validation example: a clip and its class index."""

    clip: ds.Clip
    label: str

    def audio(self) -> np.ndarray:
        """The 1 s window the model sees (decoded, 16 kHz, zero-padded at the end)."""
        return ds.fix_length(self.clip.load(SAMPLE_RATE_HZ), WINDOW_SAMPLES)


@dataclass(frozen=True)
class TrainResult:
    """Paths written and the validation accuracy reached (onnxruntime, fp32)."""

    onnx_path: Path
    card_path: Path
    accuracy: float
    per_class: dict[str, float] = field(default_factory=dict)


# --- data -----------------------------------------------------------------------------------------


def task_labels(task: str, data_dir: Path | None = None) -> tuple[str, ...]:
    """Class labels of a task, in output order."""
    if task == "kws12":
        return ds.KWS12_LABELS
    if task == "digits":
        return ds.DIGIT_LABELS
    if task == "folder":
        if data_dir is None:
            raise ConfigError("task 'folder' needs --data DIR")
        words = sorted(
            p.name for p in Path(data_dir).iterdir()
            if p.is_dir() and not p.name.startswith("_") and _audio_in(p)
        )
        if not words:
            raise DataNotFoundError(f"{data_dir}: no keyword folders with audio found")
        return tuple(words) + (ds.SILENCE_LABEL, ds.UNKNOWN_LABEL)
    raise ConfigError(f"unknown task {task!r}; known: kws12, digits, folder")


def _audio_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac"))


def _folder_clips(data_dir: Path) -> list[ds.Clip]:
    clips = []
    for sub in sorted(p for p in Path(data_dir).iterdir() if p.is_dir()):
        if sub.name == "_background_noise_":
            continue
        for path in _audio_in(sub):
            stem = path.stem
            speaker = stem.split("_nohash_")[0] if "_nohash_" in stem else stem.split("_")[0]
            clips.append(ds.Clip(path=path, label=sub.name, speaker=speaker, word=sub.name))
    return clips


def _word_clips(task: str, data_dir: Path) -> list[ds.Clip]:
    """All labelled word clips of a task (before the split)."""
    if task == "kws12":
        return ds.speech_commands_clips(data_dir)
    if task == "digits":
        sc = [
            replace(c, label=c.word if c.word in ds.DIGIT_WORDS else ds.UNKNOWN_LABEL)
            for c in ds.speech_commands_clips(data_dir)
        ]
        return ds.fsdd_clips(data_dir) + sc
    return _folder_clips(data_dir)


def _noise_parts(task: str, data_dir: Path) -> tuple[list[ds.Clip], list[ds.Clip]]:
    """(train, test) segments of the noise recordings, split by time."""
    if task == "folder":
        paths = _audio_in(Path(data_dir) / "_background_noise_") if (
            Path(data_dir) / "_background_noise_").is_dir() else []
    else:
        paths = ds.noise_recordings(data_dir)
    if not paths:
        return [], []
    return ds.split_noise_by_time(paths, NOISE_TEST_FRACTION)


def split_word_clips(task: str, data_dir: Path) -> tuple[list[ds.Clip], list[ds.Clip]]:
    """Speaker-disjoint (train, validation) word clips of a task.

    For ``digits`` at least one FSDD speaker is always held out (FSDD has only 5).
    """
    clips = _word_clips(task, data_dir)
    train_clips, val = ds.speaker_split(clips, VALIDATION_FRACTION, SPLIT_SEED)
    if task == "digits":
        fsdd = {c.speaker for c in clips if c.path.parent.name == "fsdd"}
        if fsdd and not fsdd & {c.speaker for c in val}:
            held = min(fsdd, key=lambda s: ds.speaker_unit(s, SPLIT_SEED))
            val = val + [c for c in train_clips if c.speaker == held]
            train_clips = [c for c in train_clips if c.speaker != held]
    return train_clips, val


def validation_set(task: str, data_dir: Path | None = None) -> list[EvalItem]:
    """The deterministic validation set of a task (no torch needed).

    Word clips of the held-out speakers (``speaker_split``, fraction 0.15,
    seed 0) plus ``_silence_`` windows (1 s every 5 s, native level) from
    the test part (last 25 %) of every noise recording.
    """
    data_dir = Path(data_dir) if data_dir is not None else shared_data_dir(required=True)
    labels = task_labels(task, data_dir)
    _, val = split_word_clips(task, data_dir)
    items = [EvalItem(c, c.label) for c in val if c.label in labels]
    _, noise_test = _noise_parts(task, data_dir)
    if noise_test:
        windows = ds.silence_windows(
            window_s=1.0, hop_s=VALIDATION_SILENCE_HOP_S, sources=noise_test, block_s=1000.0
        )
        items += [EvalItem(w, ds.SILENCE_LABEL) for w in windows]
    return items


def clip_features(audios: np.ndarray, frontend: str = FRONTEND_NAME) -> np.ndarray:
    """Front-end features of a batch of 1 s windows, [N, 16000] -> [N, 49, 40], each
    window as :func:`~voxquant.stream.frontend.compute_features` gives it alone.

    A stateless (log-mel) front end gets the windows as ONE concatenated recording
    (one call, fast); because 16000 samples are exactly 50 hops, frames
    ``50 i .. 50 i + 48`` are exactly the 49 frames of window ``i`` alone (the
    front end is chunk-invariant bit for bit) and frame ``50 i + 49``, which
    straddles two windows, is dropped. PCEN carries state from frame to frame, so
    there every window restarts the front end.
    """
    cfg = get_frontend_config(frontend)
    audios = np.ascontiguousarray(audios, dtype=np.float32)
    n = audios.shape[0]
    hops = WINDOW_SAMPLES // cfg.hop_samples
    assert hops * cfg.hop_samples == WINDOW_SAMPLES
    frames_per_window = cfg.frames_for(WINDOW_SAMPLES)
    if cfg.compression != "log":
        front = StreamingFrontEnd(cfg)
        out = np.empty((n, frames_per_window, cfg.n_features), np.float32)
        for window, rows in zip(audios, out):
            front.reset()
            front.push_into(window, rows)
        return out
    return _windows_as_one_recording(audios, cfg)


def _windows_as_one_recording(audios: np.ndarray, cfg) -> np.ndarray:
    """Features of 1 s windows [N, 16000] of a stateless front end ``cfg``, computed in one
    call over their concatenation: window ``i``'s frames are ``50 i .. 50 i + 48`` (the
    frame straddling two windows is dropped)."""
    n = audios.shape[0]
    hops = WINDOW_SAMPLES // cfg.hop_samples
    feats = compute_features(audios.reshape(-1), cfg)
    full = np.zeros((n * hops, cfg.n_features), np.float32)
    full[: feats.shape[0]] = feats
    return full.reshape(n, hops, cfg.n_features)[:, : cfg.frames_for(WINDOW_SAMPLES)].copy()


def mlperf_clip_features(audios: np.ndarray) -> np.ndarray:
    """MLPerf Tiny front-end features of 1 s windows, [N, 16000] -> [N, 49, 10].

    Each window is peak-scaled on its own (as the MLPerf front end does per
    clip), then all go through ``compute_features`` as one recording, as in
    :func:`clip_features`.
    """
    from voxquant.stream.frontend import scale_clip

    cfg = get_frontend_config("mlperf")
    scaled = np.stack([scale_clip(w, cfg) for w in np.asarray(audios, np.float32)])
    return _windows_as_one_recording(scaled, replace(cfg, clip_peak_scaling=False))


def _cache_key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:16]


def _load_windows(clips: Sequence[ds.Clip], tag: str) -> np.ndarray:
    """Decode clips into [N, 16000] float32 (end-padded), cached under /tmp."""
    key = _cache_key(tag, [(str(c.path), c.offset_samples, c.num_samples) for c in clips])
    path = CACHE_DIR / f"{tag}-{key}.npy"
    if path.is_file():
        return np.load(path)
    out = np.zeros((len(clips), WINDOW_SAMPLES), np.float32)
    for i, clip in enumerate(clips):
        out[i] = ds.fix_length(clip.load(SAMPLE_RATE_HZ), WINDOW_SAMPLES)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def _load_long(clips: Sequence[ds.Clip], tag: str) -> list[np.ndarray]:
    """Decode long segments (noise, sentences), cached under /tmp."""
    key = _cache_key(tag, [(str(c.path), c.offset_samples, c.num_samples) for c in clips])
    path = CACHE_DIR / f"{tag}-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return [z[f"a{i}"] for i in range(len(clips))]
    arrays = [c.load(SAMPLE_RATE_HZ).astype(np.float32) for c in clips]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"a{i}": a for i, a in enumerate(arrays)})
    return arrays


def validation_features(
    items: Sequence[EvalItem], tag: str = "val", frontend: str = FRONTEND_NAME
) -> tuple[np.ndarray, list[str]]:
    """Features and labels of validation items (decoded audio cached).

    ``frontend`` is the model card's: ``"kws"`` or ``"kws-pcen"`` give [N, 49, 40]
    (:func:`clip_features`), ``"mlperf"`` [N, 49, 10] (:func:`mlperf_clip_features`).
    """
    audios = _load_windows([it.clip for it in items], tag)
    return window_features(audios, frontend), [it.label for it in items]


def window_features(audios: np.ndarray, frontend: str) -> np.ndarray:
    """Features of 1 s windows [N, 16000] through the front end a model was trained
    with (:func:`clip_features`, or :func:`mlperf_clip_features` for ``"mlperf"``)."""
    if frontend == "mlperf":
        return mlperf_clip_features(audios)
    if frontend not in TRAIN_FRONTENDS:
        raise ConfigError(f"no window features for front end {frontend!r}; "
                          f"known: {', '.join(TRAIN_FRONTENDS)}, mlperf")
    return clip_features(audios, frontend)


# --- evaluation with onnxruntime ------------------------------------------------------------------


def evaluate_onnx(
    onnx_path: str | Path, features: np.ndarray, labels: Sequence[str], classes: Sequence[str]
) -> tuple[float, dict[str, dict[str, float]], np.ndarray]:
    """Top-1 accuracy of an ONNX model (onnxruntime fp32, batch 1, one thread).

    Returns (overall accuracy, {class: {"accuracy", "n"}}, predicted indices).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    # one window [frames, features] in the model's input layout: NCHW [1, 1, T, F] for the
    # TC-DS models, NHWC [1, T, F, 1] for the MLPerf DS-CNN
    shape = [1] + [int(d) for d in sess.get_inputs()[0].shape[1:]]
    preds = np.empty(len(features), np.int64)
    for i, f in enumerate(features):
        probs = sess.run(None, {name: f.reshape(shape).astype(np.float32)})[0]
        preds[i] = int(np.argmax(probs))
    return _accuracy(preds, labels, classes) + (preds,)


def _accuracy(
    preds: np.ndarray, labels: Sequence[str], classes: Sequence[str]
) -> tuple[float, dict[str, dict[str, float]]]:
    index = {c: i for i, c in enumerate(classes)}
    target = np.array([index[lab] for lab in labels])
    per = {}
    for i, c in enumerate(classes):
        mask = target == i
        if mask.any():
            per[c] = {"accuracy": float(np.mean(preds[mask] == i)), "n": int(mask.sum())}
    return float(np.mean(preds == target)), per


# --- training -------------------------------------------------------------------------------------


class _Augmenter:
    """Waveform augmentation: time shift, gain, noise at random SNR (numpy RNG)."""

    def __init__(self, opts: TrainOptions, noises: list[np.ndarray], rng: np.random.Generator):
        self.opts = opts
        self.noises = [n for n in noises if n.size > WINDOW_SAMPLES and np.any(n)]
        self.rng = rng

    def noise_window(self) -> np.ndarray:
        noise = self.noises[int(self.rng.integers(len(self.noises)))]
        start = int(self.rng.integers(0, noise.size - WINDOW_SAMPLES))
        return noise[start : start + WINDOW_SAMPLES]

    def __call__(self, x: np.ndarray, unknown: bool = False) -> np.ndarray:
        o, rng = self.opts, self.rng
        shift_ms = o.shift_ms
        if unknown and o.unknown_shift_ms >= 0:
            shift_ms = o.unknown_shift_ms
        shift = int(rng.uniform(-1.0, 1.0) * min(shift_ms, 900.0) * SAMPLE_RATE_HZ / 1000.0)
        if shift > 0:
            x = np.concatenate([np.zeros(shift, np.float32), x[:-shift]])
        elif shift < 0:
            x = np.concatenate([x[-shift:], np.zeros(-shift, np.float32)])
        x = x * np.float32(10.0 ** (rng.uniform(-o.gain_db, o.gain_db) / 20.0))
        if self.noises and rng.random() < o.noise_prob and np.any(x):
            snr = rng.uniform(o.snr_db_min, o.snr_db_max)
            x = ds.mix_at_snr(x, self.noise_window(), snr, rng)
        return np.clip(x, -1.0, 1.0).astype(np.float32)

    def silence(self) -> np.ndarray:
        if not self.noises or self.rng.random() < 0.05:
            return np.zeros(WINDOW_SAMPLES, np.float32)
        gain = 10.0 ** (self.rng.uniform(-40.0, 0.0) / 20.0)
        return np.clip(self.noise_window() * np.float32(gain), -1.0, 1.0)


def _speech_pieces(speech: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random 1 s windows of continuous speech (for ``_unknown_``)."""
    out = np.zeros((n, WINDOW_SAMPLES), np.float32)
    long = [s for s in speech if s.size > WINDOW_SAMPLES]
    for i in range(n):
        s = long[int(rng.integers(len(long)))]
        start = int(rng.integers(0, s.size - WINDOW_SAMPLES))
        out[i] = s[start : start + WINDOW_SAMPLES]
    return out


def _sequence_windows(items: Sequence[np.ndarray], n: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` 1 s windows as a stream shows non-keyword speech to a sliding window.

    Training clips hold one whole word near the start of their window; in a stream
    the window slides over every position, so it also sees the end of one word,
    the start of the next, or a word cut in two. Each window here lays two random
    ``items`` (1 s windows) at random offsets in 2 s of silence, overlapping or
    not, and cuts 1 s at a random offset.
    """
    out = []
    span = 2 * WINDOW_SAMPLES
    for _ in range(n):
        buf = np.zeros(span + WINDOW_SAMPLES, np.float32)
        for _ in range(2):
            x = items[int(rng.integers(len(items)))]
            at = int(rng.integers(0, span - WINDOW_SAMPLES + 1))
            buf[at : at + x.size] += x
        start = int(rng.integers(0, span - WINDOW_SAMPLES + 1))
        out.append(buf[start : start + WINDOW_SAMPLES].copy())
    return out


#: espeak-ng voices and variants for synthetic keyword speakers (``synthetic_per_word``).
SYNTH_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
                "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
SYNTH_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")


def synthetic_keywords(
    words: Sequence[str], per_word: int, seed: int
) -> tuple[np.ndarray, list[str]]:
    """Keyword clips spoken by espeak-ng, [N, 16000] float32 and their labels.

    Why: the shared slice has few speakers per word and the bundled demo is
    espeak-ng speech; synthetic voices (random voice, variant, speed, pitch,
    level, onset; seeded) widen the training speakers. Training only: the
    validation set stays real held-out speakers. Cached under /tmp.
    """
    import shutil
    import subprocess
    import tempfile

    from scipy.signal import resample_poly

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataNotFoundError("synthetic_per_word needs the espeak-ng program")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    key = _cache_key("synth", list(words), per_word, seed, version)
    path = CACHE_DIR / f"synth-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["audio"], [str(w) for w in z["labels"]]
    import soundfile as sf

    rng = np.random.default_rng([seed, 7919])
    out = np.zeros((len(words) * per_word, WINDOW_SAMPLES), np.float32)
    labels: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "w.wav"
        for i, (word, _) in enumerate((w, k) for w in words for k in range(per_word)):
            voice = SYNTH_VOICES[int(rng.integers(len(SYNTH_VOICES)))]
            variant = SYNTH_VARIANTS[int(rng.integers(len(SYNTH_VARIANTS)))]
            speed, pitch = int(rng.integers(110, 221)), int(rng.integers(20, 81))
            subprocess.run([exe, "-v", f"{voice}+{variant}", "-s", str(speed), "-p", str(pitch),
                            "-w", str(wav), word], check=True, capture_output=True)
            x, sr = sf.read(wav, dtype="float32")
            x = resample_poly(x, SAMPLE_RATE_HZ // 50, sr // 50).astype(np.float32)
            nz = np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())
            x = x[nz[0] : nz[-1] + 1][:WINDOW_SAMPLES]
            start = int(rng.integers(0, WINDOW_SAMPLES - x.size + 1))
            peak = 10.0 ** (rng.uniform(-20.0, -3.0) / 20.0)
            out[i, start : start + x.size] = x * np.float32(peak / max(np.abs(x).max(), 1e-6))
            labels.append(word)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(path, audio=out, labels=np.array(labels))
    return out, labels


def _prepare(task: str, data_dir: Path, opts: TrainOptions, log,
             frontend: str = FRONTEND_NAME) -> dict[str, Any]:
    """Decode everything a run needs (cached) and build the validation features
    (of the model's ``frontend``, :func:`validation_features`)."""
    classes = task_labels(task, data_dir)
    train_clips, _ = split_word_clips(task, data_dir)
    train_clips = [c for c in train_clips if c.label in classes]
    t0 = time.time()
    audio = _load_windows(train_clips, f"{task}-train")
    log(f"train clips: {len(train_clips)} decoded in {time.time() - t0:.1f}s")
    noise_train, _ = _noise_parts(task, data_dir)
    noises = _load_long(noise_train, f"{task}-noise") if noise_train else []
    extra: list[np.ndarray] = []
    extra_windows = np.zeros((0, WINDOW_SAMPLES), np.float32)
    if task in ("kws12", "digits"):
        readers = [
            ds.Clip(p, ds.UNKNOWN_LABEL, p.parent.name) for p in ds.speech_other_files(data_dir)
        ]
        reader_train, _ = ds.speaker_split(readers, VALIDATION_FRACTION, SPLIT_SEED)
        extra = _load_long(reader_train, "speech-other")
        if task == "kws12":
            digits = ds.fsdd_clips(data_dir)
            if opts.extra_digit_speakers:
                keep = {s.strip() for s in opts.extra_digit_speakers.split(",") if s.strip()}
                unknown = keep - {c.speaker for c in digits}
                if unknown:
                    raise ConfigError(f"extra_digit_speakers: no FSDD speaker {sorted(unknown)}")
                digits = [c for c in digits if c.speaker in keep]
            extra_windows = _load_windows(digits, "fsdd")  # the key names the clips
    labels = np.array([classes.index(c.label) for c in train_clips])
    if opts.synthetic_per_word > 0:
        words = [c for c in classes if c not in (ds.SILENCE_LABEL, ds.UNKNOWN_LABEL)]
        synth, synth_labels = synthetic_keywords(words, opts.synthetic_per_word, opts.seed)
        audio = np.concatenate([audio, synth])
        labels = np.concatenate([labels, [classes.index(w) for w in synth_labels]])
        log(f"synthetic espeak-ng keyword clips: {len(synth)}")
    items = validation_set(task, data_dir)
    val_x, val_labels = validation_features(items, f"{task}-val", frontend)
    log(f"validation: {len(items)} windows; noise segments: {len(noises)}; "
        f"speech_other readers: {len(extra)}; extra digit windows: {len(extra_windows)}")
    return {
        "frontend": frontend,
        "classes": classes,
        "train_clips": train_clips,
        "audio": audio,
        "labels": labels,
        "noises": noises,
        "speech": extra,
        "extra_windows": extra_windows,
        "val_items": items,
        "val_x": val_x,
        "val_labels": val_labels,
    }


def _epoch_data(data: dict[str, Any], opts: TrainOptions, aug: _Augmenter,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch of augmented features (the run's front end, :func:`window_features`),
    targets and the augmented windows themselves."""
    classes = data["classes"]
    unk, sil = classes.index(ds.UNKNOWN_LABEL), classes.index(ds.SILENCE_LABEL)
    keep = np.arange(len(data["labels"]))
    if opts.unknown_share < 1.0:
        # at most unknown_share x (number of other clips) _unknown_ word clips per epoch
        is_unk = data["labels"] == unk
        n_keep = int(opts.unknown_share * np.count_nonzero(~is_unk))
        unk_idx = np.flatnonzero(is_unk)
        if n_keep < unk_idx.size:
            unk_idx = np.sort(rng.choice(unk_idx, n_keep, replace=False))
        keep = np.sort(np.concatenate([np.flatnonzero(~is_unk), unk_idx]))
    waves = [aug(data["audio"][i], data["labels"][i] == unk) for i in keep]
    targets = list(data["labels"][keep])
    n_extra = opts.extra_unknown if (data["speech"] or len(data["extra_windows"])) else 0
    if n_extra:
        n_digits = n_extra // 2 if len(data["extra_windows"]) else 0
        pick = rng.integers(0, max(len(data["extra_windows"]), 1), n_digits)
        pieces = [data["extra_windows"][i] for i in pick]
        if data["speech"]:
            pieces += list(_speech_pieces(data["speech"], n_extra - n_digits, rng))
        n_seq = int(round(opts.sequence_unknown * len(pieces)))
        if n_seq:
            pool = pieces + [data["audio"][i] for i in np.flatnonzero(data["labels"] == unk)]
            pieces[:n_seq] = _sequence_windows(pool, n_seq, rng)
        waves += [aug(x, True) for x in pieces]
        targets += [unk] * len(pieces)
    n_sil = int(round(opts.silence_share * len(waves)))
    waves += [aug.silence() for _ in range(n_sil)]
    targets += [sil] * n_sil
    waves_arr = np.stack(waves)
    return (window_features(waves_arr, data["frontend"]), np.array(targets, np.int64),
            waves_arr)


class _Teacher:
    """The MLPerf Tiny reference model (onnxruntime) with its own MFCC front end.

    Used for knowledge distillation on the 12 Speech Commands classes only: it
    sees the very same augmented waveform as the student, through the front
    end it was trained with (``"mlperf"``: per-clip peak scaling, 10 MFCC).
    """

    def __init__(self, threads: int) -> None:
        import onnxruntime as ort

        from voxquant.paths import shared_models_dir

        models = shared_models_dir(required=True)
        path = models / "mlperf_tiny_kws" / "kws_ref_model_float32.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # no spin-waiting between runs: the idle pool would steal torch's cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path

    def probs(self, waves: np.ndarray) -> np.ndarray:
        x = mlperf_clip_features(waves)[..., None]
        name = self.session.get_inputs()[0].name
        return np.concatenate(
            [self.session.run(None, {name: x[i : i + 512]})[0] for i in range(0, len(x), 512)]
        )


def _spec_augment(x, opts: TrainOptions, fill, gen):
    """Mask random time and frequency stripes (filled with the band means)."""
    import torch

    b, _, t, f = x.shape
    mask = torch.zeros(b, 1, t, f, dtype=torch.bool)
    for _ in range(opts.time_masks):
        width = torch.randint(0, opts.time_mask_frames + 1, (b,), generator=gen)
        start = (torch.rand(b, generator=gen) * (t - width)).long()
        idx = torch.arange(t)
        mask |= ((idx[None] >= start[:, None]) & (idx[None] < (start + width)[:, None]))[
            :, None, :, None]
    for _ in range(opts.freq_masks):
        width = torch.randint(0, opts.freq_mask_bins + 1, (b,), generator=gen)
        start = (torch.rand(b, generator=gen) * (f - width)).long()
        idx = torch.arange(f)
        mask |= ((idx[None] >= start[:, None]) & (idx[None] < (start + width)[:, None]))[
            :, None, None, :]
    return torch.where(mask, fill.view(1, 1, 1, f), x)


def _torch_accuracy(model, x: np.ndarray, labels: Sequence[str], classes) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x[:, None]))
    preds = logits.argmax(1).numpy()
    return _accuracy(preds, labels, classes)[0]


# --- quantization-aware fine-tuning ---------------------------------------------------------------


def _fake_quant_weight(w):
    """Per-output-channel symmetric int8, round half to even (the engine's rule), STE."""
    import torch

    amax = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
    scale = (amax / 127.0).view(-1, *([1] * (w.dim() - 1)))
    q = torch.clamp(torch.round(w / scale), -127, 127) * scale
    return w + (q - w).detach()


def _fake_quant_act(x):
    """Dynamic per-window int8 activations: affine over [min(0, lo), max(0, hi)] of each sample."""
    import torch

    flat = x.detach().flatten(1)
    lo = flat.amin(1).clamp(max=0.0)
    hi = flat.amax(1).clamp(min=0.0)
    scale = ((hi - lo) / 255.0).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    zero = torch.round(-128.0 - lo.view_as(scale) / scale)
    q = (torch.clamp(torch.round(x / scale) + zero, -128, 127) - zero) * scale
    return x + (q - x).detach()


def _folded_module(layers: list[dict[str, Any]]):
    """A torch module over folded layers; ``quantize=True`` simulates the int8 engine."""
    import torch
    from torch import nn

    class Folded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = nn.ParameterList(
                nn.Parameter(torch.tensor(layer["weight"], dtype=torch.float32))
                for layer in layers)
            self.biases = nn.ParameterList(
                nn.Parameter(torch.tensor(layer["bias"], dtype=torch.float32))
                for layer in layers)
            self.quantize = True

        def forward(self, x):
            fq_w = _fake_quant_weight if self.quantize else (lambda w: w)
            fq_a = _fake_quant_act if self.quantize else (lambda a: a)
            for layer, w, b in zip(layers, self.weights, self.biases):
                x = fq_a(x)
                if layer["op"] == "conv":
                    x = torch.nn.functional.conv2d(x, fq_w(w), b, groups=layer["group"])
                    if layer["relu"]:
                        x = torch.relu(x)
                else:
                    x = torch.nn.functional.linear(x.mean(dim=(2, 3)), fq_w(w), b)
            return x

        def to_layers(self) -> list[dict[str, Any]]:
            return [dict(layer, weight=w.detach().double().numpy(),
                         bias=b.detach().double().numpy())
                    for layer, w, b in zip(layers, self.weights, self.biases)]

    return Folded()


def _qat_finetune(layers, data, opts: TrainOptions, aug, rng, gen, log):
    """Fine-tune folded layers with fake quantization; return (layers, report)."""
    import torch

    classes = data["classes"]
    net = _folded_module(layers)
    before = _torch_accuracy(net, data["val_x"], data["val_labels"], classes)
    net.quantize = False
    fp32_before = _torch_accuracy(net, data["val_x"], data["val_labels"], classes)
    net.quantize = True
    log(f"QAT: before fine-tuning fp32 {100 * fp32_before:.2f}%, "
        f"simulated int8 (PTQ, dynamic per window) {100 * before:.2f}%")
    optim = torch.optim.Adam(net.parameters(), lr=opts.lr * 0.05)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=opts.label_smoothing)
    mean = torch.from_numpy(data["val_x"].mean(axis=(0, 1)))
    for epoch in range(opts.qat_epochs):
        x_np, y_np, _ = _epoch_data(data, opts, aug, rng)
        x, y = torch.from_numpy(x_np[:, None]), torch.from_numpy(y_np)
        order = torch.randperm(len(y), generator=gen)
        net.train()
        for b in range(0, len(y), opts.batch_size):
            idx = order[b : b + opts.batch_size]
            xb = _spec_augment(x[idx], opts, mean, gen) if opts.specaugment else x[idx]
            loss = loss_fn(net(xb), y[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
        acc = _torch_accuracy(net, data["val_x"], data["val_labels"], classes)
        log(f"QAT epoch {epoch + 1}/{opts.qat_epochs}: simulated int8 {100 * acc:.2f}%")
    after = _torch_accuracy(net, data["val_x"], data["val_labels"], classes)
    net.quantize = False
    fp32_after = _torch_accuracy(net, data["val_x"], data["val_labels"], classes)
    report = {
        "epochs": opts.qat_epochs,
        "weights": "int8 per output channel, symmetric (scale = max|w| / 127), "
                   "round half to even",
        "activations": "int8 affine per window (dynamic min/max incl. 0) at every layer input",
        "simulated_int8_accuracy_ptq": before,
        "simulated_int8_accuracy_qat": after,
        "fp32_accuracy_before_qat": fp32_before,
        "fp32_accuracy_after_qat": fp32_after,
        "note": "simulated in torch on the validation windows; the exported ONNX holds the "
                "fine-tuned float weights, which the engine quantizes",
    }
    return net.to_layers(), report


def train(
    task: str,
    data_dir: str | Path | None,
    out_dir: str | Path,
    epochs: int = 40,
    seed: int = 0,
    qat: bool = False,
    *,
    name: str | None = None,
    log=print,
    **overrides: Any,
) -> TrainResult:
    """Train a model and write ``<out_dir>/<name>.onnx`` and ``<name>.json``.

    Parameters
    ----------
    task : str
        ``"kws12"``, ``"digits"`` or ``"folder"`` (see the module docstring).
    data_dir : path, optional
        Shared audio folder (default: ``shared_data_dir()``), or the user's folder.
    out_dir : path
        Where the ONNX model and its card go.
    epochs, seed : int
        Training length and the seed of every random choice (reproducible).
    qat : bool
        Add quantization-aware fine-tuning (int8 per-channel symmetric weights).
    name : str, optional
        Model name (default: the task name).
    **overrides
        Any other :class:`TrainOptions` field.
    """
    import torch

    data_dir = Path(data_dir) if data_dir is not None else shared_data_dir(required=True)
    opts = TrainOptions(task=task, epochs=epochs, seed=seed, qat=qat, **overrides)
    name = name or task
    torch.set_num_threads(opts.threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    started = time.time()

    data = _prepare(task, data_dir, opts, log, opts.frontend)
    classes = data["classes"]
    cfg = TCNConfig(
        n_classes=len(classes), channels=opts.channels, first_kernel=opts.first_kernel,
        kernel=opts.kernel, n_blocks=opts.n_blocks, dropout=opts.dropout,
    )
    from voxquant.models.architectures import build_model

    model = build_model(cfg)
    base = clip_features(data["audio"][: min(2000, len(data["audio"]))], opts.frontend)
    model.feat_mean.copy_(torch.from_numpy(base.mean(axis=(0, 1))))
    model.feat_std.copy_(torch.from_numpy(base.std(axis=(0, 1)) + 1e-3))
    aug = _Augmenter(opts, data["noises"], rng)
    teacher = None
    if opts.distill:
        if task != "kws12":
            raise ConfigError("distillation needs the MLPerf teacher's classes: task kws12 only")
        teacher = _Teacher(opts.threads)

    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=opts.label_smoothing)
    steps_per_epoch = None
    sched = None
    for epoch in range(opts.epochs):
        t0 = time.time()
        x_np, y_np, waves = _epoch_data(data, opts, aug, rng)
        x, y = torch.from_numpy(x_np[:, None]), torch.from_numpy(y_np)
        soft = None
        if teacher is not None:
            p_t = torch.from_numpy(teacher.probs(waves)).clamp_min(1e-8)
            soft = torch.softmax(torch.log(p_t) / opts.distill_temperature, dim=1)
            use_kd = (y != classes.index(ds.SILENCE_LABEL)).float()
        del waves
        t_feat = time.time() - t0
        if sched is None:
            steps_per_epoch = (len(y) + opts.batch_size - 1) // opts.batch_size
            sched = torch.optim.lr_scheduler.OneCycleLR(
                optim, max_lr=opts.lr, epochs=opts.epochs, steps_per_epoch=steps_per_epoch,
                pct_start=0.15,
            )
        model.train()
        order = torch.randperm(len(y), generator=gen)
        total, n_steps = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * opts.batch_size : (b + 1) * opts.batch_size]
            if len(idx) == 0:
                continue
            xb = x[idx]
            if opts.specaugment:
                xb = _spec_augment(xb, opts, model.feat_mean, gen)
            logits = model(xb)
            loss = loss_fn(logits, y[idx])
            if soft is not None:
                temp = opts.distill_temperature
                log_p = torch.log_softmax(logits / temp, dim=1)
                kl = (soft[idx] * (torch.log(soft[idx]) - log_p)).sum(1)
                kd = (kl * use_kd[idx]).sum() / use_kd[idx].sum().clamp_min(1.0)
                loss = (1 - opts.distill_weight) * loss + opts.distill_weight * temp**2 * kd
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            total += float(loss.detach())
            n_steps += 1
        acc = _torch_accuracy(model, data["val_x"], data["val_labels"], classes)
        log(f"epoch {epoch + 1:3d}/{opts.epochs}  loss {total / max(n_steps, 1):.4f}  "
            f"val {100 * acc:.2f}%  ({len(y)} samples, features {t_feat:.1f}s, "
            f"total {time.time() - t0:.1f}s)")

    from voxquant.models.architectures import export_onnx, folded_layers

    layers = folded_layers(model)
    qat_info: dict[str, Any] | None = None
    if opts.qat:
        layers, qat_info = _qat_finetune(layers, data, opts, aug, rng, gen, log)

    out_dir = Path(out_dir)
    onnx_path = export_onnx(
        layers, cfg, out_dir / f"{name}.onnx",
        doc=f"voxquant {name}: TC-DS keyword model, classes {', '.join(classes)}",
    )
    acc, per_class, _ = evaluate_onnx(onnx_path, data["val_x"], data["val_labels"], classes)
    log(f"onnxruntime validation accuracy: {100 * acc:.2f}%")
    card = _model_card(name, task, data_dir, opts, cfg, classes, data, acc, per_class,
                       onnx_path, time.time() - started, qat_info)
    card_path = out_dir / f"{name}.json"
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    log(f"wrote {onnx_path} and {card_path}")
    return TrainResult(onnx_path, card_path, acc, {k: v["accuracy"] for k, v in per_class.items()})


def _model_card(name, task, data_dir, opts, cfg, classes, data, acc, per_class, onnx_path,
                seconds, qat_info) -> dict[str, Any]:
    macs, params = count_macs_params(cfg)
    return model_card(
        name, task, data_dir, opts, classes, data, acc, per_class, onnx_path, seconds,
        frontend=opts.frontend,
        input_spec={"name": "features", "shape": [1, 1, cfg.n_frames, cfg.n_features],
                    "layout": "NCHW, H = time frames (oldest first), W = feature bins"},
        output_name="probs",
        architecture={
            "family": "TC-DS (full-frequency conv, then depthwise-separable temporal convs)",
            **cfg.to_dict(),
            "receptive_field_frames": cfg.receptive_field_frames,
            "output_frames_pooled": cfg.output_frames,
            "causal": True,
            "lookahead_frames": 0,
            "time_padding": "none (valid convolutions; incremental mode equals window mode)",
        },
        macs=macs, params=params,
        command=f"python -m voxquant.models.train --task {task} --data DATA "
                f"--out OUT --epochs {opts.epochs} --seed {opts.seed}"
                + (" --qat" if opts.qat else "")
                + "".join(f" --set {k}={v}" for k, v in _overrides(opts).items()),
        qat=qat_info)


def model_card(name: str, task: str, data_dir: Path, opts: TrainOptions,
               classes: Sequence[str], data: dict[str, Any], acc: float, per_class: dict,
               onnx_path: Path, seconds: float, *, frontend: str, input_spec: dict,
               output_name: str, architecture: dict, macs: int, params: int, command: str,
               **training: Any) -> dict[str, Any]:
    """A model card (the JSON beside ``NAME.onnx``, :mod:`voxquant.models.cards`) of a
    trained or fine-tuned 1 s window model: what it is, the front end of its input, its
    validation accuracy and what it was measured on, and how it was made (``command``;
    ``training`` adds entries to that block)."""
    import torch

    fe = get_frontend_config(frontend)
    val_items: Sequence[EvalItem] = data["val_items"]
    speakers = sorted({it.clip.speaker for it in val_items if it.label != ds.SILENCE_LABEL})
    listing = "\n".join(
        f"{it.clip.path.relative_to(data_dir)}\t{it.clip.offset_samples}\t{it.clip.num_samples}"
        f"\t{it.label}" for it in val_items
    )
    return {
        "name": name,
        "task": task,
        "classes": list(classes),
        "frontend": fe.to_dict(),
        "sample_rate_hz": fe.sample_rate_hz,
        "window_frames": fe.frames_for(WINDOW_SAMPLES),
        "window_samples": WINDOW_SAMPLES,
        "input": input_spec,
        "output": {"name": output_name, "shape": [1, len(classes)],
                   "what": "softmax probabilities"},
        "architecture": architecture,
        "macs": macs,
        "params": params,
        "onnx_sha256": hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest(),
        "validation": {
            "accuracy": acc,
            "per_class": per_class,
            "n_windows": len(val_items),
            "evaluated_with": "onnxruntime fp32, batch 1, features of voxquant.stream.frontend "
                              f"(config {frontend!r}) on each 1 s window (fix_length: end-padded)",
            "split": {
                "function": "voxquant.models.train.validation_set",
                "words": f"datasets.speaker_split(validation_fraction={VALIDATION_FRACTION}, "
                         f"seed={SPLIT_SEED}): speaker-disjoint from training",
                "silence": f"1 s windows every {VALIDATION_SILENCE_HOP_S} s of the last "
                           f"{NOISE_TEST_FRACTION:.0%} of each noise recording "
                           "(datasets.split_noise_by_time), native level; training used only "
                           "the first part of each recording",
                "n_speakers": len(speakers),
                "speakers": speakers,
                "items_sha1": hashlib.sha1(listing.encode()).hexdigest(),
            },
        },
        "data": _data_description(task),
        "training": {
            **opts.to_dict(),
            "train_windows_per_epoch_base": len(data["train_clips"]),
            "seconds": round(seconds, 1),
            "torch": torch.__version__,
            **training,
            "command": command,
        },
    }


def _overrides(opts: TrainOptions) -> dict[str, Any]:
    """Options that differ from the defaults (for the reproducing command line)."""
    default = TrainOptions()
    skip = {"task", "epochs", "seed", "qat"}
    return {k: v for k, v in opts.to_dict().items()
            if k not in skip and v != getattr(default, k)}


def _data_description(task: str) -> dict[str, str]:
    if task == "kws12":
        return {
            "words": "shared/data/speech_commands (slice of Speech Commands v0.02 test + v0.01, "
                     "CC BY 4.0): 10 keywords + 25 other words as _unknown_",
            "extra_unknown": "FSDD digits (speakers: extra_digit_speakers in training, "
                             "empty = all) and 1 s pieces of speech_other "
                             "(LibriSpeech, training readers only)",
            "silence_and_noise": "speech_commands/_background_noise_ and noise/ "
                                 "(first 75 % of each recording)",
        }
    if task == "digits":
        return {
            "words": "shared/data/fsdd (CC BY-SA 4.0) + the digit words of speech_commands",
            "extra_unknown": "other speech_commands words and 1 s pieces of speech_other",
            "silence_and_noise": "speech_commands/_background_noise_ and noise/ "
                                 "(first 75 % of each recording)",
        }
    return {"words": "user folder: one sub-folder per keyword"}


# --- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m voxquant.models.train",
        description="Train a streaming keyword model; writes NAME.onnx and NAME.json.",
    )
    p.add_argument("--task", choices=("kws12", "digits", "folder"), required=True)
    p.add_argument("--data", type=Path, default=None, help="shared audio folder or your folder")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--name", default=None, help="model name (default: the task)")
    p.add_argument("--epochs", type=int, default=TrainOptions.epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--qat", action="store_true", help="quantization-aware fine-tuning")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a TrainOptions field, e.g. --set channels=48")
    return p


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    fields = TrainOptions.__dataclass_fields__
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields or key in ("task", "epochs", "seed", "qat"):
            raise ConfigError(f"unknown or reserved option {key!r}")
        kind = type(getattr(TrainOptions(), key))
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def run_command(run: Callable[[], Any]) -> int:
    """Exit status of a training command: 0, or 2 with the error on stderr when an option
    is wrong or the data is missing (``train`` and ``finetune`` modules' ``main``)."""
    try:
        run()
    except (ConfigError, DataNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: train(args.task, args.data, args.out, args.epochs, args.seed,
                                     args.qat, name=args.name, **_parse_overrides(args.set)))


if __name__ == "__main__":
    sys.exit(main())
