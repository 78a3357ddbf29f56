"""Static calibration of a model's activation ranges, with optional hard samples.

The static int8 baseline freezes every activation's range from a calibration
set of *training* speakers (never validation ones). ``hard_weight`` adds the
same clips mixed with the training part of the shared noises at low SNR,
repeated ``hard_weight`` times, so noisy windows weigh more in the observers
(the "calibrate with hard samples" idea). The ranges are saved as
``<model>.calibration.npz`` beside the model, with the model file's hash; the
engine runner finds them there and offers the ``int8-static`` level.

``python -m voxquant.models.calibrate kws12 --method percentile --hard-weight 2``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from voxquant.models.cards import ModelCard, resolve_model
from voxquant.stream.frontend import compute_features

__all__ = ["calibration_windows", "calibrate", "load_calibration", "METHODS"]

METHODS = ("minmax", "percentile", "entropy")


def calibration_windows(
    card: ModelCard,
    *,
    n_clips: int = 240,
    hard_weight: int = 0,
    hard_snr_db: tuple[float, float] = (-5.0, 5.0),
    data_dir: Path | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """Feature windows of training-speaker clips, plus weighted noisy hard samples."""
    from voxquant.models import datasets as ds

    rng = np.random.default_rng(seed)
    rate = card.frontend.sample_rate_hz
    digits = "zero" in card.labels
    clips = ds.fsdd_clips(data_dir) if digits else ds.speech_commands_clips(data_dir)
    train, _ = ds.speaker_split(clips)
    picked = [train[i] for i in rng.permutation(len(train))[:n_clips]]
    n_samples = card.frontend.samples_for(card.window_frames)
    audio = [ds.fix_length(c.load(rate), n_samples) for c in picked]
    windows = [compute_features(a, card.frontend) for a in audio]
    if hard_weight > 0:
        noise_train, _ = ds.split_noise_by_time(data_dir=data_dir)
        noises = [c.load(rate) for c in noise_train]
        for _ in range(hard_weight):
            for a in audio:
                snr = rng.uniform(*hard_snr_db)
                noisy = ds.mix_at_snr(a, noises[rng.integers(len(noises))], snr, rng)
                windows.append(compute_features(noisy.astype(np.float32), card.frontend))
    return windows


def calibrate(
    model: str | Path,
    method: str = "percentile",
    *,
    hard_weight: int = 0,
    n_clips: int = 240,
    data_dir: Path | None = None,
    save: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Compute (and by default save) static ranges [n_tensors, 2] for ``model``."""
    from voxquant.engine import load

    card = resolve_model(model)
    windows = calibration_windows(card, n_clips=n_clips, hard_weight=hard_weight,
                                  data_dir=data_dir, seed=seed)
    engine_model = load(card.model_path)
    ranges = engine_model.calibrate(windows, method=method)
    if save:
        np.savez(calibration_path(card), ranges=ranges.astype(np.float32),
                 model_sha256=model_sha256(card), method=method, hard_weight=hard_weight,
                 n_windows=len(windows))
    return ranges


def calibration_path(card: ModelCard) -> Path:
    return card.model_path.with_suffix(".calibration.npz")


def model_sha256(card: ModelCard) -> str:
    import hashlib

    return hashlib.sha256(card.model_path.read_bytes()).hexdigest()


def load_calibration(card: ModelCard) -> np.ndarray | None:
    """Saved static ranges of a model, or None; stale ones (another model file) are an error."""
    from voxquant.errors import ConfigError

    path = calibration_path(card)
    if not path.is_file():
        return None
    with np.load(path) as saved:
        if str(saved["model_sha256"]) != model_sha256(card):
            raise ConfigError(f"{path} was calibrated for another version of {card.name}: "
                              f"run python -m voxquant.models.calibrate {card.name}")
        return saved["ranges"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="shipped model name or .onnx path")
    p.add_argument("--method", choices=METHODS, default="percentile")
    p.add_argument("--hard-weight", type=int, default=0,
                   help="copies of the clips mixed with noise at low SNR (0: clean only)")
    p.add_argument("--clips", type=int, default=240, help="training clips used")
    args = p.parse_args(argv)
    ranges = calibrate(args.model, args.method, hard_weight=args.hard_weight,
                       n_clips=args.clips)
    print(f"saved {len(ranges)} ranges for {args.model} ({args.method}, hard x{args.hard_weight})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
