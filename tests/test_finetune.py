"""Fine-tuning the MLPerf Tiny DS-CNN: the torch copy is the ONNX graph, and the
written file is the reference graph carrying the new weights.

Needs torch (the ``train`` extra); the reference model tests skip when
``shared/models/mlperf_tiny_kws`` is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxquant.errors import ConfigError
from voxquant.models.cards import SHIPPED_DIR
from voxquant.paths import shared_models_dir

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from voxquant.models.finetune import REFERENCE, torch_module, write_onnx  # noqa: E402

MODELS = shared_models_dir(required=False)
needs_reference = pytest.mark.skipif(
    MODELS is None or not (MODELS / REFERENCE["file"]).is_file(),
    reason="shared/models/mlperf_tiny_kws not available")


def _ort_probs(path: Path, feats: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: feats[..., None]})[0]


def _torch_probs(module, feats: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return torch.softmax(module(torch.from_numpy(feats[:, None])), dim=1).numpy()


def _features(n: int, seed: int) -> np.ndarray:
    """MFCC-like inputs: the reference's features span about -250..+60."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, 20.0, (n, 49, 10)) + np.linspace(-60, 0, 10)).astype(np.float32)


@needs_reference
def test_torch_copy_equals_the_reference() -> None:
    path = MODELS / REFERENCE["file"]
    module = torch_module(onnx.load(str(path)))
    feats = _features(16, 0)
    np.testing.assert_allclose(_torch_probs(module, feats), _ort_probs(path, feats), atol=2e-5)


@needs_reference
def test_written_file_is_the_reference_graph_with_new_weights(tmp_path: Path) -> None:
    path = MODELS / REFERENCE["file"]
    template = onnx.load(str(path))
    module = torch_module(template)
    before = _torch_probs(module, _features(8, 1))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    out = write_onnx(template, module, tmp_path / "ft.onnx", doc="test")
    written = onnx.load(str(out))
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in template.graph.node]
    feats = _features(8, 1)
    got = _ort_probs(out, feats)
    np.testing.assert_allclose(got, _torch_probs(module, feats), atol=2e-5)
    assert np.abs(got - before).max() > 1e-3  # the new weights are in the file


def test_other_graphs_are_refused_naming_the_node() -> None:
    """kws12 (a TC-DS graph: GlobalAveragePool, Flatten, Gemm) is not a DS-CNN."""
    model = onnx.load(str(SHIPPED_DIR / "kws12.onnx"))
    with pytest.raises(ConfigError, match="is not part of the MLPerf DS-CNN"):
        torch_module(model)


@needs_reference
def test_a_finetuned_file_with_its_card_runs_like_a_keyword_model(tmp_path: Path) -> None:
    """A DS-CNN file with a card (the NHWC [1, 49, 10, 1] input) runs through the onnxruntime
    baseline runner, the engine runner and evaluate_onnx, each as onnxruntime does."""
    import json

    from voxquant.models.cards import resolve_model
    from voxquant.models.datasets import KWS12_LABELS
    from voxquant.models.train import evaluate_onnx
    from voxquant.runners import make_runner

    template = onnx.load(str(MODELS / REFERENCE["file"]))
    module = torch_module(template)
    with torch.no_grad():
        module.dense.bias.add_(torch.linspace(-1.0, 1.0, 12))
    path = write_onnx(template, module, tmp_path / "ft.onnx", doc="test")
    (tmp_path / "ft.json").write_text(json.dumps(
        {"classes": list(KWS12_LABELS), "frontend": "mlperf", "window_frames": 49}))
    card = resolve_model(path)
    feats = _features(6, 2)
    ref = _ort_probs(path, feats)
    for runtime in ("onnxruntime", "voxquant"):
        runner = make_runner(card, runtime)
        got = np.stack([runner.run(f, "fp32").copy() for f in feats])  # a view per call
        np.testing.assert_allclose(got, ref, atol=1e-4, err_msg=runtime)
    labels = [KWS12_LABELS[i] for i in ref.argmax(1)]
    acc, _, preds = evaluate_onnx(path, feats, labels, KWS12_LABELS)
    assert acc == 1.0 and list(preds) == list(ref.argmax(1))


@needs_reference
@pytest.mark.shared_data
def test_one_epoch_writes_the_reference_graph_and_a_card_that_reproduces(
        tmp_path: Path, shared_data: Path) -> None:
    import json

    from voxquant.models.finetune import finetune
    from voxquant.models.train import evaluate_onnx, validation_features, validation_set

    result = finetune(shared_data, tmp_path, epochs=1, seed=0, name="ft", log=lambda *_: None,
                      extra_unknown=64, threads=1)
    card = json.loads(result.card_path.read_text())
    written = onnx.load(str(result.onnx_path))
    reference = onnx.load(str(MODELS / REFERENCE["file"]))
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in reference.graph.node]
    assert card["frontend"]["name"] == "mlperf" and card["input"]["shape"] == [1, 49, 10, 1]
    assert "--epochs 1" in card["training"]["command"]
    assert "--set extra_unknown=64" in card["training"]["command"]
    feats, labels = validation_features(validation_set("kws12", shared_data), "kws12-val",
                                        "mlperf")
    acc, _, _ = evaluate_onnx(result.onnx_path, feats, labels, card["classes"])
    assert acc == card["validation"]["accuracy"] == result.accuracy
    assert acc > 0.5  # one epoch from the reference's weights: still a keyword model
