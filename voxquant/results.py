"""Result records: frozen dataclasses with ``to_dict()`` for JSON.

The JSON field names here are a public contract (the CLI's ``--json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["Detection", "SpotterStats"]


@dataclass(frozen=True)
class Detection:
    """One keyword detection in a stream.

    Attributes
    ----------
    keyword : str
        The detected class name.
    score : float
        The keyword's best smoothed posterior while it was a candidate (0..1).
    start_s, end_s : float
        Time span of the newest model window when the detection was decided,
        in seconds from the start of the stream (``end_s`` minus the word's end
        is the latency).
    precision : str
        Precision level in force when it fired (``"int8"``, ``"int16"``, ``"fp32"``).
    """

    keyword: str
    score: float
    start_s: float
    end_s: float
    precision: str

    def to_dict(self) -> dict:
        return {
            "keyword": self.keyword,
            "score": round(float(self.score), 4),
            "start_s": round(float(self.start_s), 3),
            "end_s": round(float(self.end_s), 3),
            "precision": self.precision,
        }

    def __str__(self) -> str:
        return (
            f"{self.end_s:8.2f} s  {self.keyword:<10} score {self.score:.2f}  "
            f"[{self.start_s:.2f}-{self.end_s:.2f} s, {self.precision}]"
        )


@dataclass(frozen=True)
class SpotterStats:
    """What a spotter did so far (a snapshot)."""

    audio_seconds: float
    cpu_seconds: float
    windows_run: int
    windows_gated: int
    precision_time: dict[str, float] = field(default_factory=dict)
    precision_windows: dict[str, int] = field(default_factory=dict)
    precision_cpu_seconds: dict[str, float] = field(default_factory=dict)
    precision_macs: dict[str, int] = field(default_factory=dict)
    overruns: int = 0
    precision_switches: int = 0
    confirmations_run: int = 0
    confirmations_rejected: int = 0
    confirm_cpu_seconds: float = 0.0

    @property
    def gated_fraction(self) -> float:
        total = self.windows_run + self.windows_gated
        return self.windows_gated / total if total else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["gated_fraction"] = round(self.gated_fraction, 4)
        out["audio_seconds"] = round(self.audio_seconds, 3)
        out["cpu_seconds"] = round(self.cpu_seconds, 4)
        out["precision_time"] = {k: round(v, 3) for k, v in self.precision_time.items()}
        return out
