"""Training code: export parity, MAC counting, a tiny reproducible run (needs torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxquant.models.architectures import TCNConfig, count_macs_params
from voxquant.models.train import clip_features
from voxquant.stream.frontend import compute_features


@pytest.mark.parametrize("frontend", ["kws", "kws-pcen"])
def test_clip_features_equal_per_clip_front_end(frontend) -> None:
    rng = np.random.default_rng(0)
    audios = rng.normal(0, 0.1, (3, 16000)).astype(np.float32)
    audios[1] *= 30.0  # PCEN's smoother must not carry this window's level into the next
    batch = clip_features(audios, frontend)
    assert batch.shape == (3, 49, 40)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], compute_features(audios[i], frontend))


def test_mac_count_by_hand() -> None:
    cfg = TCNConfig(channels=8, kernel=3, n_blocks=2, first_kernel=3, n_classes=4)
    macs, params = count_macs_params(cfg)
    t0, t1, t2 = 47, 45, 43
    assert macs == t0 * 8 * 3 * 40 + t1 * 8 * 3 + t1 * 64 + t2 * 8 * 3 + t2 * 64 + 8 * 4
    assert params == 8 * 120 + 8 + 2 * (8 * 3 + 8 + 64 + 8) + 8 * 4 + 4


def test_folded_onnx_export_matches_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from voxquant.models.architectures import build_model, export_onnx, folded_layers

    torch.manual_seed(0)
    cfg = TCNConfig(channels=16, kernel=5, n_blocks=3, n_classes=5)
    model = build_model(cfg)
    model.feat_mean.uniform_(-12, -6)
    model.feat_std.uniform_(1, 3)
    bns = [model.bn0, *model.bn_dw, *model.bn_pw]
    for bn in bns:
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(4, 1, 49, 40) * 3 - 9
    ref = torch.softmax(model(x), 1).detach().numpy()
    path = export_onnx(folded_layers(model), cfg, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for i in range(4):
        got = sess.run(None, {"features": x[i : i + 1].numpy()})[0][0]
        np.testing.assert_allclose(got, ref[i], atol=1e-5)
    n_params = sum(p.numel() for n, p in model.named_parameters() if "bn" not in n)
    assert count_macs_params(cfg)[1] == n_params + 16 * (1 + 2 * 3)  # + folded biases


def _write_folder(root: Path) -> None:
    """Two 'keywords' (tones at different pitch) by 6 speakers, plus noise."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for word, hz in (("low", 300.0), ("high", 2500.0)):
        (root / word).mkdir(parents=True)
        for spk in range(6):
            for n in range(3):
                x = 0.3 * np.sin(2 * np.pi * hz * (1 + 0.02 * spk) * t) * (t < 0.6)
                x = x + rng.normal(0, 0.01, t.size)
                sf.write(root / word / f"s{spk}_nohash_{n}.wav", x.astype(np.float32), 16000)
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "hiss.wav",
             rng.normal(0, 0.05, 16000 * 8).astype(np.float32), 16000)


def test_tiny_folder_training_is_reproducible(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from voxquant.models.train import train

    data = tmp_path / "data"
    _write_folder(data)
    kwargs = dict(channels=8, kernel=3, n_blocks=2, batch_size=16, threads=1, log=lambda m: None)
    a = train("folder", data, tmp_path / "a", epochs=3, seed=3, qat=True, qat_epochs=1, **kwargs)
    b = train("folder", data, tmp_path / "b", epochs=3, seed=3, qat=True, qat_epochs=1, **kwargs)
    assert a.onnx_path.read_bytes() == b.onnx_path.read_bytes()
    card = json.loads(a.card_path.read_text())
    assert card["classes"] == ["high", "low", "_silence_", "_unknown_"]
    assert card["frontend"]["name"] == "kws" and card["window_frames"] == 49
    assert card["macs"] == count_macs_params(TCNConfig(
        channels=8, kernel=3, n_blocks=2, n_classes=4))[0]
    assert card["validation"]["n_windows"] > 0
    assert 0.0 <= card["validation"]["accuracy"] <= 1.0
    assert card["training"]["qat"]["epochs"] == 1


def _impulse_shifts(opts, unknown: bool, n: int = 200) -> np.ndarray:
    from voxquant.models.train import _Augmenter

    x = np.zeros(16000, np.float32)
    x[8000] = 0.5
    aug = _Augmenter(opts, [], np.random.default_rng(0))
    shifts = []
    for _ in range(n):
        y = aug(x, unknown)
        (where,) = np.flatnonzero(y)
        assert y[where] == np.float32(0.5)
        shifts.append(int(where) - 8000)
    return np.abs(np.array(shifts))


def test_unknown_items_shift_by_their_own_range() -> None:
    from voxquant.models.train import TrainOptions

    opts = TrainOptions(shift_ms=100.0, unknown_shift_ms=400.0, gain_db=0.0, noise_prob=0.0)
    keyword, unknown = _impulse_shifts(opts, False), _impulse_shifts(opts, True)
    assert keyword.max() <= 1600 and unknown.max() <= 6400
    assert unknown.max() > 1600  # negatives reach window positions keywords never take
    default = TrainOptions(shift_ms=100.0, gain_db=0.0, noise_prob=0.0)  # unknown_shift_ms < 0
    assert _impulse_shifts(default, True).max() <= 1600


def test_sequence_windows_show_items_at_stream_positions() -> None:
    from voxquant.models.train import _sequence_windows

    # items: 1 s windows with one "word" (a run of a distinct value) at their start,
    # as end-padded clips have
    items = []
    for k in range(1, 6):
        x = np.zeros(16000, np.float32)
        x[:4000] = k
        items.append(x)
    windows = _sequence_windows(items, 400, np.random.default_rng(0))
    assert len(windows) == 400 and all(w.shape == (16000,) and w.dtype == np.float32
                                       for w in windows)
    cut_at_start = cut_at_end = two_words = 0
    for w in windows:
        assert w.max() <= 10  # at most two items overlap
        voiced = np.flatnonzero(w)
        if voiced.size == 0:
            continue
        cut_at_start += voiced[0] == 0 and voiced.size < 4000
        cut_at_end += voiced[-1] == 15999
        runs = np.flatnonzero(np.diff((w != 0).astype(np.int8)) == 1).size + (w[0] != 0)
        two_words += runs >= 2
    # a training clip never shows a word cut by either edge or two words in one window
    assert cut_at_start > 10 and cut_at_end > 10 and two_words > 10
    again = _sequence_windows(items, 400, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(windows, again))


def test_train_refuses_a_front_end_it_cannot_train_on(tmp_path) -> None:
    from voxquant.errors import ConfigError
    from voxquant.models.train import train

    pytest.importorskip("torch")
    with pytest.raises(ConfigError, match="frontend 'mlperf'.*kws, kws-pcen"):
        train("kws12", tmp_path, tmp_path, epochs=1, frontend="mlperf")
    assert not list(tmp_path.iterdir())  # refused before anything was written
