"""ONNX import: every supported op against onnxruntime on small random models, plus errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from voxquant.engine import Model, load
from voxquant.errors import ConfigError, ModelImportError, UnsupportedOpError
from voxquant.models.graph import CONV
from voxquant.models.onnx_import import IMPORTERS, import_onnx

RNG = np.random.default_rng(0)
T, F = 12, 8


def _w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def build(tmp_path, nodes, inits: dict, out_shape, in_shape=(1, 1, T, F), name="m.onnx",
          in_dims=None):
    """Write a one-input, one-output ONNX model (opset 13) and return its path."""
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_dims or list(in_shape))
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [inp], [out],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def compare(path, in_shape=(1, 1, T, F), atol=1e-5, precisions=("fp32",)):
    """Engine output (HWC) vs onnxruntime (NCHW transposed to HWC)."""
    x = RNG.standard_normal(in_shape).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    if ref.ndim == 4:
        ref = ref.transpose(0, 2, 3, 1)
    model = load(path)
    for prec in precisions:
        model.set_precision(prec)
        got = model(x)
        tol = {"fp32": atol, "int16": 2e-3, "int8": 0.15}[prec]
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(got, ref.reshape(-1), atol=tol * scale, rtol=0,
                                   err_msg=f"{path.name} at {prec}")
    return model


def conv_node(name, inp, out, cout, cin, k=(3, 3), **attrs):
    return (helper.make_node("Conv", [inp, f"{name}_w", f"{name}_b"], [out], name=name,
                             kernel_shape=list(k), **attrs),
            {f"{name}_w": _w(cout, cin // attrs.get("group", 1), *k),
             f"{name}_b": _w(cout, scale=0.1)})


@pytest.mark.parametrize("attrs", [
    dict(pads=[1, 1, 1, 1]),
    dict(strides=[2, 2], pads=[4, 1, 5, 1]),
    dict(auto_pad="SAME_UPPER", strides=[2, 1]),
    dict(dilations=[2, 1], pads=[2, 0, 0, 0]),
    dict(),
])
def test_conv_variants(tmp_path, attrs):
    n, w = conv_node("c", "x", "y", 6, 1, k=(3, 3) if "dilations" not in attrs else (2, 3),
                     **attrs)
    compare(build(tmp_path, [n], w, None), precisions=("fp32", "int16", "int8"))


def test_grouped_and_depthwise_conv_bn_relu_clip(tmp_path):
    n1, w1 = conv_node("c1", "x", "a", 8, 1, pads=[1, 1, 1, 1])
    n2, w2 = conv_node("c2", "a", "b", 8, 8, group=8, pads=[1, 1, 1, 1])  # depthwise
    n3, w3 = conv_node("c3", "b1", "c", 8, 8, k=(1, 3), group=2, pads=[0, 1, 0, 1])  # grouped
    bn = {"g": np.abs(_w(8)) + 0.5, "be": _w(8), "mu": _w(8), "var": np.abs(_w(8)) + 0.1}
    nodes = [
        n1,
        helper.make_node("Relu", ["a"], ["a1"]),
        n2,
        helper.make_node("BatchNormalization", ["b", "g", "be", "mu", "var"], ["b0"],
                         epsilon=1e-3),
        helper.make_node("Clip", ["b0", "lo", "hi"], ["b1"]),
        n3,
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    nodes[2].input[0] = "a1"
    inits = {**w1, **w2, **w3, **bn, "lo": np.array(0.0, np.float32),
             "hi": np.array(6.0, np.float32)}
    model = compare(build(tmp_path, nodes, inits, None), precisions=("fp32", "int16", "int8"))
    kinds = [layer.kind for layer in model.graph.layers]
    assert kinds == [CONV, CONV, CONV]  # BN, Relu and Clip were folded
    assert model.graph.layers[1].groups == 8 and model.graph.layers[2].groups == 2
    assert model.graph.layers[1].act_max == 6.0


def test_pad_folds_into_conv(tmp_path):
    n, w = conv_node("c", "xp", "y", 4, 1)
    nodes = [helper.make_node("Pad", ["x", "pads"], ["xp"], mode="constant"), n]
    inits = {**w, "pads": np.array([0, 0, 2, 1, 0, 0, 0, 1], np.int64)}
    model = compare(build(tmp_path, nodes, inits, None))
    assert model.graph.layers[0].pads == (2, 0, 1, 1)


@pytest.mark.parametrize("op,attrs", [
    ("AveragePool", dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 0])),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[1, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])),
    ("GlobalAveragePool", {}),
    ("ReduceMean", dict(axes=[2], keepdims=1)),
    ("ReduceMean", dict(axes=[2, 3], keepdims=1)),
])
def test_pools(tmp_path, op, attrs):
    n, w = conv_node("c", "x", "a", 5, 1, pads=[1, 1, 1, 1])
    nodes = [n, helper.make_node(op, ["a"], ["y"], **attrs)]
    compare(build(tmp_path, nodes, w, None), precisions=("fp32", "int16", "int8"))


@pytest.mark.parametrize("head", ["gemm", "matmul_add", "flatten_perm"])
def test_dense_heads_and_softmax(tmp_path, head):
    n, w = conv_node("c", "x", "a", 4, 1, strides=[3, 2], pads=[1, 1, 1, 1])
    nodes = [n, helper.make_node("Relu", ["a"], ["a1"])]
    if head == "flatten_perm":
        # Flatten of a 4 x H x W map: the engine keeps HWC storage and permutes the weights
        nodes.append(helper.make_node("Flatten", ["a1"], ["f"], axis=1))
        k = 4 * 4 * 4
    else:
        nodes += [helper.make_node("GlobalAveragePool", ["a1"], ["p"]),
                  helper.make_node("Reshape", ["p", "shape"], ["f"])]
        w["shape"] = np.array([1, -1], np.int64)
        k = 4
    if head == "gemm":
        nodes.append(helper.make_node("Gemm", ["f", "gw", "gb"], ["l"], transB=1, alpha=0.5))
        w.update(gw=_w(7, k), gb=_w(7))
    else:
        nodes += [helper.make_node("MatMul", ["f", "mw"], ["l0"]),
                  helper.make_node("Add", ["l0", "mb"], ["l"])]
        w.update(mw=_w(k, 7), mb=_w(7))
    nodes.append(helper.make_node("Softmax", ["l"], ["y"], axis=-1))
    model = compare(build(tmp_path, nodes, w, None), precisions=("fp32", "int16", "int8"))
    assert model.graph.layers[-1].kind == "softmax"


def test_residual_add_and_squeeze(tmp_path):
    n1, w1 = conv_node("c1", "x", "a", 4, 1, pads=[1, 1, 1, 1])
    n2, w2 = conv_node("c2", "a", "b", 4, 4, pads=[1, 1, 1, 1])
    nodes = [n1, n2, helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Squeeze", ["p", "axes"], ["y"])]
    compare(build(tmp_path, nodes, {**w1, **w2, "axes": np.array([2, 3], np.int64)}, None),
            precisions=("fp32", "int16", "int8"))


def test_nhwc_input_transpose_is_layout_only(tmp_path):
    n, w = conv_node("c", "xt", "y", 3, 1, pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]), n]
    compare(build(tmp_path, nodes, w, None, in_shape=(1, T, F, 1)), in_shape=(1, T, F, 1))


def test_registry_covers_issue_ops():
    for op in ("Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "Add",
               "AveragePool", "GlobalAveragePool", "MaxPool", "Flatten", "Reshape", "Squeeze",
               "Softmax", "Pad", "Transpose", "ReduceMean"):
        assert op in IMPORTERS


# ----------------------------------------------------------------------------- errors


def test_unsupported_op_names_node_and_file(tmp_path):
    n, w = conv_node("c", "x", "a", 3, 1)
    nodes = [n, helper.make_node("Sigmoid", ["a"], ["y"], name="my_sigmoid")]
    path = build(tmp_path, nodes, w, None)
    with pytest.raises(UnsupportedOpError) as exc:
        import_onnx(path)
    assert exc.value.op == "Sigmoid" and exc.value.node == "my_sigmoid"
    assert str(path) in str(exc.value)


def test_malformed_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf at all" * 7)
    with pytest.raises(ModelImportError) as exc:
        import_onnx(bad)
    assert str(bad) in str(exc.value)


def test_dynamic_time_axis_cannot_be_planned(tmp_path):
    n, w = conv_node("c", "x", "y", 3, 1)
    path = build(tmp_path, [n], w, None, in_dims=[1, 1, "time", F])
    with pytest.raises(ModelImportError, match="dynamic"):
        import_onnx(path)


def test_data_moving_transpose_is_rejected(tmp_path):
    n, w = conv_node("c", "x", "a", 3, 1)
    nodes = [n, helper.make_node("Transpose", ["a"], ["y"], perm=[0, 1, 3, 2], name="tr")]
    with pytest.raises(ModelImportError, match="tr"):
        import_onnx(build(tmp_path, nodes, w, None))


def test_unfusable_batchnorm_is_rejected(tmp_path):
    bn = {"g": np.ones(1, np.float32), "be": np.zeros(1, np.float32),
          "mu": np.zeros(1, np.float32), "var": np.ones(1, np.float32)}
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "be", "mu", "var"], ["y"],
                              name="bn0")]
    with pytest.raises(ModelImportError, match="bn0"):
        import_onnx(build(tmp_path, nodes, bn, None))


def test_unknown_names_and_formats(tmp_path):
    with pytest.raises(ConfigError):
        load("no-such-model")
    other = tmp_path / "model.pb"
    other.write_bytes(b"x")
    with pytest.raises(ConfigError):
        load(other)


def test_wrong_feature_size_is_config_error(tmp_path):
    n, w = conv_node("c", "x", "y", 3, 1)
    model = load(build(tmp_path, [n], w, None))
    assert isinstance(model, Model)
    with pytest.raises(ConfigError):
        model(np.zeros((T + 1, F), np.float32))
