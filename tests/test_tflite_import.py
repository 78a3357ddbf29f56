"""TFLite import of the MLPerf Tiny models (skips without shared models) and error cases."""

from __future__ import annotations

import numpy as np
import pytest

from voxquant.errors import ModelImportError
from voxquant.models.graph import AVGPOOL, CONV, SOFTMAX
from voxquant.models.tflite_import import import_tflite
from voxquant.paths import shared_models_dir

MODELS = shared_models_dir(required=False)
KWS = MODELS / "mlperf_tiny_kws" if MODELS is not None else None
needs_kws = pytest.mark.skipif(KWS is None or not KWS.is_dir(),
                               reason="shared/models/mlperf_tiny_kws not available")


@needs_kws
@pytest.mark.parametrize("name", ["kws_ref_model.tflite", "kws_ref_model_float32.tflite"])
def test_mlperf_structure(name):
    g = import_tflite(KWS / name)
    kinds = [layer.kind for layer in g.layers]
    assert kinds == [CONV] * 9 + [AVGPOOL, CONV, SOFTMAX]
    assert g.input_shape == (49, 10, 1)
    first = g.layers[0]
    assert first.kernel == (10, 4) and first.stride == (2, 2)
    assert first.pads == (4, 5, 1, 1)  # SAME: top 4, bottom 5, left 1, right 1
    assert [layer.groups for layer in g.layers[1:9:2]] == [64] * 4  # depthwise
    assert g.layers[9].kernel == (25, 5)
    assert g.total_macs() == 2_656_768  # README
    n_params = sum(layer.weights.size + layer.bias.size for layer in g.layers
                   if layer.weights is not None)
    assert n_params == 22_604  # README: parameters with BatchNorm folded
    assert all(layer.act_min == 0.0 for layer in g.layers[:9])


@needs_kws
def test_int8_quantization_parameters():
    g = import_tflite(KWS / "kws_ref_model.tflite")
    assert g.is_int8
    s, z = g.input_quant
    assert z == 83 and s == pytest.approx(0.5847029089927673)
    scales = [layer.quant.output_scale for layer in g.layers[:9]]
    np.testing.assert_allclose(scales, [0.078725, 0.082815, 0.060026, 0.062760, 0.037402,
                                        0.045901, 0.032971, 0.046844, 0.080236], atol=1e-6)
    assert all(layer.quant.output_zero_point == -128 for layer in g.layers[:10])
    dense = g.layers[10].quant
    assert dense.output_zero_point == 14
    assert np.all(dense.weight_scales == np.float32(0.008385755121707916))
    conv = g.layers[0].quant
    assert conv.weight_scales.shape == (64,) and len(np.unique(conv.weight_scales)) > 1
    assert conv.bias_int32.dtype == np.int32
    assert g.layers[11].quant.output_scale == 1 / 256


@needs_kws
def test_hybrid_weights_are_dequantized():
    hybrid = import_tflite(KWS / "kws_ref_model_float32.tflite")
    assert not hybrid.is_int8
    for layer in hybrid.layers:
        if layer.weights is not None:
            assert layer.weights.dtype == np.float32 and layer.quant is None
    # same training run as the int8 model: weights agree to within int8 quantization error
    full = import_tflite(KWS / "kws_ref_model.tflite")
    w_h, w_i = hybrid.layers[2].weights, full.layers[2].weights
    assert np.abs(w_h - w_i).max() < 0.1 * np.abs(w_i).max()


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 3)
    with pytest.raises(ModelImportError) as exc:
        import_tflite(bad)
    assert str(bad) in str(exc.value)
    with pytest.raises(ModelImportError):
        import_tflite(tmp_path / "missing.tflite")


@needs_kws
def test_truncated_model_is_an_import_error(tmp_path):
    data = (KWS / "kws_ref_model.tflite").read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelImportError):
        import_tflite(cut)
