"""Small streaming keyword-spotting networks (torch) and their ONNX export.

The family here is a depthwise-separable temporal convolution network
("TC-DS"), chosen for streaming:

* the first convolution spans **all** feature bins (kernel ``first_kernel x
  n_features``), so after it the frequency axis has width 1 and every later
  layer is a 1-D convolution along time;
* every convolution is **valid along time** (no padding at all): output frame
  ``t`` depends only on input frames ``t - receptive_field + 1 .. t``. The
  network is causal, and the newest output row of every layer is a function of
  the newest input rows only, so an incremental (one frame per hop) execution
  reproduces the window execution exactly; there is no zero padding whose
  value would differ between the two modes;
* no stride along time, so every hop produces exactly one new row per layer;
* a global average over the remaining frames, a fully connected layer and a
  softmax.

The exported ONNX graph uses only ``Conv`` (batch norm and the input
normalisation folded in, ``pads`` all zero), ``Relu``, ``GlobalAveragePool``,
``Flatten``, ``Gemm`` and ``Softmax``; opset 13, static shapes, batch 1,
input ``[1, 1, T, F]`` (time frames x feature bins).

torch is imported only inside functions (it is the optional ``train`` extra).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TCNConfig",
    "build_model",
    "folded_layers",
    "count_macs_params",
    "export_onnx",
]


@dataclass(frozen=True)
class TCNConfig:
    """Shape of a TC-DS network.

    Attributes
    ----------
    n_frames, n_features : int
        Input window: time frames x feature bins.
    n_classes : int
        Outputs of the classifier.
    channels : int
        Channels of every temporal layer.
    first_kernel : int
        Time extent of the first (full-frequency) convolution.
    kernel : int
        Time extent of each depthwise convolution.
    n_blocks : int
        Depthwise-separable blocks (depthwise k x 1, then pointwise 1 x 1).
    dropout : float
        Dropout before the classifier (training only).
    """

    n_frames: int = 49
    n_features: int = 40
    n_classes: int = 12
    channels: int = 64
    first_kernel: int = 3
    kernel: int = 7
    n_blocks: int = 5
    dropout: float = 0.1

    @property
    def receptive_field_frames(self) -> int:
        return self.first_kernel + self.n_blocks * (self.kernel - 1)

    @property
    def output_frames(self) -> int:
        """Frames left for the global average after the valid convolutions."""
        return self.n_frames - self.receptive_field_frames + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_model(config: TCNConfig):
    """Return a torch ``nn.Module`` for ``config`` (input [B, 1, T, F], output logits).

    The module normalises its input per feature bin with the buffers
    ``feat_mean`` / ``feat_std`` (set them from training features); the export
    folds this normalisation into the first convolution, exactly, because
    that convolution has no padding.
    """
    import torch
    from torch import nn

    if config.output_frames < 1:
        raise ValueError(
            f"receptive field {config.receptive_field_frames} frames exceeds "
            f"the {config.n_frames}-frame window"
        )
    c = config.channels

    class TCN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.register_buffer("feat_mean", torch.zeros(config.n_features))
            self.register_buffer("feat_std", torch.ones(config.n_features))
            self.conv0 = nn.Conv2d(1, c, (config.first_kernel, config.n_features), bias=False)
            self.bn0 = nn.BatchNorm2d(c)
            self.dw = nn.ModuleList(
                nn.Conv2d(c, c, (config.kernel, 1), groups=c, bias=False)
                for _ in range(config.n_blocks)
            )
            self.bn_dw = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(config.n_blocks))
            self.pw = nn.ModuleList(
                nn.Conv2d(c, c, 1, bias=False) for _ in range(config.n_blocks)
            )
            self.bn_pw = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(config.n_blocks))
            self.drop = nn.Dropout(config.dropout)
            self.fc = nn.Linear(c, config.n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x - self.feat_mean) / self.feat_std
            x = torch.relu(self.bn0(self.conv0(x)))
            for dw, bdw, pw, bpw in zip(self.dw, self.bn_dw, self.pw, self.bn_pw):
                x = torch.relu(bdw(dw(x)))
                x = torch.relu(bpw(pw(x)))
            x = x.mean(dim=(2, 3))
            return self.fc(self.drop(x))

    return TCN()


def _fold_bn(weight: np.ndarray, bn) -> tuple[np.ndarray, np.ndarray]:
    """Fold an eval-mode BatchNorm into the preceding bias-free convolution."""
    gamma = bn.weight.detach().double().numpy()
    beta = bn.bias.detach().double().numpy()
    mean = bn.running_mean.detach().double().numpy()
    var = bn.running_var.detach().double().numpy()
    scale = gamma / np.sqrt(var + bn.eps)
    w = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    b = beta - mean * scale
    return w, b


def folded_layers(model) -> list[dict[str, Any]]:
    """The network as inference layers with batch norm and normalisation folded.

    Returns a list of dicts ``{"op": "conv"|"fc", "weight", "bias", "group",
    "relu"}`` with float64 numpy arrays; this is what the ONNX export writes and
    what quantization-aware fine-tuning starts from.
    """
    cfg: TCNConfig = model.config
    layers: list[dict[str, Any]] = []
    w0 = model.conv0.weight.detach().double().numpy()  # [C,1,k,F]
    mean = model.feat_mean.detach().double().numpy()
    std = model.feat_std.detach().double().numpy()
    w0n = w0 / std.reshape(1, 1, 1, -1)
    b0n = -(w0n * mean.reshape(1, 1, 1, -1)).sum(axis=(1, 2, 3))
    w, b = _fold_bn(w0n, model.bn0)
    b = b + _bn_scale(model.bn0) * b0n  # the normalisation's offset, through the BN scale
    layers.append({"op": "conv", "weight": w, "bias": b, "group": 1, "relu": True})
    for i in range(cfg.n_blocks):
        w, b = _fold_bn(model.dw[i].weight.detach().double().numpy(), model.bn_dw[i])
        layers.append({"op": "conv", "weight": w, "bias": b, "group": cfg.channels, "relu": True})
        w, b = _fold_bn(model.pw[i].weight.detach().double().numpy(), model.bn_pw[i])
        layers.append({"op": "conv", "weight": w, "bias": b, "group": 1, "relu": True})
    layers.append(
        {
            "op": "fc",
            "weight": model.fc.weight.detach().double().numpy(),
            "bias": model.fc.bias.detach().double().numpy(),
            "group": 1,
            "relu": False,
        }
    )
    return layers


def _bn_scale(bn) -> np.ndarray:
    gamma = bn.weight.detach().double().numpy()
    var = bn.running_var.detach().double().numpy()
    return gamma / np.sqrt(var + bn.eps)


def count_macs_params(config: TCNConfig) -> tuple[int, int]:
    """Multiply-accumulates per window and parameters of the folded network."""
    c, f = config.channels, config.n_features
    t = config.n_frames - config.first_kernel + 1
    macs = t * c * config.first_kernel * f
    params = c * config.first_kernel * f + c
    for _ in range(config.n_blocks):
        t -= config.kernel - 1
        macs += t * c * config.kernel + t * c * c
        params += c * config.kernel + c + c * c + c
    macs += c * config.n_classes
    params += c * config.n_classes + config.n_classes
    return int(macs), int(params)


def export_onnx(
    layers: list[dict[str, Any]],
    config: TCNConfig,
    path: str | Path,
    *,
    input_name: str = "features",
    output_name: str = "probs",
    doc: str = "",
) -> Path:
    """Write folded ``layers`` as an opset-13 ONNX graph, batch 1, static shapes.

    Nodes: Conv (+Relu) per layer, GlobalAveragePool, Flatten, Gemm, Softmax.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    inits = []
    x = input_name
    n_conv = 0
    for layer in layers:
        if layer["op"] != "conv":
            continue
        w = np.asarray(layer["weight"], dtype=np.float32)
        b = np.asarray(layer["bias"], dtype=np.float32)
        name = f"conv{n_conv}"
        inits += [numpy_helper.from_array(w, f"{name}.weight"),
                  numpy_helper.from_array(b, f"{name}.bias")]
        y = f"{name}.out"
        nodes.append(
            helper.make_node(
                "Conv", [x, f"{name}.weight", f"{name}.bias"], [y], name=name,
                kernel_shape=[int(w.shape[2]), int(w.shape[3])], pads=[0, 0, 0, 0],
                strides=[1, 1], dilations=[1, 1], group=int(layer["group"]),
            )
        )
        x = y
        if layer["relu"]:
            nodes.append(helper.make_node("Relu", [x], [f"{name}.relu"], name=f"{name}_relu"))
            x = f"{name}.relu"
        n_conv += 1
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1))
    fc = layers[-1]
    assert fc["op"] == "fc"
    inits += [numpy_helper.from_array(np.asarray(fc["weight"], np.float32), "fc.weight"),
              numpy_helper.from_array(np.asarray(fc["bias"], np.float32), "fc.bias")]
    nodes.append(
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)
    )
    nodes.append(helper.make_node("Softmax", ["logits"], [output_name], name="softmax", axis=1))
    graph = helper.make_graph(
        nodes,
        "voxquant_tcn",
        [helper.make_tensor_value_info(
            input_name, TensorProto.FLOAT, [1, 1, config.n_frames, config.n_features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, config.n_classes])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="voxquant.models.train",
        doc_string=doc,
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
