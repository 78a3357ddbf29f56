"""The shipped keyword models: they load, run, classify the project's example
clips, and reproduce the validation accuracy written in their model cards.

No torch needed: onnxruntime (a core dependency) runs the ONNX files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from voxquant.models.datasets import DIGIT_LABELS, KWS12_LABELS
from voxquant.paths import EXAMPLES_DIR
from voxquant.stream.frontend import compute_features, get_frontend_config

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "shipped"
MODELS = {"kws12": KWS12_LABELS, "digits": DIGIT_LABELS, "kws12w": KWS12_LABELS}
#: kws12w is a confirming second stage (runs only when the first stage fires): it may be larger
MAX_PARAMS = {"kws12": 100_000, "digits": 100_000, "kws12w": 150_000}
ALLOWED_OPS = {"Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm", "Softmax"}


def _require(name: str) -> None:
    """Skip while a model has not been trained and committed yet."""
    if not (SHIPPED / f"{name}.onnx").is_file():
        pytest.skip(f"models/shipped/{name}.onnx not trained yet")


def _card(name: str) -> dict:
    _require(name)
    return json.loads((SHIPPED / f"{name}.json").read_text())


def _session(name: str):
    import onnxruntime as ort

    _require(name)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(SHIPPED / f"{name}.onnx"), opts,
                                providers=["CPUExecutionProvider"])


def _example_clips() -> list[tuple[Path, str]]:
    meta = EXAMPLES_DIR / "clips.json"
    if not meta.is_file():
        return []
    return [(EXAMPLES_DIR / c["file"], c["word"]) for c in json.loads(meta.read_text())["clips"]]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_card_describes_the_onnx_file(name: str) -> None:
    card = _card(name)
    model = onnx.load(str(SHIPPED / f"{name}.onnx"))
    onnx.checker.check_model(model)
    assert tuple(card["classes"]) == MODELS[name]
    assert model.opset_import[0].version == 13
    assert {n.op_type for n in model.graph.node} <= ALLOWED_OPS
    assert get_frontend_config(card["frontend"]) == get_frontend_config("kws")
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert shape == [1, 1, card["window_frames"], 40]
    out = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out == [1, len(card["classes"])]
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert n_params == card["params"]
    assert 10_000 <= card["params"] <= MAX_PARAMS[name]
    assert card["macs"] <= 5_000_000
    # causal, valid along time: no Conv pads anything (no look-ahead, no zero rows)
    for node in model.graph.node:
        if node.op_type == "Conv":
            pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [0] * 4)
            assert pads == [0, 0, 0, 0], node.name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_runs_and_outputs_probabilities(name: str) -> None:
    sess = _session(name)
    rng = np.random.default_rng(0)
    feats = compute_features(rng.normal(0, 0.05, 16000).astype(np.float32), "kws")
    assert feats.shape == (49, 40)
    probs = sess.run(None, {sess.get_inputs()[0].name: feats[None, None]})[0]
    assert probs.shape == (1, len(MODELS[name]))
    assert np.all(probs >= 0) and abs(float(probs.sum()) - 1.0) < 1e-4


def test_silence_is_silence() -> None:
    sess = _session("kws12")
    feats = compute_features(np.zeros(16000, np.float32), "kws")
    probs = sess.run(None, {sess.get_inputs()[0].name: feats[None, None]})[0][0]
    assert KWS12_LABELS[int(np.argmax(probs))] == "_silence_"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_classifies_example_clips(name: str) -> None:
    """The project-made espeak-ng clips (voxquant/examples) are classified right.

    A sanity check, not an accuracy figure: ``digits`` was trained with synthetic
    espeak-ng speakers (``synthetic_per_word`` in its card), so espeak voices are
    not new to it; its accuracy on real held-out speakers is in the card.
    """
    from voxquant.stream.audio_io import load_audio

    clips = _example_clips()
    if not clips:
        pytest.skip("voxquant/examples/clips.json not found")
    classes = MODELS[name]
    sess = _session(name)
    checked = 0
    for path, word in clips:
        audio = load_audio(path, 16000)
        feats = compute_features(audio[:16000], "kws")[:49]
        probs = sess.run(None, {sess.get_inputs()[0].name: feats[None, None]})[0][0]
        predicted = classes[int(np.argmax(probs))]
        expected = word if word in classes else "_unknown_"
        assert predicted == expected, f"{path.name}: {predicted} ({probs.max():.2f}) != {expected}"
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_engine_fp32_matches_onnxruntime(name: str) -> None:
    """``voxquant.load(name)`` runs the shipped model like onnxruntime (fp32)."""
    _require(name)
    try:
        from voxquant import load
    except (ImportError, AttributeError):
        pytest.skip("voxquant.load not available yet")
    model = load(name)
    sess = _session(name)
    rng = np.random.default_rng(1)
    for _ in range(3):
        feats = compute_features(rng.normal(0, 0.1, 16000).astype(np.float32), "kws")
        ref = sess.run(None, {sess.get_inputs()[0].name: feats[None, None]})[0][0]
        got = np.asarray(model(feats)).reshape(-1)
        np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(MODELS))
def test_validation_accuracy_reproduces_card(name: str, shared_data: Path) -> None:
    """Rebuild the card's speaker-disjoint validation set, rescore with onnxruntime."""
    from voxquant.models.train import evaluate_onnx, validation_features, validation_set

    card = _card(name)
    items = validation_set(card["task"], shared_data)
    listing = "\n".join(
        f"{it.clip.path.relative_to(shared_data)}\t{it.clip.offset_samples}\t"
        f"{it.clip.num_samples}\t{it.label}" for it in items
    )
    import hashlib

    split = card["validation"]["split"]
    assert hashlib.sha1(listing.encode()).hexdigest() == split["items_sha1"], (
        "validation set differs from the one in the model card (data or split changed)")
    feats, labels = validation_features(items, f"test-{name}-val")
    acc, per_class, _ = evaluate_onnx(SHIPPED / f"{name}.onnx", feats, labels, card["classes"])
    assert abs(100 * acc - 100 * card["validation"]["accuracy"]) <= 0.5
    for label, row in per_class.items():
        assert row["n"] == card["validation"]["per_class"][label]["n"]
