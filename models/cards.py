"""Model cards: what a keyword model needs besides its weights.

A shipped or user model is ``NAME.onnx`` with ``NAME.json`` beside it. The card
gives the class labels (in output order), the front end that makes its input
features, and the window length in frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from voxquant.errors import ConfigError
from voxquant.stream.frontend import FrontEndConfig, get_frontend_config

__all__ = [
    "ModelCard",
    "SHIPPED_DIR",
    "resolve_model",
    "shipped_models",
    "streaming_settings",
    "update_streaming_settings",
]

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


@dataclass(frozen=True)
class ModelCard:
    """Labels, front end and window of a keyword model."""

    name: str
    model_path: Path
    labels: tuple[str, ...]
    frontend: FrontEndConfig
    window_frames: int
    raw: dict

    @property
    def window_s(self) -> float:
        return self.frontend.samples_for(self.window_frames) / self.frontend.sample_rate_hz


def shipped_models() -> list[str]:
    """Names of the models shipped inside the package."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.onnx"))


def resolve_model(name_or_path: str | Path) -> ModelCard:
    """Find a model by shipped name (``"kws12"``) or path, and read its card.

    Raises
    ------
    ConfigError
        When the model or its card cannot be found or read.
    """
    text = str(name_or_path)
    path = Path(text)
    if not path.suffix and (SHIPPED_DIR / f"{text}.onnx").is_file():
        path = SHIPPED_DIR / f"{text}.onnx"
    if not path.is_file():
        known = ", ".join(shipped_models()) or "none"
        raise ConfigError(f"model {text!r} not found (shipped models: {known})")
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise ConfigError(f"{path}: model card {card_path.name} not found beside it")
    try:
        raw = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{card_path}: unreadable model card: {exc}") from None
    labels = raw.get("classes") or raw.get("labels")
    if not labels:
        raise ConfigError(f"{card_path}: no 'classes' in model card")
    frontend = get_frontend_config(raw.get("frontend", "kws"))
    window = raw.get("window_frames") or raw.get("input_frames") or 49
    return ModelCard(
        name=raw.get("name", path.stem),
        model_path=path,
        labels=tuple(labels),
        frontend=frontend,
        window_frames=int(window),
        raw=raw,
    )


def streaming_settings(card: ModelCard) -> dict:
    """Measured streaming settings of a model (``<model>.streaming.json``), or ``{}``.

    Keys: ``"controller"`` (precision thresholds) and ``"thresholds"``
    (per-keyword detection thresholds), each written by a benchmark script.
    """
    path = card.model_path.with_suffix(".streaming.json")
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable streaming settings: {exc}") from None


def update_streaming_settings(card: ModelCard, key: str, value) -> Path:
    """Set one entry of ``<model>.streaming.json`` (keeping the others)."""
    path = card.model_path.with_suffix(".streaming.json")
    settings = streaming_settings(card)
    settings[key] = value
    path.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
    return path
