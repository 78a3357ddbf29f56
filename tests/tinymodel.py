"""A small random keyword model with a model card, made by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_tiny_model(folder: Path, labels: tuple[str, ...], seed: int = 0,
                     frontend: str = "kws") -> Path:
    """Write ``tiny.onnx`` (49x40 features of ``frontend`` -> len(labels) softmax) and
    ``tiny.json``."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    w = numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32) * 0.2, "w")
    b = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    fc = numpy_helper.from_array(rng.standard_normal((8, n)).astype(np.float32), "fc")
    fb = numpy_helper.from_array(np.zeros(n, np.float32), "fb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2, 2], pads=[2, 1, 0, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 49, 40])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, n])],
        [w, b, fc, fb],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, folder / "tiny.onnx")
    card = {"name": "tiny", "classes": list(labels), "frontend": frontend, "window_frames": 49,
            "macs": 1000}
    (folder / "tiny.json").write_text(json.dumps(card))
    return folder / "tiny.onnx"
