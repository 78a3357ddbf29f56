"""MLPerf Tiny KWS parity: fp32 vs the ONNX reference, int8 bit-exact vs TFLite, accuracy.

Skips when ``shared/models/mlperf_tiny_kws`` is absent.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from voxquant.engine import load
from voxquant.paths import shared_models_dir

MODELS = shared_models_dir(required=False)
KWS = MODELS / "mlperf_tiny_kws" if MODELS is not None else None
pytestmark = pytest.mark.skipif(KWS is None or not KWS.is_dir(),
                                reason="shared/models/mlperf_tiny_kws not available")


def _ref(name: str) -> np.ndarray:
    return np.load(KWS / "reference" / name)


def _as_q(probs: np.ndarray) -> np.ndarray:
    """Probabilities -> the int8 output of the TFLite model (scale 1/256, zero point -128)."""
    return np.clip(np.floor(probs * 256 + 0.5) - 128, -128, 127).astype(np.int8)


@pytest.fixture(scope="module")
def feats() -> np.ndarray:
    return _ref("features.npy")


@pytest.mark.parametrize("name", ["mlperf-kws", "kws_ref_model_float32.tflite"])
def test_fp32_matches_onnx_reference(feats, name):
    model = load(name if name.startswith("mlperf") else KWS / name)
    model.set_precision("fp32")
    out = np.array([model(f) for f in feats])
    ref = _ref("probs_float32_onnx.npy")
    assert np.abs(out - ref).max() < 1e-4
    assert np.array_equal(out.argmax(1), ref.argmax(1))


def test_int8_bit_exact_vs_tflite_reference_kernels():
    model = load("mlperf-kws-int8")
    xq = _ref("int8_input.npy")
    out = np.array([_as_q(model.run_quantized_input(x)) for x in xq])
    mismatches = int((out != _ref("int8_output_ref.npy")).sum())
    assert mismatches == 0, f"{mismatches} int8 output values differ from BUILTIN_REF"


def test_int8_float_input_uses_tflite_quantize_rule(feats):
    """Float features -> TFLite QUANTIZE (round half away, clamp) -> bit-exact output."""
    model = load("mlperf-kws-int8")
    out = np.array([_as_q(model(f)) for f in feats])
    assert int((out != _ref("int8_output_round_ref.npy")).sum()) == 0


def test_top1_on_reference_rows(feats):
    labels = _ref("labels_index.npy")
    fp = load("mlperf-kws")
    acc = {}
    for prec in ("fp32", "int8", "int16", "mixed"):
        fp.set_precision(prec)
        acc[prec] = float((np.array([fp(f) for f in feats]).argmax(1) == labels).mean())
    tfl = load("mlperf-kws-int8")
    acc["tflite-int8"] = float((np.array([tfl(f) for f in feats]).argmax(1) == labels).mean())
    assert acc["fp32"] == pytest.approx(271 / 300)  # README: ONNX gets 271/300
    assert acc["tflite-int8"] == pytest.approx(269 / 300)  # README: REF, round-rule input
    for prec in ("int8", "int16", "mixed"):  # dynamic per-window int8 within 0.5 points
        assert abs(acc[prec] - acc["fp32"]) <= 0.005 + 1e-9, acc


def _slice_rows():
    data = MODELS.parent / "data"
    rows = []
    with open(KWS / "reference" / "slice_partitions.tsv") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            if (data / r["path"]).is_file():
                rows.append((data / r["path"], r["kind"], int(r["offset_samples"]),
                             int(r["label_index"])))
    return rows


@pytest.mark.slow
def test_slice_accuracy_int8_vs_litert_and_fp32():
    """Whole shared slice through the project's MLPerf front end (about a minute)."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    from voxquant.stream.audio_io import load_audio
    from voxquant.stream.frontend import compute_features, get_frontend_config

    rows = _slice_rows()
    if len(rows) < 1000:
        pytest.skip("shared Speech Commands slice not available")
    cfg = get_frontend_config("mlperf")
    fp, dyn, tfl = load("mlperf-kws"), load("mlperf-kws"), load("mlperf-kws-int8")
    fp.set_precision("fp32")
    dyn.set_precision("int8")
    interp = litert.Interpreter(model_path=str(KWS / "kws_ref_model.tflite"), num_threads=1)
    interp.allocate_tensors()
    i_in, i_out = interp.get_input_details()[0], interp.get_output_details()[0]
    s, z = i_in["quantization"]
    hits = {"fp32": 0, "int8-dynamic": 0, "int8-tflite": 0, "litert-int8": 0}
    for path, kind, offset, label in rows:
        audio = load_audio(path, offset_samples=offset,
                           num_samples=16000 if kind == "silence_window" else None)
        f = compute_features(audio, cfg)
        hits["fp32"] += int(fp(f).argmax() == label)
        hits["int8-dynamic"] += int(dyn(f).argmax() == label)
        hits["int8-tflite"] += int(tfl(f).argmax() == label)
        v = f.reshape(1, 49, 10, 1) / s
        q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + z, -128, 127).astype(np.int8)
        interp.set_tensor(i_in["index"], q)
        interp.invoke()
        hits["litert-int8"] += int(interp.get_tensor(i_out["index"]).argmax() == label)
    acc = {k: v / len(rows) for k, v in hits.items()}
    print({k: round(100 * v, 2) for k, v in acc.items()}, len(rows))
    assert abs(acc["int8-tflite"] - acc["litert-int8"]) <= 0.003
    assert abs(acc["int8-dynamic"] - acc["fp32"]) <= 0.005
