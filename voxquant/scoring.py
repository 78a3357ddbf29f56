"""Offline scoring of audio files: one row per file, bad files recorded, never fatal.

Short files (at most ``clip_max_s``) are scored as one model window, the way
keyword clips are labelled; longer recordings are run through the streaming
:class:`~voxquant.spotter.KeywordSpotter` and reported as detections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxquant.errors import ConfigError, VoxquantError
from voxquant.models.cards import resolve_model
from voxquant.results import Detection
from voxquant.runners import make_runner
from voxquant.spotter import POLICIES, KeywordSpotter
from voxquant.stream.audio_io import load_audio
from voxquant.stream.controller import PrecisionController, controller_config
from voxquant.stream.frontend import StreamingFrontEnd
from voxquant.stream.noise import NoiseTracker, row_snr_db

__all__ = ["ScoreRow", "FailedFile", "FileScorer", "AUDIO_SUFFIXES", "summarize"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")


@dataclass(frozen=True)
class ScoreRow:
    """The result for one scored file (JSON field names are a public contract)."""

    path: str
    duration_s: float
    mode: str  # "clip" or "stream"
    pred: str
    score: float
    top3: tuple[tuple[str, float], ...]
    precision: str
    cpu_ms: float
    label: str | None = None
    detections: tuple[Detection, ...] = field(default_factory=tuple)
    precision_time: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {
            "path": self.path,
            "duration_s": round(self.duration_s, 4),
            "mode": self.mode,
            "pred": self.pred,
            "score": round(float(self.score), 4),
            "top3": [[lab, round(float(s), 4)] for lab, s in self.top3],
            "precision": self.precision,
            "cpu_ms": round(self.cpu_ms, 3),
        }
        if self.label is not None:
            out["label"] = self.label
        if self.mode == "stream":
            out["detections"] = [d.to_dict() for d in self.detections]
        return out


@dataclass(frozen=True)
class FailedFile:
    path: str
    error: str

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.error}


class FileScorer:
    """A warm model and front end that score files one after another.

    Parameters
    ----------
    model, policy, runtime, threshold
        As for :class:`~voxquant.spotter.KeywordSpotter`.
    clip_max_s : float
        Files up to this long are scored as a single window.
    """

    def __init__(
        self,
        model: str | Path = "kws12",
        *,
        policy: str = "adaptive",
        runtime: str = "voxquant",
        threshold: float | None = None,
        clip_max_s: float = 1.5,
    ):
        if policy not in POLICIES:
            raise ConfigError(f"unknown policy {policy!r}")
        self.card = resolve_model(model)
        self.policy = policy
        self.runtime = runtime
        self.threshold = threshold
        self.clip_max_s = clip_max_s
        self._runner = make_runner(self.card, runtime)
        fe = self.card.frontend
        self._frontend = StreamingFrontEnd(fe)
        max_frames = fe.frames_for(int(clip_max_s * fe.sample_rate_hz) + fe.window_samples) + 1
        self._features = np.zeros((max_frames, fe.n_features), np.float32)
        self._energy = np.zeros(max_frames, np.float64)
        self._window_samples = fe.samples_for(self.card.window_frames)
        self._controller = PrecisionController(
            controller_config(self.card).restricted_to(self._runner.levels),
            hop_s=fe.hop_samples / fe.sample_rate_hz)
        self._spotter: KeywordSpotter | None = None

    def score(self, path: str | Path, label: str | None = None) -> ScoreRow:
        """Score one file; raises :class:`VoxquantError` subclasses on bad input."""
        t0 = time.thread_time()
        rate = self.card.frontend.sample_rate_hz
        audio = load_audio(path, rate)
        duration_s = audio.shape[0] / rate
        if duration_s <= self.clip_max_s:
            row = self._score_clip(str(path), audio, duration_s, label)
        else:
            row = self._score_stream(str(path), audio, duration_s, label)
        cpu_ms = (time.thread_time() - t0) * 1000.0
        return ScoreRow(**{**row.__dict__, "cpu_ms": cpu_ms})

    def _clip_level(self, energies: np.ndarray) -> str:
        """Level for a clip: the streaming noise tracker run over its frames."""
        fixed = POLICIES[self.policy]
        if fixed is not None:
            return fixed
        snr_db = clip_snr_db(energies)
        return self._controller.levels[self._controller.target_level(snr_db)]

    def snr_db(self, audio: np.ndarray) -> float:
        """The noise tracker's SNR estimate for a clip (what ``adaptive`` decides on)."""
        self._frontend.reset()
        n = self._frontend.push_into(self._padded(audio), self._features, self._energy)
        return clip_snr_db(self._energy[:n])

    def _padded(self, audio: np.ndarray) -> np.ndarray:
        window = self._window_samples
        if audio.shape[0] < window:
            audio = np.concatenate([audio, np.zeros(window - audio.shape[0], np.float32)])
        return audio

    def classify(self, audio: np.ndarray) -> tuple[np.ndarray, str]:
        """Posteriors of one clip (the most energetic window) and the level used.

        Clips shorter than a window are zero-padded at the end, as in training.
        The returned array is the runner's buffer: copy it to keep it.
        """
        self._frontend.reset()
        n = self._frontend.push_into(self._padded(audio), self._features, self._energy)
        frames = self.card.window_frames
        energies = self._energy[:n]
        sums = np.convolve(energies, np.ones(frames), mode="valid")
        start = int(np.argmax(sums))
        level = self._clip_level(energies)
        return self._runner.run(self._features[start : start + frames], level), level

    def _score_clip(self, path, audio, duration_s, label) -> ScoreRow:
        probs, level = self.classify(audio)
        order = np.argsort(probs)[::-1][:3]
        labels = self.card.labels
        return ScoreRow(
            path=path, duration_s=duration_s, mode="clip", pred=labels[order[0]],
            score=float(probs[order[0]]), top3=tuple((labels[i], float(probs[i])) for i in order),
            precision=level, cpu_ms=0.0, label=label, precision_time={level: duration_s},
        )

    def _score_stream(self, path, audio, duration_s, label) -> ScoreRow:
        if self._spotter is None:
            self._spotter = KeywordSpotter(
                self.card.model_path, policy=self.policy, runtime=self.runtime,
                threshold=self.threshold,
            )
        spotter = self._spotter
        spotter.reset()
        detections = tuple(spotter.process(audio))
        stats = spotter.stats
        if detections:
            best = max(detections, key=lambda d: d.score)
            pred, score = best.keyword, best.score
        else:
            pred, score = "_none_", 0.0
        counts: dict[str, float] = {}
        for d in detections:
            counts[d.keyword] = max(counts.get(d.keyword, 0.0), d.score)
        top3 = tuple(sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        main_level = max(stats.precision_time, key=stats.precision_time.get, default="fp32")
        return ScoreRow(
            path=path, duration_s=duration_s, mode="stream", pred=pred, score=score, top3=top3,
            precision=main_level, cpu_ms=0.0, label=label, detections=detections,
            precision_time=dict(stats.precision_time),
        )


def clip_snr_db(mean_square_energies: np.ndarray) -> float:
    """SNR estimate of one clip, by the same tracker the streaming spotter uses."""
    n = len(mean_square_energies)
    if n == 0:
        return 0.0
    track = np.empty((n, 3))  # (energy, floor, speech level) per hop
    NoiseTracker().run_block(np.asarray(mean_square_energies, np.float64), n, track)
    return float(row_snr_db(track, n - 1))


def score_or_fail(scorer: FileScorer, path: str, label: str | None) -> ScoreRow | FailedFile:
    """Score a file, turning voxquant's own errors into a :class:`FailedFile` row."""
    try:
        return scorer.score(path, label)
    except VoxquantError as exc:
        return FailedFile(path=path, error=str(exc))


def summarize(
    rows: list[ScoreRow], failed: list[FailedFile], *, labels: tuple[str, ...],
    model: str, policy: str, wall_seconds: float, interrupted: bool = False,
) -> dict:
    """The summary object of ``voxquant score --json`` (field names are a contract)."""
    audio_s = float(sum(r.duration_s for r in rows))
    cpu_s = float(sum(r.cpu_ms for r in rows)) / 1000.0
    precision_time: dict[str, float] = {}
    for r in rows:
        for lv, sec in r.precision_time.items():
            precision_time[lv] = precision_time.get(lv, 0.0) + sec
    summary = {
        "model": model,
        "policy": policy,
        "files": len(rows) + len(failed),
        "scored": len(rows),
        "failed": [f.to_dict() for f in failed],
        "audio_seconds": round(audio_s, 3),
        "cpu_seconds": round(cpu_s, 4),
        "wall_seconds": round(wall_seconds, 3),
        "realtime_factor": round(audio_s / cpu_s, 1) if cpu_s > 0 else None,
        "realtime_factor_wall": round(audio_s / wall_seconds, 1) if wall_seconds > 0 else None,
        "precision_time": {k: round(v, 3) for k, v in precision_time.items()},
        "interrupted": interrupted,
        "accuracy": None,
        "per_class": {},
        "confusion": {},
    }
    labelled = [r for r in rows if r.label is not None and r.mode == "clip"]
    if labelled:
        names = list(labels)
        index = {name: i for i, name in enumerate(names)}
        confusion = np.zeros((len(names), len(names)), np.int64)
        for r in labelled:
            confusion[index[r.label], index[r.pred]] += 1
        correct = int(np.trace(confusion))
        summary["accuracy"] = round(correct / len(labelled), 4)
        summary["per_class"] = {
            name: {
                "n": int(confusion[i].sum()),
                "recall": round(float(confusion[i, i] / confusion[i].sum()), 4)
                if confusion[i].sum() else None,
            }
            for i, name in enumerate(names)
        }
        summary["confusion"] = {"labels": names, "matrix": confusion.tolist()}
    return summary
